"""Small builders shared by the annotation and preference-pair tests (not a test module)."""
from __future__ import annotations

import os
from typing import List

import cv2
import numpy as np

from drward.annotate.quality import QualityMetric


def write_rgb_png(path: str, rgb: np.ndarray) -> str:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR); returns the path."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    assert cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]))
    return path


def solid_rgb(size: int, colour) -> np.ndarray:
    """A ``size × size`` image of one RGB colour."""
    return np.broadcast_to(np.asarray(colour, np.uint8), (size, size, 3)).copy()


def textured_rgb(size: int, seed: int) -> np.ndarray:
    """A smooth random texture (different for each seed)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


class CountingMetric:
    """A metric that records every image it computes (mean brightness, or its difference from the reference)."""

    def __init__(self, name: str = 'counting_mean', needs_reference: bool = False):
        self.calls: List[tuple] = []
        self.metric = QualityMetric(name, True, needs_reference, self._compute)

    def _compute(self, image: np.ndarray, reference) -> float:
        self.calls.append((image.shape, None if reference is None else reference.shape))
        value = float(image.mean())
        return value if reference is None else value - float(reference.mean())
