"""The labelling page: a Gradio app over a :class:`~drward.annotate.label_store.LabelStore`.

It shows the caption, the reference (toggle), image A on the left and image B on the right at full size, an
ImageSlider of the two, the progress (``n labelled / N`` for the annotator and for everyone) and exactly five
buttons — **A is better**, **B is better**, **Tie**, **Skip**, **Undo** — also on the keys ← → ↓ space backspace
(a ``keydown`` handler in the page's ``<head>`` clicks the buttons; keys typed into a text box are left alone).

Who is labelling: the *Annotator* box, filled in the browser from the URL's ``?annotator=NAME`` (else the tool's
``--annotator``; empty with ``require_name``). **Each click sends the box's value at the moment of the click and
the index of the pair on screen as the inputs of the click event itself**; the server never substitutes a default
or another tab's name, and refuses a click with an empty box. The server never writes into the box (a page-load
answer arriving late used to overwrite a name typed meanwhile, so labels went to the default name).

Every click is answered **recorded** (the line is appended and fsynced before the answer; only then does the page
show the next pair) or **not recorded**, with the reason, the pair staying (:mod:`drward.annotate.label_tabs`).
A click for a pair that is no longer the annotator's current one (a double click, a second tab, a late answer)
is refused under the store's lock (:class:`~drward.annotate.label_store.StaleClick`). The buttons use
``trigger_mode='multiple'`` so no click is dropped silently in the browser, and every event that touches the store
runs in one queue (``concurrency_id='labelling'``, one at a time, in arrival order) so the answers to one tab
arrive in the order of its clicks. Closing the tab cannot lose an answered decision: Gradio drops a closed tab's
queued events, but an answer is only sent after the handler (and its fsync) has returned.

Security (:func:`launch_page`, through the pages' shared launcher :mod:`drward.utils.page_launch`): 127.0.0.1 unless
told otherwise, a warning for any other host without ``auth``, and Gradio's ``allowed_paths`` set to the task's
image folders only, so no other file can be fetched.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import gradio as gr

from drward.annotate.label_store import NO_PAIR, LabelStore, Shown, StaleClick
from drward.annotate.label_tabs import TabLedger, TabRecord
from drward.data.pairs_file import pair_caption
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


# the URL's name, else what the box holds right now (a name typed while the page was starting is kept)
NAME_FROM_URL = """(name) => {
  const box = document.querySelector('#annotator textarea, #annotator input');
  return new URLSearchParams(window.location.search).get('annotator') || (box ? box.value : name);
}"""
QUEUE = dict(concurrency_id='labelling', concurrency_limit=1)


def token_of(shown: Optional[Shown]) -> str:
    """What the page sends back with a click: the shown pair's index (``NO_PAIR`` when nothing is left)."""
    return str(NO_PAIR if shown is None else shown.index)


def _view(store: LabelStore, annotator: str, shown: Optional[Shown], tab: Optional[TabRecord] = None,
          outcome: str = '') -> tuple:
    """The page's outputs: progress, caption, images, slider, reference, token, status, outcome, tally."""
    tally = tab.tally() if tab is not None else ''
    if not annotator:
        status = 'Type your name in **Annotator** and press Enter to start.'
        return '', '', None, None, None, None, '', status, outcome, tally
    mine, everyone, total = store.progress(annotator)
    progress = f'**{annotator}: {mine} labelled / {total}** · all annotators: {everyone} labelled / {total}'
    if shown is None:
        status = f'No pair left for {annotator}: every pair is labelled (or skipped by you). Thank you!'
        return progress, '', None, None, None, None, token_of(None), status, outcome, tally
    pair = shown.pair
    caption = pair_caption(pair, os.path.dirname(pair.image_a), fallback='(no caption)')
    where = ' · this pair is labelled by every annotator (overlap)' if shown.index in store.overlap else ''
    return (progress, caption, shown.left, shown.right, (shown.left, shown.right), pair.reference,
            token_of(shown), f'pair #{shown.index}{where}', outcome, tally)


def _parse_token(token: str) -> Optional[int]:
    try:
        return int(token)
    except (TypeError, ValueError):
        return None


def build_page(store: LabelStore, default_annotator: str = 'annotator', require_name: bool = False,
               tabs: Optional[TabLedger] = None) -> gr.Blocks:
    """The Gradio app (not launched); see the module docstring. ``tabs``: the per-tab ledger (made if None)."""
    tabs = tabs if tabs is not None else TabLedger()
    labels = {action: label for label, action, _ in BUTTONS}

    def show(annotator: str, request: gr.Request) -> tuple:
        """Page load (also the API's ``/show``): the current pair of the name in the box."""
        tab = tabs.tab(request.session_hash)
        tab.name = (annotator or '').strip()
        return _view(store, tab.name, store.current(tab.name) if tab.name else None, tab)

    def rename(annotator: str, request: gr.Request) -> tuple:
        tab = tabs.tab(request.session_hash)
        name = (annotator or '').strip()
        if name == tab.name:  # e.g. the blur of clicking a button: nothing changed, nothing sent
            return tuple(gr.skip() for _ in range(10))
        if tab.name:
            store.release(tab.name)  # the pair the old name had on screen goes back to the pool
        tab.name = name
        return _view(store, name, store.current(name) if name else None, tab)

    def decide(action: str, annotator: str, token: str, session: str) -> tuple:
        name, expected = (annotator or '').strip(), _parse_token(token)
        if not name:
            tab = tabs.note(session, False, f'✗ **not recorded** ({labels[action]}): type your name in Annotator')
            return _view(store, '', None, tab, '✗ Not recorded: type your name in **Annotator** first.')
        if expected is None:
            shown = store.current(name)
            reason = 'the page had not shown a pair yet'
        else:
            try:
                if action == 'undo':
                    undone, shown = store.undo_returning(name, expected)
                    if undone is None:
                        tab = tabs.note(session, False, '✗ **not recorded** (Undo): nothing to undo')
                        return _view(store, name, shown, tab, '✗ Nothing to undo.')
                    line = f'✓ **recorded**: Undo of pair #{undone} (as {name})'
                    if shown is None or shown.index != undone:
                        line += '; another annotator has that pair now, so here is your next one'
                else:
                    shown = store.decide(name, action, expected)
                    line = f'✓ **recorded**: pair #{expected} → {labels[action]} (as {name})'
                tab = tabs.note(session, True, line)
                return _view(store, name, shown, tab, line.replace('**recorded**', 'Recorded'))
            except StaleClick as err:
                shown, reason = err.current, str(err)
            except OSError as err:
                shown, reason = store.current(name), f'the label log could not be written ({err}); try again'
        tab = tabs.note(session, False, f'✗ **not recorded** ({labels[action]}): {reason}')
        return _view(store, name, shown, tab, f'✗ Not recorded: {reason}.')

    def on_button(action: str):
        def handler(annotator: str, token: str, request: gr.Request) -> tuple:
            return decide(action, annotator, token, request.session_hash)
        return handler

    with gr.Blocks(title='drward: which face is better?') as page:
        gr.Markdown(f'## Which face is better?\n{HELP}')
        with gr.Row():
            annotator = gr.Textbox(label='Annotator', value='' if require_name else default_annotator, scale=1,
                                   placeholder='your name', elem_id='annotator')
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
        outcome = gr.Markdown(elem_id='outcome')
        token = gr.Textbox(visible='hidden', elem_id='shown-pair')
        with gr.Accordion('Slider view (drag to compare A and B)', open=False):
            slider = gr.ImageSlider(type='filepath', label='A | B', buttons=[])
        tally = gr.Markdown(elem_id='tally')
        outputs = [progress, caption, left, right, slider, reference, token, status, outcome, tally]
        page.load(None, [annotator], [annotator], js=NAME_FROM_URL, queue=False).then(
            show, [annotator], outputs, api_name='show', **QUEUE)
        for event in (annotator.submit, annotator.blur):
            event(rename, [annotator], outputs, api_visibility='private', **QUEUE)
        show_reference.change(lambda on: gr.update(visible=on), [show_reference], [reference],
                             api_visibility='private')
        for action, button in buttons.items():
            button.click(on_button(action), [annotator, token], outputs, api_name=action, trigger_mode='multiple',
                         **QUEUE)
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
