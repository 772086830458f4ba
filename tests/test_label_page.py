"""The labelling page in headless Chromium: buttons and keys, the JSONL written, kill + relaunch, two annotators."""
import importlib.util
import json
import multiprocessing
import os
import signal
import urllib.error
import urllib.request

import pytest

from drward.annotate.demo import make_demo_pairs
from drward.annotate.label_page import build_page, launch_page
from drward.annotate.label_store import LabelStore, label_of_choice
from drward.annotate.pairs import read_pairs

from annotate_helpers import solid_rgb, write_rgb_png
from browser_helpers import free_port, wait_for_http

TOOL = os.path.join(os.path.dirname(__file__), os.pardir, 'tools', 'label_pairs.py')


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    """Three faces × four degraded 64² copies: 18 unlabelled pairs (the annotate demo task, small)."""
    folder = tmp_path_factory.mktemp('label_task')
    return make_demo_pairs(str(folder), faces=3, size=64, variants=4, human_fraction=0.0)


def _serve(pairs, out, **store_options):
    store = LabelStore(pairs, str(out), **store_options)
    page = build_page(store, 'ana')
    port = free_port()
    launch_page(page, store, port=port, prevent_thread_lock=True, quiet=True)
    url = f'http://127.0.0.1:{port}/'
    wait_for_http(url)
    return store, page, url


def _open(browser_or_context, url):
    page = browser_or_context.new_page()
    page.goto(url)
    page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('pair #')")
    return page


def _shown(page) -> int:
    return int(page.inner_text('#status').split('pair #')[1].split()[0])


def _run_tool(argv) -> None:
    spec = importlib.util.spec_from_file_location('label_pairs_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.devnull, 'w') as quiet:
        os.dup2(quiet.fileno(), 1)
        os.dup2(quiet.fileno(), 2)
        module.main(argv)


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _act(page, do, out, store=None, annotator='ana') -> None:
    """Do something on the page; wait until its decision is on disk and the page shows the next pair."""
    before, shown_before = _lines(out), _shown(page)
    do()
    for _ in range(200):
        if _lines(out) > before:
            break
        page.wait_for_timeout(50)
    assert _lines(out) == before + 1, 'the action wrote no line'
    if store is None:  # labels only: the next pair has another number
        page.wait_for_function(f"() => {{ const m = document.querySelector('#status').innerText.match(/pair #(\\d+)/);"
                               f" return m && Number(m[1]) !== {shown_before}; }}")
    else:
        shown = store.current(annotator).index
        page.wait_for_function(f"() => / #{shown}( |$)/.test(' ' + document.querySelector('#status').innerText"
                               f".replace('pair #', '#'))")


def _status_code(url) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_each_button_and_key_writes_exactly_its_decision_and_only_task_images_are_served(browser, task, tmp_path):
    out = tmp_path / 'human.jsonl'
    store, app, url = _serve(task.pairs, out, order='file')
    try:
        page = _open(browser, url)
        buttons = [('A is better', 'label', 'left'), ('B is better', 'label', 'right'), ('Tie', 'label', 'tie'),
                   ('Skip', 'skip', None), ('Undo', 'undo', None)]
        keys = [('ArrowLeft', 'label', 'left'), ('ArrowRight', 'label', 'right'), ('ArrowDown', 'label', 'tie'),
                (' ', 'skip', None), ('Backspace', 'undo', None)]
        expected = []
        for name, event, choice in buttons:
            expected.append((_shown(page), event, choice))
            _act(page, lambda: page.get_by_role('button', name=name, exact=True).click(), out, store)
        page.locator('body').click(position={'x': 5, 'y': 5})  # focus off the buttons and the text box
        for key, event, choice in keys:
            expected.append((_shown(page), event, choice))
            _act(page, lambda: page.keyboard.press('Space' if key == ' ' else key), out, store)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r['event'] for r in records] == [event for _, event, _ in expected]
        index = {(p.image_a, p.image_b): i for i, p in enumerate(task.pairs)}
        for record, (shown, event, choice) in zip(records, expected):
            pair = (str(out.parent / record['image_a']) if not os.path.isabs(record['image_a']) else record['image_a'],
                    record['image_b'] if os.path.isabs(record['image_b']) else str(out.parent / record['image_b']))
            if event != 'undo':
                assert index[tuple(os.path.normpath(p) for p in pair)] == shown
            if event == 'label':
                assert record['label'] == label_of_choice(choice, record['shown_left'])
                assert record['source'] == 'human' and record['annotator'] == 'ana'
        assert len(read_pairs(out)) == 6  # the two undos cancelled the two skips: six labels in effect
        page.wait_for_function("() => document.querySelector('#progress').innerText.startsWith('ana: 6 labelled / 18')")
        inside = task.pairs[0].image_a
        outside = write_rgb_png(str(tmp_path / 'secret' / 'private.png'), solid_rgb(8, (1, 2, 3)))
        assert _status_code(f'{url}gradio_api/file={inside}') == 200
        assert _status_code(f'{url}gradio_api/file={outside}') in (403, 404)
        assert _status_code(f'{url}gradio_api/file={out}') in (403, 404)  # the log itself is not served
        page.close()
    finally:
        app.close()


def test_after_a_kill_the_relaunched_tool_shows_a_pair_never_labelled(browser, task, tmp_path):
    out = tmp_path / 'human.jsonl'
    port = free_port()
    argv = ['--pairs', task.pairs_file, '--out', str(out), '--port', str(port), '--order', 'file',
            '--overlap', '0', '--annotator', 'ana']

    def launch():
        # the tool's main() in a forked process: a real process to SIGKILL, without paying a fresh Python's
        # 20 s of importing torch, BasicSR and Gradio again
        process = multiprocessing.get_context('fork').Process(target=_run_tool, args=(argv,), daemon=True)
        process.start()
        wait_for_http(f'http://127.0.0.1:{port}/')
        return process, _open(browser, f'http://127.0.0.1:{port}/')

    process, page = launch()
    try:
        for key in ('ArrowLeft', 'ArrowRight'):
            _act(page, lambda: page.keyboard.press(key), out)
        page.wait_for_function("() => document.querySelector('#progress').innerText.startsWith('ana: 2 labelled')")
        on_screen_at_kill = _shown(page)
        os.kill(process.pid, signal.SIGKILL)  # no chance to write anything more
        process.join(timeout=10)
        page.close()
        labelled = {(p.image_a, p.image_b) for p in read_pairs(out)}
        assert len(labelled) == 2
        process, page = launch()
        assert _shown(page) == on_screen_at_kill == 2  # file order: the first pair with no decision
        _act(page, lambda: page.keyboard.press('ArrowDown'), out)
        rows = read_pairs(out)
        assert len(rows) == 3 and (rows[2].image_a, rows[2].image_b) not in labelled and rows[2].label == 0.5
        page.close()
    finally:
        process.kill()
        process.join(timeout=10)


def test_two_annotators_in_two_browser_contexts_share_only_overlap_pairs(browser, task, tmp_path):
    out = tmp_path / 'human.jsonl'
    store, app, url = _serve(task.pairs, out, order='file', overlap=0.5)
    contexts = [browser.new_context(), browser.new_context()]
    try:
        pages = {name: _open(context, f'{url}?annotator={name}') for name, context in zip(('ana', 'bo'), contexts)}
        labelled = {'ana': [], 'bo': []}
        for _ in range(5):
            for name, page in pages.items():
                shown = {who: _shown(p) for who, p in pages.items()}
                assert shown['ana'] != shown['bo'] or shown['ana'] in store.overlap
                labelled[name].append(shown[name])
                _act(page, lambda: page.keyboard.press('ArrowLeft'), out, store, name)
        shared = set(labelled['ana']) & set(labelled['bo'])
        assert shared and shared <= store.overlap
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r['annotator'] for r in records) == ['ana'] * 5 + ['bo'] * 5
        assert pages['bo'].inner_text('#progress').startswith('bo: 5 labelled / 18')
    finally:
        for context in contexts:
            context.close()
        app.close()


def test_renaming_on_the_page_releases_the_old_names_pair(browser, task, tmp_path):
    store, app, url = _serve(task.pairs, tmp_path / 'human.jsonl', order='file')
    try:
        page = _open(browser, url)
        assert store._shown['ana'].index == _shown(page) == 0
        page.get_by_label('Annotator').fill('carla')
        page.get_by_label('Annotator').press('Enter')
        page.wait_for_function("() => document.querySelector('#progress').innerText.startsWith('carla: 0 labelled')")
        assert 'ana' not in store._shown and store._shown['carla'].index == 0  # pair 0 is free again: carla's
        page.close()
    finally:
        app.close()
