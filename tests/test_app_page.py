"""tools/app.py in a real browser: upload the demo photo, press Restore, get before/after images; a text file and a
photo without a face give a message, and the next restore still works. Tiny random restorer at 64² faces and 2 DDIM
steps to stay fast."""
import importlib.util
import os.path as osp

from browser_helpers import served

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
spec = importlib.util.spec_from_file_location('app_tool', osp.join(ROOT, 'tools', 'app.py'))
app_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app_tool)

MESSAGE = "() => document.querySelector('textarea') && document.querySelector('textarea').value"


def message_matches(page, js_test: str) -> None:
    page.wait_for_function(f"() => {{ const t = ({MESSAGE})(); return !!t && ({js_test}); }}", timeout=60_000)


def test_photo_restored_in_the_browser_and_a_text_file_or_faceless_photo_gives_a_message(
        browser, tmp_path, monkeypatch):
    from drward.inference.demo_inputs import write_demo_inputs
    photo, _ = write_demo_inputs(str(tmp_path / 'demo'), aligned_size=64)
    text_file = tmp_path / 'notes.txt'
    text_file.write_text('not a photo')
    import numpy as np

    from drward.inference.photos import write_rgb
    blank = str(tmp_path / 'blank.png')
    write_rgb(blank, np.full((96, 96, 3), 128, np.uint8))  # no face in it
    monkeypatch.chdir(ROOT)  # build() moves to the repo root, as the tool does
    demo = app_tool.build(app_tool.parse_args(['--tiny', '--face-size', '64', '--steps', '2', '--device', 'cpu']))
    with served(demo) as url:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text('at most 20 MB').first.wait_for()  # the limits are stated on the page
        restore = page.get_by_role('button', name='Restore', exact=True)
        upload = page.locator('input[type=file]').first

        upload.set_input_files(photo)
        restore.click()
        message_matches(page, "t.startsWith('Restored 1 of 1')")
        page.wait_for_function("() => document.querySelectorAll('img[src*=\"astronaut\"]').length >= 2")

        page.get_by_label('Clear').first.click()
        upload.set_input_files([str(text_file), blank])
        restore.click()
        message_matches(page, "t.includes('notes.txt: not an image') && t.includes('blank: no face found')")

        page.get_by_label('Clear').first.click()
        upload.set_input_files(photo)
        restore.click()
        message_matches(page, "t.startsWith('Restored 1 of 1') && !t.includes('notes.txt')")
        page.close()


def test_uploads_over_the_limits_are_refused_or_shrunk_with_a_message(tmp_path):
    import numpy as np

    from drward.inference.page import PageLimits, prepare_uploads
    from drward.inference.photos import read_rgb, write_rgb
    big, text = str(tmp_path / 'big.png'), tmp_path / 'a.txt'
    write_rgb(big, np.zeros((300, 200, 3), np.uint8))
    text.write_text('x')
    kept, notes = prepare_uploads([big, str(text), big], str(tmp_path / 'in'), PageLimits(max_files=2, max_side=150))
    assert len(kept) == 1 and read_rgb(kept[0]).shape == (150, 100, 3)
    assert notes == ['big.png: 200x300 shrunk to 100x150', notes[1], '1 file(s) beyond the first 2 not restored']
    assert notes[1].startswith('a.txt: not an image')
    _, notes = prepare_uploads([big], str(tmp_path / 'in2'), PageLimits(max_file_mb=1e-4))
    assert notes == ['big.png: larger than 0.0001 MB, not restored']
