"""Identity embeddings and facial landmarks: the models behind IDS and LMD (and the annotation features).

Two backends, same interface (:class:`FaceModels`):

* ``dlib`` (default, offline): the models of ``face-recognition-models`` — HOG detector, 68-point shape predictor,
  ResNet 128-D identity descriptor;
* ``facexlib``: ArcFace IR-SE50 (512-D) and the AWing FAN (98 points, reduced to 68 with facexlib's mapping),
  used when their weight files (``recognition_arcface_ir_se50.pth``, ``alignment_WFLW_4HG.pth``) are in
  ``weights_dir``; ``backend='auto'`` picks it when both are there and dlib otherwise.

Where the face is (``face_box``): ``'detect'`` runs the HOG detector and gives None when it finds nothing;
``'aligned'`` uses the fixed box of an FFHQ-aligned face (:data:`drward.face.template.ALIGNED_FACE_BOX`) —
the right choice for the aligned 512² test sets, where the detector can miss heavily degraded faces; ``'full'``
takes the whole image as the box (tight crops such as LFW thumbnails); ``'auto'`` detects and falls back to the
aligned box.

Measures (module functions):

* identity similarity ``cos(e_a, e_b)`` (higher = same person), identity distance ``‖e_a − e_b‖₂`` (dlib: same
  person below 0.6) and identity angle ``arccos(cos)`` in degrees (VQFR's "Deg.");
* landmark distance LMD ``= (1/68) Σ_k ‖p_k^a − p_k^b‖₂`` in pixels.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from drward.face import dlib_models
from drward.face.align import similarity_to_template, warp_face
from drward.face.template import ALIGNED_FACE_BOX, FULL_IMAGE_BOX, face_template, five_points_from_68, fractional_box
from drward.utils.options import require_file
from drward.utils.safe_load import load_weights

FACE_BOX_MODES = ('detect', 'aligned', 'full', 'auto')
BACKENDS = ('dlib', 'facexlib', 'auto')
ARCFACE_FILE = 'recognition_arcface_ir_se50.pth'
AWING_FILE = 'alignment_WFLW_4HG.pth'
DEFAULT_FACEXLIB_DIR = 'weights/facexlib'
# InsightFace's 112² ArcFace template (same five-point order as the FFHQ one).
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                                 [70.7299, 92.2041]])

Box = Tuple[int, int, int, int]


def _check_mode(face_box: str) -> str:
    if face_box not in FACE_BOX_MODES:
        raise ValueError(f'face_box must be one of {FACE_BOX_MODES}, got {face_box!r}')
    return face_box


def locate_face(img_rgb: np.ndarray, face_box: str = 'detect', upsample: int = 1) -> Optional[Box]:
    """The face box of ``img_rgb`` under the ``face_box`` rule (see module docstring); None if no face."""
    height, width = img_rgb.shape[:2]
    mode = _check_mode(face_box)
    if mode == 'full':
        return fractional_box(FULL_IMAGE_BOX, height, width)
    if mode == 'aligned':
        return fractional_box(ALIGNED_FACE_BOX, height, width)
    found = dlib_models.best_box(img_rgb, upsample)
    if found is None and mode == 'auto':
        return fractional_box(ALIGNED_FACE_BOX, height, width)
    return found


class FaceModels:
    """Interface: an identity embedding and 68 landmarks of the (main) face of an RGB uint8 image."""

    #: the backend's name, written in results tables
    backend: str = ''

    def identity_embedding(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        raise NotImplementedError

    def landmarks_68(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        raise NotImplementedError


class DlibFaceModels(FaceModels):
    """dlib's HOG detector, 68-point shape predictor and 128-D ResNet descriptor (no download)."""

    def __init__(self, face_box: str = 'detect', upsample: int = 1, num_jitters: int = 0):
        self.face_box = _check_mode(face_box)
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.backend = f'dlib (HOG, 68-point shape, ResNet-128 identity; face box: {face_box})'
        # identity and landmarks of one image (IDS and LMD, the annotation's two fidelity metrics) share its box
        self._box = dlib_models.memo_by_content(lambda img: locate_face(img, self.face_box, self.upsample), maxsize=8)

    def identity_embedding(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        box = self._box(img_rgb)
        return None if box is None else dlib_models.descriptor_in_box(img_rgb, box, self.num_jitters)

    def landmarks_68(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        box = self._box(img_rgb)
        return None if box is None else dlib_models.landmarks_in_box(img_rgb, box)


class FacexlibFaceModels(FaceModels):
    """facexlib's ArcFace IR-SE50 and AWing FAN (98 → 68 points), loaded lazily from ``weights_dir``.

    The landmark model sees the face box (enlarged by 10 %); the identity model sees the face warped from its five
    points (the FFHQ template for ``face_box='aligned'``, the landmarks otherwise) to ArcFace's 112²
    template, normalised to [-1, 1].
    """

    def __init__(self, weights_dir: str = DEFAULT_FACEXLIB_DIR, face_box: str = 'aligned', device: str = 'cpu'):
        self.arcface_path = os.path.join(weights_dir, ARCFACE_FILE)
        self.awing_path = os.path.join(weights_dir, AWING_FILE)
        self.face_box = _check_mode(face_box)
        self.device = device
        self.backend = f'facexlib (ArcFace IR-SE50, AWing FAN 98→68; face box: {face_box})'
        self._arcface = None
        self._awing = None
        # the identity model (unless face_box='aligned') and LMD both need an image's landmarks: fit them once
        self._landmarks = dlib_models.memo_by_content(self._fan_landmarks_68, maxsize=8)

    def _load_arcface(self):
        if self._arcface is None:
            from facexlib.recognition.arcface_arch import Backbone  # optional backend: imported when chosen
            net = Backbone(num_layers=50, drop_ratio=0.6, mode='ir_se')
            state = load_weights(require_file(self.arcface_path, 'face_models.weights_dir'))
            net.load_state_dict(state, strict=True)
            self._arcface = net.eval().to(self.device)
        return self._arcface

    def _load_awing(self):
        if self._awing is None:
            from facexlib.alignment import FAN  # optional backend: imported when chosen
            net = FAN(num_modules=4, num_landmarks=98, device=self.device)
            state = load_weights(require_file(self.awing_path, 'face_models.weights_dir'))
            net.load_state_dict(state['state_dict'], strict=True)
            self._awing = net.eval().to(self.device)
        return self._awing

    def landmarks_68(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        return self._landmarks(img_rgb)

    def _fan_landmarks_68(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        import torch
        from facexlib.alignment import landmark_98_to_68
        box = locate_face(img_rgb, self.face_box)
        if box is None:
            return None
        left, top, right, bottom = _enlarge(box, 0.1, *img_rgb.shape[:2])
        crop = np.ascontiguousarray(img_rgb[top:bottom + 1, left:right + 1, ::-1])  # FAN takes BGR
        with torch.no_grad():
            points98 = self._load_awing().get_landmarks(crop)
        return landmark_98_to_68(points98).astype(np.float64) + np.array([left, top], np.float64)

    def identity_embedding(self, img_rgb: np.ndarray) -> Optional[np.ndarray]:
        import torch
        if self.face_box == 'aligned':
            five = face_template(img_rgb.shape[1]) * np.array([1.0, img_rgb.shape[0] / img_rgb.shape[1]])
        else:
            points = self.landmarks_68(img_rgb)
            if points is None:
                return None
            five = five_points_from_68(points)
        chip = warp_face(img_rgb, similarity_to_template(five, ARCFACE_TEMPLATE_112), 112, border='reflect')
        tensor = torch.from_numpy(chip.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None].to(self.device)
        with torch.no_grad():
            return self._load_arcface()(tensor)[0].cpu().double().numpy()


def _enlarge(box: Box, ratio: float, height: int, width: int) -> Box:
    left, top, right, bottom = box
    pad_x, pad_y = (right - left) * ratio, (bottom - top) * ratio
    return (max(0, int(left - pad_x)), max(0, int(top - pad_y)), min(width - 1, int(right + pad_x)),
            min(height - 1, int(bottom + pad_y)))


def facexlib_weights_present(weights_dir: str) -> bool:
    """True when both facexlib weight files are in ``weights_dir``."""
    return all(os.path.isfile(os.path.join(weights_dir, name)) for name in (ARCFACE_FILE, AWING_FILE))


@lru_cache(maxsize=8)
def build_face_models(backend: str = 'dlib', weights_dir: Optional[str] = None, face_box: str = 'detect',
                      device: str = 'cpu') -> FaceModels:
    """The backend's models (cached per argument set). ``'auto'``: facexlib when its files are present, else dlib."""
    if backend not in BACKENDS:
        raise ValueError(f'face model backend must be one of {BACKENDS}, got {backend!r}')
    weights_dir = weights_dir or DEFAULT_FACEXLIB_DIR
    if backend == 'auto':
        backend = 'facexlib' if facexlib_weights_present(weights_dir) else 'dlib'
    models = FacexlibFaceModels(weights_dir, face_box, device) if backend == 'facexlib' else DlibFaceModels(face_box)
    _built.append(models)
    return models


_default_models: Optional[FaceModels] = None
_built: list = []  # every FaceModels build_face_models made (its lru_cache cannot be listed)


def cached_face_models() -> list:
    """The models :func:`build_face_models` holds in its cache now."""
    if build_face_models.cache_info().currsize == 0:
        _built.clear()
    return list(_built)


def configure_face_models(backend: str = 'dlib', weights_dir: Optional[str] = None, face_box: str = 'detect',
                          device: str = 'cpu') -> FaceModels:
    """Choose the models behind the module-level functions below; returns them."""
    global _default_models
    _default_models = build_face_models(backend, weights_dir, face_box, device)
    return _default_models


def get_face_models() -> FaceModels:
    """The models behind the module-level functions (dlib with detection unless configured)."""
    return _default_models if _default_models is not None else build_face_models()


def identity_embedding(img_rgb_uint8: np.ndarray) -> Optional[np.ndarray]:
    """Identity descriptor of the main face (dlib: 128-D; facexlib ArcFace: 512-D); None if no face."""
    return get_face_models().identity_embedding(img_rgb_uint8)


def landmarks_68(img_rgb_uint8: np.ndarray) -> Optional[np.ndarray]:
    """(68, 2) float landmarks ``(x, y)`` of the main face; None if no face."""
    return get_face_models().landmarks_68(img_rgb_uint8)


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity ``e_a·e_b / (‖e_a‖‖e_b‖)`` of two identity embeddings (1 = same direction)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance ``‖e_a − e_b‖₂`` (dlib's descriptors: same person below about 0.6)."""
    return float(np.linalg.norm(np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()))


def identity_angle(a: np.ndarray, b: np.ndarray) -> float:
    """``arccos(cos(e_a, e_b))`` in degrees (VQFR's identity "Deg."; 0 = same direction)."""
    return float(np.degrees(np.arccos(np.clip(identity_similarity(a, b), -1.0, 1.0))))


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """LMD: mean Euclidean distance between corresponding landmarks, ``(1/K) Σ_k ‖p_k^a − p_k^b‖₂``, in pixels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f'landmark sets differ in shape: {a.shape} vs {b.shape}')
    return float(np.linalg.norm(a - b, axis=-1).mean())
