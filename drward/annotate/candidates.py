"""Candidates to label: per face, restorations by named restorers and seeds plus degraded copies of the GT.

Writes the face-folder layout that ``tools/annotate.py --images`` and :func:`drward.annotate.collect.pairs_from_folder`
read, and the pairs file of every within-face pair of candidates::

    TASK/
      face_<stem>/  reference.png  caption.txt  <restorer>_s<seed>.png ...  degraded_<k>.png ...
      pairs.jsonl

``reference.png`` is the GT face (with ``lq_inputs`` the LQ input itself, there being no GT). The LQ input of the
restorers is the GT degraded with the paper's degradations (:func:`drward.data.degrade.degrade`) under the fixed
seed ``face index`` (so every restorer and every rerun sees the same input); ``degraded_<k>`` is the GT degraded
under seed ``10⁶ + 1000·face index + k``. A file already present is kept: a rerun only adds what is missing, and a
restorer is built only when one of its files is missing.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
from basicsr.utils import get_root_logger
from tqdm import tqdm

from drward.annotate.collect import pairs_from_folder, relative_pairs
from drward.data.degrade import degrade
from drward.data.image_io import ImageReadError, caption_beside, list_images, read_image
from drward.data.pairs_file import write_pairs
from drward.inference.model import build_face_restorer

RestoreFn = Callable[[np.ndarray, int], np.ndarray]  # (RGB uint8 face, seed) → RGB uint8 face


@dataclasses.dataclass
class CandidateRestorer:
    """A named restorer; ``build()`` is called once, only if one of its candidates is missing."""

    name: str
    build: Callable[[], RestoreFn]
    _fn: Optional[RestoreFn] = None

    def __call__(self, face_rgb: np.ndarray, seed: int) -> np.ndarray:
        if self._fn is None:
            self._fn = self.build()
        return self._fn(face_rgb, seed)


def restorer_name(opt_path: str, checkpoint: Optional[str] = None) -> str:
    """``refl_diffbir`` for ``options/refl_diffbir.yml``; ``refl_diffbir-net_g_3500`` with that checkpoint."""
    name = os.path.splitext(os.path.basename(opt_path))[0]
    return name if not checkpoint else f'{name}-{os.path.splitext(os.path.basename(checkpoint))[0]}'


def face_restorer_candidate(name: str, opt_path: Optional[str], checkpoint: Optional[str] = None,
                            tiny: Optional[str] = None, device: str = 'auto',
                            steps: Optional[int] = None) -> CandidateRestorer:
    """A candidate restorer through drward's option files (:func:`drward.inference.model.build_face_restorer`)."""
    def build() -> RestoreFn:
        model = build_face_restorer(opt_path, tiny is not None, tiny or 'diffbir', checkpoint, steps, device=device)

        def restore(face: np.ndarray, seed: int) -> np.ndarray:
            model.seed = seed
            return model.restore_face(face)
        return restore
    return CandidateRestorer(name, build)


def _bgr_float_to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img[..., ::-1] * 255.0), 0, 255).astype(np.uint8)


def _write_rgb(path: str, rgb: np.ndarray) -> None:
    tmp = path + '.tmp.png'
    if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f'cannot write candidate {path}')
    os.replace(tmp, path)  # a killed run leaves no half-written candidate


def make_candidates(faces: str, task: str, restorers: Sequence[CandidateRestorer], seeds: Sequence[int] = (0,),
                    degraded: int = 2, lq_inputs: bool = False, progress: bool = True) -> dict:
    """Write the candidates of every face in ``faces`` into ``task`` and ``task/pairs.jsonl``; returns counts. A face
    that cannot be read (corrupt, truncated, not an image, over the pixel limit: checked from its header before
    decoding) is skipped with a warning naming it, and the others go on (``counts['skipped']``)."""
    paths, skipped = [], []
    for path in list_images(faces):
        try:
            read_image(path)
        except ImageReadError as error:
            skipped.append(str(error))
            get_root_logger().warning(f'make_candidates: skipping {error}')
            continue
        paths.append(path)
    jobs = [(i, path, kind, arg) for i, path in enumerate(paths)
            for kind, arg in ([('restore', (r, s)) for r in restorers for s in seeds]
                              + [('degrade', k) for k in range(0 if lq_inputs else degraded)])]
    written = kept = 0
    lq_of: dict = {}
    for index, path, kind, arg in tqdm(jobs, desc='candidates', unit='image', disable=not progress):
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.join(task, f'face_{stem}')
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(os.path.join(folder, 'reference.png')):
            _write_rgb(os.path.join(folder, 'reference.png'), _bgr_float_to_rgb_uint8(read_image(path)))
        caption = caption_beside(path)
        if caption and not os.path.isfile(os.path.join(folder, 'caption.txt')):
            with open(os.path.join(folder, 'caption.txt'), 'w', encoding='utf-8') as handle:
                handle.write(caption + '\n')
        if kind == 'restore':
            restorer, seed = arg
            target = os.path.join(folder, f'{restorer.name}_s{seed}.png')
        else:
            target = os.path.join(folder, f'degraded_{arg}.png')
        if os.path.isfile(target):
            kept += 1
            continue
        gt = read_image(path)
        if kind == 'degrade':
            _write_rgb(target, _bgr_float_to_rgb_uint8(degrade(gt, seed=10 ** 6 + 1000 * index + arg)[0]))
        else:
            if index not in lq_of:
                lq_of[index] = gt if lq_inputs else degrade(gt, seed=index)[0]
            _write_rgb(target, restorer(_bgr_float_to_rgb_uint8(lq_of[index]), seed))
        written += 1
    pairs = [p for p in pairs_from_folder(task) if os.path.basename(os.path.dirname(p.image_a)).startswith('face_')]
    write_pairs(os.path.join(task, 'pairs.jsonl'), relative_pairs(pairs, task))
    return {'faces': len(paths), 'written': written, 'kept': kept, 'pairs': len(pairs), 'skipped': skipped}
