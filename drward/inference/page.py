"""The restoration web page of ``tools/app.py``: upload photos, press **Restore**, compare before / after.

The page drives the same pipeline as ``tools/restore.py`` (:class:`drward.inference.photos.PhotoRestorer`: detect,
align, restore, paste back; or aligned faces), with one restorer built once at start-up
(:func:`drward.inference.model.build_face_restorer`). Requests wait in a queue served by one worker, so the model is
never used by two requests at once. Every upload is checked first: a file that is not an image, one over the size
limit, or a photo without a face gives a line in the page's message box, and the others are still restored.
Photos longer than ``max_side`` are shrunk to it. Results: a before/after slider (``gr.ImageSlider``) per whole image
and per face, and a zip of the GFPGAN-style output folders.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Tuple

from drward.diffusion.ddim import TruncatedDDIMSampler
from drward.inference.model import FaceRestorer
from drward.inference.photos import OUTPUT_FOLDERS, PhotoRestorer, read_rgb, resize_to, write_rgb
from drward.utils.image_header import max_pixels

MAX_SLIDERS = 24  # sliders shown per request (the zip holds every face)


@dataclass
class PageLimits:
    """What the page accepts; stated on the page."""
    max_files: int = 8
    max_file_mb: float = 20.0
    max_side: int = 4096

    def text(self) -> str:
        return (f'Up to {self.max_files} images per request (jpg, png, webp, bmp, tif), each at most '
                f'{self.max_file_mb:g} MB and {max_pixels() / 1e6:.0f} megapixels; photos longer than '
                f'{self.max_side} px on their longest side are shrunk to it.')


def set_steps(net, steps: Optional[int]) -> None:
    """Give a sampling restorer ``steps`` DDIM steps (its sampler rebuilt with its other settings kept)."""
    sampler = getattr(net, 'sampler', None)
    if steps is None or sampler is None or sampler.num_steps == int(steps):
        return
    steps = int(steps)
    net.sampler = TruncatedDDIMSampler(num_steps=steps, stop_window=min(sampler.stop_window, steps),
                                       eta_train=sampler.eta_train, eta_infer=sampler.eta_infer,
                                       eta_per_update=sampler.eta_per_update)


def prepare_uploads(paths: List[str], folder: str, limits: PageLimits) -> Tuple[List[str], List[str]]:
    """Copy the readable images among ``paths`` into ``folder`` as PNG (shrunk to ``limits.max_side``); returns
    their paths and one message per upload that was refused or changed."""
    os.makedirs(folder, exist_ok=True)
    kept, notes = [], []
    for index, path in enumerate(paths[:limits.max_files]):
        name = osp.basename(path)
        if osp.getsize(path) > limits.max_file_mb * 2 ** 20:
            notes.append(f'{name}: larger than {limits.max_file_mb:g} MB, not restored')
            continue
        try:
            img = read_rgb(path)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0].replace(path, name)  # the upload's temporary path means nothing
            notes.append(f'{name}: not an image this page can read ({reason}), not restored')
            continue
        height, width = img.shape[:2]
        if max(height, width) > limits.max_side:
            scale = limits.max_side / max(height, width)
            img = resize_to(img, max(1, round(height * scale)), max(1, round(width * scale)))
            notes.append(f'{name}: {width}x{height} shrunk to {img.shape[1]}x{img.shape[0]}')
        stem = f'{index:02d}_{osp.splitext(name)[0]}'[:80]
        kept.append(osp.join(folder, f'{stem}.png'))
        write_rgb(kept[-1], img)
    if len(paths) > limits.max_files:
        notes.append(f'{len(paths) - limits.max_files} file(s) beyond the first {limits.max_files} not restored')
    return kept, notes


class RestorationPage:
    """The page's work: one request = the uploads restored into a fresh folder, sliders and a zip made."""

    def __init__(self, model: FaceRestorer, detector=None, face_size: int = 512, limits: PageLimits = PageLimits(),
                 work_root: Optional[str] = None, batch_size: int = 1):
        self.model, self.detector, self.face_size, self.limits = model, detector, face_size, limits
        self.batch_size = int(batch_size)  # faces per network call, across the request's images
        self.work_root = work_root or tempfile.mkdtemp(prefix='drward_app_')

    def restore(self, paths: List[str], aligned: bool, steps: Optional[int], seed: int, progress=None
                ) -> Tuple[str, list, Optional[str]]:
        """Returns (message, ``[(label, before path, after path)]`` for the sliders, zip path or None)."""
        if not paths:
            return 'Upload one or more photos first.', [], None
        work = tempfile.mkdtemp(dir=self.work_root, prefix='request_')
        inputs, notes = prepare_uploads([str(p) for p in paths], osp.join(work, 'inputs'), self.limits)
        if not inputs:
            return '\n'.join(['Nothing to restore:'] + [f'- {n}' for n in notes]), [], None
        set_steps(self.model.net, steps)
        self.model.seed = int(seed)
        output = osp.join(work, 'results')
        for folder in OUTPUT_FOLDERS:
            os.makedirs(osp.join(output, folder), exist_ok=True)
        photos = PhotoRestorer(self.model.restore_face, output, aligned, self.face_size,
                               None if aligned else self.detector, batch_size=self.batch_size,
                               restore_faces=self.model.restore_faces)
        stems = [osp.splitext(osp.basename(path))[0] for path in inputs]
        finished = [0]

        def advance(result) -> None:
            finished[0] += 1
            if progress is not None:
                progress((finished[0], len(inputs)), desc=f'restored {osp.basename(result.path)}')
        if progress is not None:
            progress((0, len(inputs)), desc='restoring')
        sliders, restored = [], 0
        for path, stem, result in zip(inputs, stems, photos.restore_images(inputs, stems, advance)):
            if result.status == 'no face':
                notes.append(f'{stem[3:]}: no face found (try "aligned faces" for a cropped face)')
                continue
            if result.status != 'restored':
                notes.append(f'{stem[3:]}: {result.reason}')
                continue
            restored += 1
            sliders.append((f'{stem[3:]}: whole image', path, osp.join(output, 'restored_imgs', f'{stem}.png')))
            for face in range(result.faces):
                name = f'{stem}_{face:02d}.png'
                sliders.append((f'{stem[3:]}: face {face + 1}', osp.join(output, 'cropped_faces', name),
                                osp.join(output, 'restored_faces', name)))
        archive = shutil.make_archive(osp.join(work, 'drward_restored'), 'zip', output) if restored else None
        head = f'Restored {restored} of {len(inputs)} image(s) with {self.model.description.splitlines()[0]}.'
        return '\n'.join([head] + [f'- {n}' for n in notes]), sliders[:MAX_SLIDERS], archive


def build_page(page: RestorationPage, title: str = 'drward: face restoration', default_steps: Optional[int] = None,
               max_queue: int = 32):
    """The Gradio Blocks of the page (not launched). One worker; at most ``max_queue`` requests wait, and any more
    are refused at once with Gradio's "Queue is full" (HTTP 503), so no one waits without bound."""
    import gradio as gr

    def run(files, aligned, steps, seed, progress=gr.Progress()):
        paths = [f if isinstance(f, str) else getattr(f, 'name', str(f)) for f in (files or [])]
        return page.restore(paths, aligned, steps, seed, progress)

    samples = getattr(page.model.net, 'sampler', None) is not None
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f'# {title}\nRestorer: {page.model.description.splitlines()[0]}\n\n{page.limits.text()} '
                    'Whole photos: every face is detected, aligned, restored and pasted back.')
        with gr.Row():
            with gr.Column():
                files = gr.File(label='Photos', file_count='multiple', type='filepath')
                aligned = gr.Checkbox(label='aligned faces (already cropped and aligned, no detection)')
                steps = gr.Slider(1, 100, value=default_steps or 50, step=1, label='DDIM steps', visible=samples)
                seed = gr.Number(value=page.model.seed, precision=0, label='seed')
                button = gr.Button('Restore', variant='primary')
            with gr.Column():
                message = gr.Textbox(label='Message', lines=4, interactive=False)
                archive = gr.File(label='Download the results (zip)', interactive=False)
        results = gr.State([])

        @gr.render(inputs=results)
        def show(items):
            for label, before, after in items:
                gr.ImageSlider(value=(before, after), label=f'{label} (before | after)', type='filepath')

        button.click(run, [files, aligned, steps, seed], [message, results, archive], concurrency_limit=1)
    demo.queue(default_concurrency_limit=1, max_size=int(max_queue))
    return demo
