"""Batches of test images of one size, and image files that are whole or absent.

:class:`SizeBatches` groups the items a rank restores by their image size (an in-the-wild set mixes sizes; the
aligned sets have one) and hands out a batch as soon as ``batch_size`` items of a size are waiting; the rest at the
end, in the order their sizes first came. Each item keeps its index in the sorted set, which seeds its noise
(:mod:`drward.diffusion.row_noise`): the batch an item lands in changes no random draw, only the network's batch
size (measured: every pixel within ±1 of batch 1, docs/evaluation.md).

:func:`write_image` writes a PNG through a temporary file and a rename, so a run killed mid-write leaves either no
file or a whole one, and ``skip_existing`` never reuses a torn image; :func:`quantize` makes the restorer's float
output the 8-bit image it writes (``val.quantize``).
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Tuple

import cv2
import numpy as np
import torch

from drward.utils.atomic_io import atomic_write

QUANTIZE_MODES = ('round', 'truncate')


@dataclass
class PendingItem:
    """One test image waiting for restoration: its index in the set, its data (a batch of one) and output paths."""

    index: int
    data: Dict[str, Any]
    paths: List[str]


@dataclass
class Batch:
    """Items of one size restored together: the collated ``lq`` (and ``gt``), indices and output paths."""

    items: List[PendingItem] = field(default_factory=list)

    @property
    def indices(self) -> List[int]:
        return [item.index for item in self.items]

    @property
    def paths(self) -> List[str]:
        return [path for item in self.items for path in item.paths]

    def collated(self) -> Dict[str, torch.Tensor]:
        keys = [k for k in ('lq', 'gt') if all(k in item.data for item in self.items)]
        return {k: torch.cat([item.data[k] for item in self.items]) for k in keys}


def _size_key(data: Dict[str, Any]) -> Tuple:
    return tuple(tuple(data[k].shape[1:]) for k in ('lq', 'gt') if k in data)


class SizeBatches:
    """Collect items, yield a :class:`Batch` whenever ``batch_size`` of one size are waiting."""

    def __init__(self, batch_size: int):
        self.batch_size = int(batch_size)
        self._waiting: Dict[Tuple, Batch] = {}

    def add(self, item: PendingItem) -> Iterator[Batch]:
        key = _size_key(item.data)
        batch = self._waiting.setdefault(key, Batch())
        batch.items.append(item)
        if len(batch.items) >= self.batch_size:
            yield self._waiting.pop(key)

    def rest(self) -> Iterator[Batch]:
        """The partly filled batches, in the order their sizes first arrived."""
        while self._waiting:
            yield self._waiting.pop(next(iter(self._waiting)))


def write_image(image_rgb: np.ndarray, path: str) -> None:
    """``image_rgb`` (H, W, 3) uint8 written as a PNG at ``path``, atomically (temporary file, fsync, rename)."""
    ok, encoded = cv2.imencode(osp.splitext(path)[1] or '.png', np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise OSError(f'cannot encode the image for {path}')
    with atomic_write(path) as tmp:
        with open(tmp, 'wb') as handle:
            handle.write(encoded.tobytes())


def quantize(images: torch.Tensor, mode: str = 'round') -> np.ndarray:
    """(B, 3, H, W) RGB in [0, 1] → (B, H, W, 3) RGB uint8: ``round(255·x)`` or ``floor(255·x)`` (``truncate``)."""
    scaled = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0
    return (scaled.round() if mode == 'round' else scaled).astype(np.uint8)
