"""Face detectors that return the template's five landmarks.

* :class:`FacexlibFaceDetector` — facexlib's RetinaFace-ResNet50 (the detector of FaceRestoreHelper / GFPGAN /
  DiffBIR), used when ``detection_Resnet50_Final.pth`` is present;
* :class:`DlibFaceDetector` — the offline fallback: dlib's HOG detector, then the 68-point shape predictor reduced
  to five points (:func:`drward.face.template.five_points_from_68`).

Both return :class:`DetectedFace` lists, best first, with landmarks in the template's order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from drward.face import dlib_models
from drward.face.template import five_points_from_68
from drward.utils.options import require_file
from drward.utils.safe_load import load_weights

RETINAFACE_FILE = 'detection_Resnet50_Final.pth'
DETECTOR_BACKENDS = ('auto', 'facexlib', 'dlib')


@dataclass
class DetectedFace:
    """One face: box ``(left, top, right, bottom)``, (5, 2) landmarks ``(x, y)`` and the detector's score."""

    box: Tuple[float, float, float, float]
    landmarks5: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class DlibFaceDetector:
    """dlib HOG detector + 68-point shape → five points. No weight download."""

    name = 'dlib (HOG detector, 68-point shape → 5 points)'

    def __init__(self, upsample: int = 1):
        self.upsample = upsample

    def detect(self, img_rgb: np.ndarray) -> List[DetectedFace]:
        faces = []
        for box, score in dlib_models.detect_boxes(img_rgb, self.upsample):
            points = dlib_models.landmarks_in_box(img_rgb, box)
            faces.append(DetectedFace(tuple(float(v) for v in box), five_points_from_68(points), score))
        return faces


class FacexlibFaceDetector:
    """facexlib's RetinaFace-ResNet50 loaded from a local file (no download)."""

    name = 'facexlib (RetinaFace-ResNet50)'

    def __init__(self, weights_path: str, device: str = 'cpu', conf_threshold: float = 0.8):
        from facexlib.detection.retinaface import RetinaFace  # optional backend: imported when chosen
        self.net = RetinaFace(network_name='resnet50', half=False, device=device)
        state = load_weights(require_file(weights_path, 'face_align.weights_dir'))
        self.net.load_state_dict({k[7:] if k.startswith('module.') else k: v for k, v in state.items()}, strict=True)
        self.net.eval()
        self.conf_threshold = conf_threshold

    def detect(self, img_rgb: np.ndarray) -> List[DetectedFace]:
        import torch
        with torch.no_grad():
            rows = self.net.detect_faces(np.ascontiguousarray(img_rgb[..., ::-1]), self.conf_threshold)
        faces = [DetectedFace(tuple(float(v) for v in row[:4]), np.asarray(row[5:15], np.float64).reshape(5, 2),
                              float(row[4])) for row in rows]
        return sorted(faces, key=lambda face: -face.score)


def build_face_detector(backend: str = 'auto', weights_dir: Optional[str] = 'weights/facexlib',
                        device: str = 'cpu'):
    """``'auto'``: RetinaFace when ``<weights_dir>/detection_Resnet50_Final.pth`` exists, else dlib."""
    if backend not in DETECTOR_BACKENDS:
        raise ValueError(f'face detector backend must be one of {DETECTOR_BACKENDS}, got {backend!r}')
    path = os.path.join(weights_dir or '', RETINAFACE_FILE)
    if backend == 'facexlib' or (backend == 'auto' and os.path.isfile(path)):
        return FacexlibFaceDetector(path, device)
    return DlibFaceDetector()


def select_faces(faces: List[DetectedFace], rule: str = 'all', min_size: float = 0.0) -> List[DetectedFace]:
    """Keep ``'all'`` faces, the ``'largest'`` or the ``'best'`` (top score); drop boxes under ``min_size``."""
    faces = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
    if not faces or rule == 'all':
        return faces
    if rule == 'largest':
        return [max(faces, key=lambda f: f.area)]
    if rule == 'best':
        return [faces[0]]
    raise ValueError(f"face selection must be 'all', 'largest' or 'best', got {rule!r}")
