"""Bundled demo faces: real photos that ship inside scikit-image, so demos and tests need no download.

Sources (both real photographs, both in the scikit-image wheel):

* ``skimage.data.astronaut()`` — Eileen Collins, NASA portrait (public domain), 512² RGB; the face is cropped to a
  square;
* ``skimage.data.lfw_subset()`` — its first 100 images are 25×25 grey faces from Labeled Faces in the Wild,
  upsampled here and replicated to three channels.

Variants made by code (mirror, shifted/zoomed crops, warm or cool colour casts) give distinct images; captions come
from a small template describing what is in each image. The result is good for plumbing and demos; it is **not**
a test set for measuring restoration quality (one identity at moderate resolution, the rest 25-pixel faces blown
up).

Every function here is deterministic: the same arguments give the same pixels and the same PNG bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

import cv2
import numpy as np
import torch

DEFAULT_COUNT = 16
LFW_FACE_COUNT = 100  # lfw_subset(): the first 100 images are faces, the rest background patches
ASTRONAUT_FACE_BOX = (5, 125, 200)  # (top, left, side) of the face square in the 512² astronaut photo
TINTS = {'none': (1.0, 1.0, 1.0), 'warm': (1.10, 1.0, 0.85), 'cool': (0.88, 1.0, 1.12)}  # RGB gains


@dataclass(frozen=True)
class DemoFaceRecipe:
    """How one demo face is made: a source photo, a crop (shift and zoom), a mirror flag and a colour tint."""

    source: str  # 'astronaut' or 'lfw'
    lfw_index: int = 0
    shift: Tuple[int, int] = (0, 0)  # (dy, dx) of the crop in source pixels (astronaut only)
    zoom: float = 1.0  # crop side / default side (astronaut only)
    mirror: bool = False
    tint: str = 'none'


_ASTRONAUT_VARIANTS = (
    DemoFaceRecipe('astronaut'),
    DemoFaceRecipe('astronaut', mirror=True),
    DemoFaceRecipe('astronaut', shift=(8, -10), zoom=0.9),
    DemoFaceRecipe('astronaut', tint='warm'),
    DemoFaceRecipe('astronaut', tint='cool', mirror=True),
    DemoFaceRecipe('astronaut', shift=(0, -20), zoom=1.2),
)
_LFW_VARIANT_CYCLE = ((False, 'none'), (True, 'none'), (False, 'warm'), (True, 'cool'))
MAX_COUNT = len(_ASTRONAUT_VARIANTS) + LFW_FACE_COUNT


def demo_face_recipes(count: int = DEFAULT_COUNT) -> List[DemoFaceRecipe]:
    """The first ``count`` recipes: the astronaut variants, then one LFW face each with a cycling variant."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f'demo face count must be between 1 and {MAX_COUNT}, got {count}')
    recipes = list(_ASTRONAUT_VARIANTS)
    for index in range(LFW_FACE_COUNT):
        mirror, tint = _LFW_VARIANT_CYCLE[index % len(_LFW_VARIANT_CYCLE)]
        recipes.append(DemoFaceRecipe('lfw', lfw_index=index, mirror=mirror, tint=tint))
    return recipes[:count]


@lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    from skimage import data
    return data.lfw_subset()[:LFW_FACE_COUNT]


def _astronaut_crop(recipe: DemoFaceRecipe) -> np.ndarray:
    top, left, side = ASTRONAUT_FACE_BOX
    new_side = int(round(side * recipe.zoom))
    centre_y = top + side // 2 + recipe.shift[0]
    centre_x = left + side // 2 + recipe.shift[1]
    photo = _astronaut()
    y0 = int(np.clip(centre_y - new_side // 2, 0, photo.shape[0] - new_side))
    x0 = int(np.clip(centre_x - new_side // 2, 0, photo.shape[1] - new_side))
    return photo[y0:y0 + new_side, x0:x0 + new_side].astype(np.float32) / 255.0


def render_demo_face(recipe: DemoFaceRecipe, size: int) -> np.ndarray:
    """The face of ``recipe`` as ``(size, size, 3)`` uint8 RGB."""
    if recipe.source == 'astronaut':
        face = _astronaut_crop(recipe)
    elif recipe.source == 'lfw':
        face = np.repeat(_lfw_faces()[recipe.lfw_index].astype(np.float32)[..., None], 3, axis=2)
    else:
        raise ValueError(f'unknown demo face source {recipe.source!r}')
    interpolation = cv2.INTER_AREA if face.shape[0] > size else cv2.INTER_CUBIC
    face = cv2.resize(face, (size, size), interpolation=interpolation)
    if recipe.mirror:
        face = face[:, ::-1]
    face = face * np.asarray(TINTS[recipe.tint], dtype=np.float32)
    return np.clip(np.round(face * 255.0), 0, 255).astype(np.uint8)


def demo_face_caption(recipe: DemoFaceRecipe) -> str:
    """A template caption: ``a photo of a <adjective> face, <details>``, describing what the image shows."""
    if recipe.source == 'astronaut':
        adjective, details = 'smiling', ['short light-brown hair', 'studio portrait']
    else:
        adjective, details = ('greyscale' if recipe.tint == 'none' else 'monochrome'), ['news photo', 'soft focus']
    if recipe.tint != 'none':
        details.append(f'{recipe.tint} colour cast')
    if recipe.zoom != 1.0:
        details.append('close-up' if recipe.zoom < 1.0 else 'wider framing')
    if recipe.mirror:
        details.append('facing the other way')
    return f'a photo of a {adjective} face, ' + ', '.join(details)


def demo_face_name(index: int) -> str:
    """File stem of the ``index``-th demo face."""
    return f'demo_face_{index:03d}'


def make_demo_faces(folder: str, size: int = 512, count: int = DEFAULT_COUNT) -> List[str]:
    """Write ``count`` demo faces as ``<folder>/demo_face_XXX.png`` plus ``.txt`` captions; returns the PNG paths.

    Each file is written under a temporary name and renamed into place, so two processes making the same folder at
    once (two runs, two test workers) never let a reader see half a file; both write the same bytes."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index, recipe in enumerate(demo_face_recipes(count)):
        stem = os.path.join(folder, demo_face_name(index))
        ok, png = cv2.imencode('.png', np.ascontiguousarray(render_demo_face(recipe, size)[..., ::-1]))
        if not ok:
            raise OSError(f'cannot encode demo face {stem}.png')
        _write_in_place(stem + '.txt', (demo_face_caption(recipe) + '\n').encode('utf-8'))
        _write_in_place(stem + '.png', png.tobytes())
        paths.append(stem + '.png')
    return paths


def _write_in_place(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it onto ``path`` (atomic on one filesystem)."""
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'wb') as handle:
        handle.write(data)
    os.replace(tmp, path)


def _demo_faces_present(folder: str, size: int, count: int) -> bool:
    stems = [os.path.join(folder, demo_face_name(index)) for index in range(count)]
    if not all(os.path.isfile(s + '.png') and os.path.isfile(s + '.txt') for s in stems):
        return False
    first = cv2.imread(stems[0] + '.png', cv2.IMREAD_UNCHANGED)
    return first is not None and first.shape[:2] == (size, size)


def ensure_demo_faces(folder: str, size: int = 512, count: int = DEFAULT_COUNT) -> str:
    """Make the demo faces in ``folder`` unless they are already there at this size; returns ``folder``."""
    if not _demo_faces_present(folder, size, count):
        make_demo_faces(folder, size, count)
    return folder


def demo_face_tensor(size: int = 64, index: int = 0) -> torch.Tensor:
    """The ``index``-th demo face in memory: ``(3, size, size)`` float32 RGB in [0, 1] (same pixels as the PNG)."""
    recipe = demo_face_recipes(index + 1)[index]
    return torch.from_numpy(render_demo_face(recipe, size).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
