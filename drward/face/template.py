"""The FFHQ face template: where the five landmarks of an aligned 512² face sit.

The five points, in image coordinates ``(x, y)`` and in this order, are the eye centre on the image's left, the eye
centre on the image's right, the nose tip, the mouth corner on the left and the mouth corner on the right. The
numbers are the 512² template used by facexlib's FaceRestoreHelper (and GFPGAN, CodeFormer, DiffBIR), i.e. FFHQ's
alignment reduced to five points.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

TEMPLATE_SIZE = 512
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]], dtype=np.float64)

# dlib's HOG face box on FFHQ-aligned faces, as fractions (left, top, right, bottom) of the side. Measured by running
# the detector (upsample 1) on an FFHQ-aligned astronaut face: box (111, 171)–(379, 439) on 512².
ALIGNED_FACE_BOX = (0.217, 0.334, 0.740, 0.857)
FULL_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0)


def face_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The (5, 2) template scaled to a ``size``² aligned face."""
    return FFHQ_TEMPLATE_512 * (size / TEMPLATE_SIZE)


def five_points_from_68(points68: np.ndarray) -> np.ndarray:
    """Reduce the iBUG 68-point layout to the template's five points.

    Eye centres are the means of points 36–41 and 42–47, the nose tip is point 30, the mouth corners 48 and 54.
    """
    points68 = np.asarray(points68, dtype=np.float64)
    if points68.shape != (68, 2):
        raise ValueError(f'expected (68, 2) landmarks, got {points68.shape}')
    return np.stack([points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]])


def fractional_box(fractions: Tuple[float, float, float, float], height: int, width: int) -> Tuple[int, int, int, int]:
    """A (left, top, right, bottom) pixel box from fractions of the image's width and height."""
    left, top, right, bottom = fractions
    return (int(round(left * width)), int(round(top * height)), int(round(right * width)) - 1,
            int(round(bottom * height)) - 1)
