"""The size changes the reference pipelines make around their networks (bicubic with antialiasing, as DiffBIR's
``F.interpolate(..., mode='bicubic', antialias=True)``), shared by the restorers.

* :func:`resize_short_side` — DiffBIR's ``resize_short_edge_to`` (``diffbir/pipeline.py``): a short side under
  ``size`` is brought to ``size``, the long side to ``int(long · size / short)``;
* :func:`round_down_to_multiple` — OSEDiff's ``test_osediff.py``: each side down to a multiple of 8 (OSEDiff
  resizes with PIL's Lanczos; torch has none, so bicubic here);
* :func:`resize_to` — back to a given size (a no-op when the size already matches).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def resize_to(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``image`` (B, C, H, W) resized to ``size`` = (H', W') (bicubic, antialiased); itself when already that size.
    Reduced-precision images are resized in float32 (antialiased bicubic has no bf16 CPU kernel) and cast back."""
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    work = image if image.dtype in (torch.float32, torch.float64) else image.float()
    return F.interpolate(work, size=size, mode='bicubic', align_corners=False, antialias=True).to(image.dtype)


def short_side_size(height: int, width: int, size: Optional[int]) -> Tuple[int, int]:
    """The (H, W) DiffBIR's ``resize_short_edge_to`` gives when the short side is under ``size`` (else unchanged;
    ``size`` 0 / None: unchanged)."""
    if not size or min(height, width) >= size:
        return height, width
    if height == width:
        return size, size
    if height < width:
        return size, int(width * (size / height))
    return int(height * (size / width)), size


def resize_short_side(image: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """``image`` with its short side brought up to ``size`` (see :func:`short_side_size`)."""
    return resize_to(image, short_side_size(*image.shape[-2:], size))


def round_down_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """``image`` resized so that each side is the largest multiple of ``multiple`` not above it."""
    height, width = image.shape[-2:]
    if height < multiple or width < multiple:
        raise ValueError(f'image sides must be at least {multiple}, got {height}×{width}')
    return resize_to(image, (height - height % multiple, width - width % multiple))
