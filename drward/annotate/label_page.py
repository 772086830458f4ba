"""The labelling page: a Gradio app over a :class:`~drward.annotate.label_store.LabelStore`.

It shows the caption, the reference (toggle), image A on the left and image B on the right at full size, an
ImageSlider of the two, the progress (``n labelled / N`` for the annotator and for everyone) and exactly five
buttons — **A is better**, **B is better**, **Tie**, **Skip**, **Undo** — also on the keys ← → ↓ space backspace
(a ``keydown`` handler in the page's ``<head>`` clicks the buttons; keys typed into a text box are left alone).

Who is labelling: the *Annotator* box, filled from the URL's ``?annotator=NAME`` or the tool's ``--annotator``.
Every click carries the index of the pair the browser shows, and a decision for a pair that is no longer the one
on screen (a double click, a key held down) is ignored rather than applied to a pair nobody saw.

Security (:func:`launch_page`, through the pages' shared launcher :mod:`drward.utils.page_launch`): 127.0.0.1 unless
told otherwise, a warning for any other host without ``auth``, and Gradio's ``allowed_paths`` set to the task's
image folders only, so no other file can be fetched.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import gradio as gr

from drward.annotate.label_store import LabelStore, Shown
from drward.annotate.pairs import pair_caption
from drward.utils.page_launch import exposure_warning, is_loopback, launch, parse_auth  # noqa: F401 (the page's API)

BUTTONS = (('A is better', 'left', 'btn-a'), ('B is better', 'right', 'btn-b'), ('Tie', 'tie', 'btn-tie'),
           ('Skip', 'skip', 'btn-skip'), ('Undo', 'undo', 'btn-undo'))
KEYS = {'ArrowLeft': 'btn-a', 'ArrowRight': 'btn-b', 'ArrowDown': 'btn-tie', ' ': 'btn-skip', 'Backspace': 'btn-undo'}
KEY_SCRIPT = """<script>
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const id = (%s)[event.key];
  const button = id && document.getElementById(id);
  if (!button || event.repeat) return;
  event.preventDefault();
  button.click();
});
</script>"""
HELP = ('Which restoration of the face is better? Keys: **←** A is better · **→** B is better · **↓** Tie · '
        '**space** Skip · **backspace** Undo')
CSS = '#pair-view img { object-fit: none !important; }'  # full size: no down-scaling of the faces


def image_folders(store: LabelStore) -> List[str]:
    """The folders holding the task's images and references: the only ones the page may serve."""
    paths = {p for pair in store.pairs for p in (pair.image_a, pair.image_b, pair.reference) if p}
    return sorted({os.path.dirname(os.path.abspath(p)) for p in paths})


def _view(store: LabelStore, annotator: str, shown: Optional[Shown], note: str = '') -> tuple:
    """The page's outputs for ``annotator`` showing ``shown``: progress, caption, images, slider, token, status."""
    mine, everyone, total = store.progress(annotator)
    progress = f'**{annotator}: {mine} labelled / {total}** · all annotators: {everyone} labelled / {total}'
    if shown is None:
        status = f'{note} No pair left for {annotator}: every pair is labelled (or skipped by you). Thank you!'
        return progress, '', None, None, None, None, '', status.strip()
    pair = shown.pair
    caption = pair_caption(pair, os.path.dirname(pair.image_a), fallback='(no caption)')
    where = ' · this pair is labelled by every annotator (overlap)' if shown.index in store.overlap else ''
    return (progress, caption, shown.left, shown.right, (shown.left, shown.right), pair.reference,
            str(shown.index), f'{note} pair #{shown.index}{where}'.strip())


def build_page(store: LabelStore, default_annotator: str = 'annotator') -> gr.Blocks:
    """The Gradio app (not launched); see the module docstring."""

    def name_of(annotator: str) -> str:
        return (annotator or '').strip() or default_annotator

    def on_load(annotator: str, request: gr.Request) -> tuple:
        name = name_of((request.query_params.get('annotator') if request else None) or annotator)
        return (name, name) + _view(store, name, store.current(name))

    def on_rename(annotator: str, previous: str) -> tuple:
        name = name_of(annotator)
        if previous and previous != name:
            store.release(previous)  # the pair the old name had on screen goes back to the pool
        return (name,) + _view(store, name, store.current(name))

    def on_button(action: str):
        def handler(annotator: str, token: str) -> tuple:
            name = name_of(annotator)
            shown = store.current(name)
            if action == 'undo':
                return _view(store, name, store.undo(name), 'Undone.')
            if shown is None or token != str(shown.index):
                return _view(store, name, shown, 'That click was for a pair no longer shown; ignored.')
            return _view(store, name, store.decide(name, action))
        return handler

    with gr.Blocks(title='drward: which face is better?') as page:
        gr.Markdown(f'## Which face is better?\n{HELP}')
        with gr.Row():
            annotator = gr.Textbox(label='Annotator', value=default_annotator, scale=1)
            progress = gr.Markdown(elem_id='progress')
        caption = gr.Textbox(label='Caption', interactive=False, elem_id='caption')
        show_reference = gr.Checkbox(label='Show the reference', value=False)
        reference = gr.Image(label='Reference', type='filepath', interactive=False, visible=False,
                             buttons=[], elem_id='reference')
        with gr.Row(elem_id='pair-view'):
            left = gr.Image(label='A (left)', type='filepath', interactive=False, buttons=[], elem_id='image-left')
            right = gr.Image(label='B (right)', type='filepath', interactive=False, buttons=[],
                             elem_id='image-right')
        with gr.Row():
            buttons = {action: gr.Button(label, elem_id=elem_id, variant='primary' if action in ('left', 'right')
                                         else 'secondary') for label, action, elem_id in BUTTONS}
        status = gr.Markdown(elem_id='status')
        token = gr.Textbox(visible='hidden', elem_id='shown-pair')
        with gr.Accordion('Slider view (drag to compare A and B)', open=False):
            slider = gr.ImageSlider(type='filepath', label='A | B', buttons=[])
        session_name = gr.State('')
        outputs = [progress, caption, left, right, slider, reference, token, status]
        page.load(on_load, [annotator], [annotator, session_name] + outputs)
        annotator.submit(on_rename, [annotator, session_name], [session_name] + outputs)
        annotator.blur(on_rename, [annotator, session_name], [session_name] + outputs)
        show_reference.change(lambda on: gr.update(visible=on), [show_reference], [reference])
        for action, button in buttons.items():
            button.click(on_button(action), [annotator, token], outputs)
    return page


def launch_page(page: gr.Blocks, store: LabelStore, host: str = '127.0.0.1', port: Optional[int] = None,
                auth: Optional[Tuple[str, str]] = None, prevent_thread_lock: bool = False,
                quiet: bool = False) -> None:
    """Serve ``page`` on ``host:port`` with the task's image folders as the only allowed paths."""
    keys = '{' + ', '.join(f'{k!r}: {v!r}' for k, v in KEYS.items()) + '}'
    launch(page, host, port, auth, prevent_thread_lock=prevent_thread_lock, allowed_paths=image_folders(store),
           quiet=quiet, head=KEY_SCRIPT % keys, css=CSS, footer_links=[])


def report_malformed(store: LabelStore, stream=sys.stderr) -> Sequence[str]:
    """Print (and return) one line per malformed log line; they stay in the file."""
    lines = [f'{store.out_path}, line {n}: {error} (kept in the file, ignored)' for n, error in store.malformed]
    for line in lines:
        print(line, file=stream)
    return lines
