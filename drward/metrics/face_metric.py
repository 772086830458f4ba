"""Face metrics in BasicSR's METRIC_REGISTRY: identity (IDS) and landmark distance (LMD), restored vs ground truth.

Both take BasicSR's per-image call, ``calculate_x(img, img2, **options)`` with HWC uint8 BGR images, ``img`` the
restoration and ``img2`` the ground truth, and return ``nan`` when either face is not found (FaceTestModel counts
those). The models are :mod:`drward.metrics.face_models` (``backend: dlib`` offline by default, ``facexlib`` with
local weights, ``auto`` = facexlib if its files are present); ``face_box: aligned`` (default) suits the aligned 512²
test sets, ``detect`` runs the face detector.

* IDS, ``measure``: ``angle`` (default; ``arccos(cos(e, e_gt))`` in degrees, VQFR's "Deg.", lower is better),
  ``similarity`` (cosine, higher is better) or ``distance`` (``‖e − e_gt‖₂``, lower is better);
* LMD ``= (1/68) Σ_k ‖p_k − p_k^gt‖₂`` in pixels (lower is better).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

from drward.metrics import face_models
from drward.metrics.metric_utils import bgr_to_rgb, check_better, resolve_device
from drward.utils.options import check_keys
from drward.utils.registry import register

IDS_MEASURES = {
    'angle': (face_models.identity_angle, 'lower'),
    'similarity': (face_models.identity_similarity, 'higher'),
    'distance': (face_models.identity_distance, 'lower'),
}
_FACE_KEYS = ('backend', 'weights_dir', 'face_box', 'device', 'better')


def ids_direction(measure: str) -> str:
    """``'higher'`` or ``'lower'``: which IDS values are better for this measure."""
    return IDS_MEASURES[measure][1]


@register(METRIC_REGISTRY)
def calculate_ids(img: np.ndarray, img2: np.ndarray, measure: str = 'angle', backend: str = 'dlib',
                  weights_dir: Optional[str] = None, face_box: str = 'aligned', device: str = 'auto',
                  better: Optional[str] = None, **unknown) -> float:
    """Identity distance/similarity between the restored face and the ground-truth face (see module docstring)."""
    check_keys('calculate_ids', unknown, ('measure',) + _FACE_KEYS)
    check_better('calculate_ids', better)
    if measure not in IDS_MEASURES:
        raise ValueError(f'calculate_ids: measure must be one of {sorted(IDS_MEASURES)}, got {measure!r}')
    models = face_models.build_face_models(backend, weights_dir, face_box, resolve_device(device))
    restored, truth = models.identity_embedding(bgr_to_rgb(img)), models.identity_embedding(bgr_to_rgb(img2))
    if restored is None or truth is None:
        return math.nan
    return IDS_MEASURES[measure][0](restored, truth)


@register(METRIC_REGISTRY)
def calculate_lmd(img: np.ndarray, img2: np.ndarray, backend: str = 'dlib', weights_dir: Optional[str] = None,
                  face_box: str = 'aligned', device: str = 'auto', better: str = 'lower', **unknown) -> float:
    """LMD: mean distance in pixels between the 68 landmarks of the restored face and of the ground truth."""
    check_keys('calculate_lmd', unknown, _FACE_KEYS)
    check_better('calculate_lmd', better)
    models = face_models.build_face_models(backend, weights_dir, face_box, resolve_device(device))
    restored, truth = models.landmarks_68(bgr_to_rgb(img)), models.landmarks_68(bgr_to_rgb(img2))
    if restored is None or truth is None:
        return math.nan
    return face_models.landmark_distance(restored, truth)


def face_backend_name(backend: str = 'dlib', weights_dir: Optional[str] = None, face_box: str = 'aligned',
                      device: str = 'auto') -> str:
    """The backend actually used for these options (``auto`` resolved), as written in results tables."""
    return face_models.build_face_models(backend, weights_dir, face_box, resolve_device(device)).backend
