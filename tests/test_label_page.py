"""The labelling page in headless Chromium: buttons and keys, the JSONL written, kill + relaunch, two annotators."""
import importlib.util
import json
import multiprocessing
import os
import signal
import urllib.error
import urllib.request

import pytest
from annotate_helpers import solid_rgb, write_rgb_png
from browser_helpers import free_port, wait_for_http

from drward.annotate.demo import make_demo_pairs
from drward.annotate.label_page import build_page, launch_page
from drward.annotate.label_store import LabelStore, label_of_choice
from drward.data.pairs_file import read_pairs

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


# -- several people at once (issue: acknowledged labels lost or filed under the server's default name) -------------
TALLY = r"/This tab: (\d+) recorded · (\d+) not recorded/"


def _tally(page) -> tuple:
    """``(recorded, not recorded)`` the page shows for its tab (0, 0 before the first answer)."""
    text = page.inner_text('#tally')
    if 'This tab' not in text:
        return 0, 0
    recorded, rest = text.split('This tab: ')[1].split(' recorded · ')
    return int(recorded), int(rest.split(' not recorded')[0])


def _open_as(context, url, name):
    """A tab whose person types ``name`` into Annotator and presses Enter as soon as the page is there (before
    its first answer, the moment a late load answer used to overwrite the name)."""
    page = context.new_page()
    page.goto(url)
    page.get_by_role('button', name='A is better').wait_for()  # the page is there; its first answer is not yet
    box = page.get_by_label('Annotator')
    box.fill(name)
    box.press('Enter')
    page.wait_for_function(f"() => (document.querySelector('#progress')?.innerText || '').startsWith({name!r} + ':')")
    page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('pair #')")
    return page


def _logged_labels(out):
    from drward.annotate.label_log import read_label_log
    decisions, malformed = read_label_log(str(out))
    assert malformed == []
    return [d for d in decisions if d.event == 'label']


def _p95(values) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def test_four_annotators_at_once_every_acknowledged_label_is_logged_under_its_own_name(browser, task, tmp_path):
    import time
    out = tmp_path / 'human.jsonl'
    store, app, url = _serve(task.pairs, out, order='random', overlap=0.0)  # the page's default name is 'ana'
    names = ['load0', 'load1', 'load2', 'load3']
    contexts = [browser.new_context() for _ in names]
    try:
        pages = {name: _open_as(context, url, name) for name, context in zip(names, contexts)}
        latencies, acknowledged = [], {name: [] for name in names}
        for _ in range(3):  # each round: all four click, then each waits for its answer
            clicked = {}
            for name, page in pages.items():
                acknowledged[name].append(_shown(page))
                page.get_by_role('button', name='A is better', exact=True).click()
                clicked[name] = time.monotonic()
            while clicked:
                for name in list(clicked):
                    if _tally(pages[name])[0] == len(acknowledged[name]):
                        latencies.append(time.monotonic() - clicked.pop(name))
                pages[names[0]].wait_for_timeout(20)
        labels = _logged_labels(out)
        for name, page in pages.items():
            assert _tally(page) == (3, 0)
            mine = [d for d in labels if d.annotator == name]
            assert len(mine) == 3, f'{name}: 3 acknowledged, {len(mine)} logged'
        assert {d.annotator for d in labels} == set(names)  # none under the default 'ana' or another tab's name
        keys = [d.key for d in labels]
        assert len(keys) == len(set(keys)) == 12  # no duplicates; no pair labelled twice (no overlap here)
        logged_index = {name: sorted(store._index[tuple(os.path.normpath(str(out.parent / p)) for p in d.key)]
                                     for d in labels if d.annotator == name) for name in names}
        assert logged_index == {name: sorted(shown) for name, shown in acknowledged.items()}
        print(f'\n4 annotators x 3 labels: click -> answer p50 {sorted(latencies)[len(latencies) // 2]:.2f} s, '
              f'p95 {_p95(latencies):.2f} s')
    finally:
        for context in contexts:
            context.close()
        app.close()


def test_quick_clicks_every_acknowledged_decision_is_logged_and_the_rest_say_not_recorded(browser, task, tmp_path):
    out = tmp_path / 'human.jsonl'
    store, app, url = _serve(task.pairs, out, order='random', overlap=0.0)
    names = ['fast0', 'fast1', 'fast2', 'fast3']
    contexts = [browser.new_context() for _ in names]
    try:
        pages = {name: _open_as(context, url, name) for name, context in zip(names, contexts)}
        for _ in range(4):  # no waiting for answers: double clicks and clicks on a pair about to change
            for page in pages.values():
                page.get_by_role('button', name='A is better', exact=True).click()
                page.wait_for_timeout(60)
        for page in pages.values():  # every click is answered, one way or the other
            page.wait_for_function(f"() => {{ const m = document.querySelector('#tally').innerText.match({TALLY});"
                                   " return m && Number(m[1]) + Number(m[2]) === 4; }")
        tallies = {name: _tally(page) for name, page in pages.items()}
        texts = {name: page.inner_text('#tally') for name, page in pages.items()}
        # the last one, closed right after its click: what it acknowledged before closing is logged all the same
        pages['fast0'].get_by_role('button', name='B is better', exact=True).click()
        contexts[0].close()
        app.close()  # nothing more can be written
        labels = _logged_labels(out)
        for name, page_tally in tallies.items():
            recorded, refused = page_tally
            mine = [d for d in labels if d.annotator == name]
            expected = recorded + (name == 'fast0')  # the last click may or may not have landed
            assert recorded <= len(mine) <= expected, f'{name}: page says {page_tally}, log holds {len(mine)}'
            assert texts[name].count('✗ **not recorded**'.replace('**', '')) == min(refused, 4)  # each one shown
        keys = [d.key for d in labels]
        assert len(keys) == len(set(keys))
        assert {d.annotator for d in labels} <= set(names)
    finally:
        for context in contexts[1:]:
            context.close()
        app.close()


def test_a_click_without_a_name_or_on_a_stale_pair_is_answered_not_recorded_and_writes_nothing(task, tmp_path):
    """Over the page's API (gradio_client, no browser): the same handlers the buttons call."""
    from gradio_client import Client
    out = tmp_path / 'human.jsonl'
    store = LabelStore(task.pairs, str(out), order='file')
    app = build_page(store, 'seed', require_name=True)
    port = free_port()
    launch_page(app, store, port=port, prevent_thread_lock=True, quiet=True)
    try:
        wait_for_http(f'http://127.0.0.1:{port}/')
        client = Client(f'http://127.0.0.1:{port}/', download_files=False, verbose=False)
        status, outcome, tally = -3, -2, -1
        answer = client.predict('', '0', api_name='/left')
        assert answer[outcome].startswith('✗ Not recorded: type your name') and not out.exists()
        shown = client.predict('ana', api_name='/show')
        token = shown[status].split('pair #')[1].split()[0]
        answer = client.predict('ana', str(int(token) + 1), api_name='/right')  # a pair not on ana's screen
        assert answer[outcome].startswith(f'✗ Not recorded: that click was for pair #{int(token) + 1}')
        assert not out.exists() and f'pair #{token}' in answer[status]  # the pair stays
        answer = client.predict('ana', token, api_name='/tie')
        assert answer[outcome].startswith(f'✓ Recorded: pair #{token} → Tie (as ana)')
        again = client.predict('ana', token, api_name='/tie')  # the same click once more: a double click
        assert again[outcome].startswith('✗ Not recorded') and 'This tab: **1 recorded** · 3 not recorded' in \
            again[tally]
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r['annotator'], r['event'], r['label']) for r in records] == [('ana', 'label', 0.5)]
    finally:
        app.close()
