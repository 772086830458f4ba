"""Shared plumbing of the registered metrics: BasicSR's image convention, a cache of built models, NaN for misses.

BasicSR calls a metric as ``METRIC_REGISTRY.get(type)(img=..., img2=..., **options)`` once per image, with HWC
uint8 **BGR** arrays (``basicsr.utils.tensor2img``). Learned metrics must not be rebuilt per image:
:func:`built_once` keeps one instance per (kind, options). A metric that cannot score an image (no face found)
returns ``nan``; :class:`~drward.models.face_test_model.FaceTestModel` averages with ``nanmean`` and counts misses.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np
import torch

from drward.metrics import face_models

_BUILT: Dict[Tuple[str, str], Any] = {}
BETTER = ('higher', 'lower')


def built_once(kind: str, options: Mapping[str, Any], build: Callable[[], Any]) -> Any:
    """``build()`` the first time this (kind, options) is seen, the cached object afterwards."""
    key = (kind, json.dumps(dict(options), sort_keys=True, default=str))
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


def clear_built_metrics() -> None:
    """Forget every cached metric model (tests, or to free memory)."""
    _BUILT.clear()


def resolve_device(device: str) -> str:
    """A metric's ``device`` option: ``'auto'`` (the default) → ``'cuda'`` when available (the run's GPU), else
    ``'cpu'``."""
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return device


def release_gpu_metrics() -> int:
    """Forget the cached metric models built on a GPU (after a validation: they would hold GPU memory through the
    training steps until the next one; rebuilt then, from disk). Returns how many were released."""
    gone = [key for key in _BUILT if '"cuda' in key[1]]
    for key in gone:
        del _BUILT[key]
    face_built = [m for m in face_models.cached_face_models() if str(getattr(m, 'device', 'cpu')).startswith('cuda')]
    if face_built:
        face_models.build_face_models.cache_clear()
        gone += face_built
    if gone and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(gone)


def bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    """HWC BGR (BasicSR's convention) → contiguous HWC RGB uint8; grey images are replicated to three channels."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., 2::-1])


def bgr_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC BGR uint8 → (1, 3, H, W) float RGB in [0, 1]."""
    rgb = bgr_to_rgb(img).astype(np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def check_better(owner: str, better: Any) -> None:
    """BasicSR's ``better`` key is allowed in metric options (it reads it for best-value tracking)."""
    if better is not None and better not in BETTER:
        raise ValueError(f'{owner}: better must be one of {BETTER}, got {better!r}')
