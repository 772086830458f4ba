"""Per-image quality metrics for the hybrid annotation: a registry of named metrics and the preset sets.

The paper (arXiv 2505.17910, §3.1 / App. A.1) computes six quality metrics per image, concatenates both images'
values into a 12-D pair feature and fits an SVM on human-labelled pairs; it does not say which six. Our default
six are face-relevant, run on a CPU, and need no weight file:

==========================  ======  =====================================================================
name                        better  what it measures
==========================  ======  =====================================================================
``niqe``                    lower   naturalness (BasicSR's NIQE with its shipped parameters, Y channel)
``sharpness``               higher  log(1 + variance of the Laplacian) of the grey image: blur, downsampling
``noise_sigma``             lower   Immerkær's noise standard deviation estimate: additive noise
``blockiness``              lower   JPEG blocking: mean jump across 8-px block edges / mean jump elsewhere
``identity_similarity``     higher  cosine of the face identity embeddings (dlib 128-D), image vs. reference
``landmark_distance``       lower   mean distance of the 68 face landmarks (LMD), image vs. reference
==========================  ======  =====================================================================

The two fidelity metrics compare an image with the pair's ``reference`` image, or with the other image of the
pair when there is none (then both images get the same value). They come from
:mod:`drward.metrics.face_models` — dlib-bin + face-recognition-models by default (no download at run time),
facexlib's ArcFace/FAN with local weights as an option (:class:`FaceModelOptions`). A face that is not found gives
``nan``, which the pair feature imputes with the fitted mean (:mod:`drward.annotate.features`).

Also registered: ``colourfulness`` (Hasler–Süsstrunk), ``hf_energy`` (log share of spectral power above a
quarter of the sampling rate) and any pyiqa metric as ``pyiqa:<name>`` (e.g. ``pyiqa:musiq``,
``pyiqa:topiq_nr-face``), which needs a local weight file (``pretrained_model_path``) and the ``pyiqa`` package.
Presets: ``default`` (above), ``no_face`` (no dlib needed), ``learned`` (pyiqa MUSIQ + TOPIQ-face + four of the
default set). Any list of registered names may be used instead.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np

from drward.face.dlib_models import memo_by_content
from drward.metrics import face_models
from drward.utils.options import OptionError, require_file
from drward.utils.safe_load import forced_weights_only

MetricFn = Callable[[np.ndarray, Optional[np.ndarray]], float]

METRIC_SETS: Dict[str, tuple] = {
    'default': ('niqe', 'sharpness', 'noise_sigma', 'blockiness', 'identity_similarity', 'landmark_distance'),
    'no_face': ('niqe', 'sharpness', 'noise_sigma', 'blockiness', 'colourfulness', 'hf_energy'),
    'learned': ('pyiqa:musiq', 'pyiqa:topiq_nr-face', 'niqe', 'sharpness', 'identity_similarity',
                'landmark_distance'),
}
PYIQA_PREFIX = 'pyiqa:'
NIQE_MIN_SIDE = 192  # NIQE's 96-px blocks: fewer than two per side give no usable statistics


@dataclasses.dataclass(frozen=True)
class QualityMetric:
    """A named per-image metric. ``compute(image, reference)`` takes RGB uint8 (H, W, 3) arrays."""

    name: str
    higher_is_better: bool
    needs_reference: bool
    compute: MetricFn
    version: str = '1'  # part of the cache key: bump it when the formula changes


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)


def niqe(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
    """NIQE (Mittal et al.) on the Y channel with BasicSR's parameters; short sides < 192 px are upscaled."""
    from basicsr.metrics.niqe import calculate_niqe

    height, width = image.shape[:2]
    if min(height, width) < NIQE_MIN_SIDE:
        factor = NIQE_MIN_SIDE / min(height, width)
        size = (max(NIQE_MIN_SIDE, round(width * factor)), max(NIQE_MIN_SIDE, round(height * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(image[..., ::-1])
    return float(calculate_niqe(bgr, 0, input_order='HWC', convert_to='y'))


def sharpness(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
    """``log(1 + Var(∇²I))``: variance of the grey image's Laplacian, log-compressed."""
    return float(np.log1p(cv2.Laplacian(_grey(image), cv2.CV_64F).var()))


def noise_sigma(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
    """Immerkær (1996): ``σ = sqrt(π/2) · Σ|I ∗ M| / (6 (W−2)(H−2))`` with M the 3×3 difference-of-Laplacians."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = cv2.filter2D(_grey(image), cv2.CV_64F, mask)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6.0 * response.size))


def blockiness(image: np.ndarray, reference: Optional[np.ndarray] = None, block: int = 8) -> float:
    """Mean absolute step across ``block``-px grid lines over the mean step elsewhere (≈ 1: no blocking)."""
    grey = _grey(image)
    ratios = []
    for steps in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        on_edge = (np.arange(steps.shape[1]) % block) == block - 1
        ratios.append(steps[:, on_edge].mean() / (steps[:, ~on_edge].mean() + 1e-6))
    return float(np.mean(ratios))


def colourfulness(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
    """Hasler & Süsstrunk (2003): ``sqrt(σ_rg² + σ_yb²) + 0.3 sqrt(μ_rg² + μ_yb²)``, rg = R−G, yb = (R+G)/2 − B."""
    red, green, blue = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def hf_energy(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
    """``log10`` of the share of spectral power at radial frequencies above 0.25 cycles/pixel."""
    grey = _grey(image)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(grey.shape[0]), np.fft.fftfreq(grey.shape[1]), indexing='ij')
    high = power[np.hypot(fx, fy) > 0.25].sum()
    return float(np.log10(high / (power.sum() + 1e-12) + 1e-12))


@dataclasses.dataclass(frozen=True)
class FaceModelOptions:
    """Which face models the fidelity metrics use (:func:`drward.metrics.face_models.build_face_models`)."""

    backend: str = 'dlib'
    face_box: str = 'detect'
    weights_dir: Optional[str] = None


def _face_models(options: FaceModelOptions):
    return face_models, face_models.build_face_models(options.backend, options.weights_dir, options.face_box)


def _face_fidelity_metric(options: FaceModelOptions, name: str, higher_is_better: bool, extract: str,
                          measure: str) -> QualityMetric:
    """``measure(extract(image), extract(reference))`` with the face models' ``extract`` (memoised by content)
    and :mod:`drward.metrics.face_models`' ``measure``; nan when either face is not found."""
    face_models, models = _face_models(options)
    extract_fn, measure_fn = memo_by_content(getattr(models, extract)), getattr(face_models, measure)

    def compute(image: np.ndarray, reference: Optional[np.ndarray]) -> float:
        found_image, found_ref = extract_fn(image), extract_fn(reference)
        if found_image is None or found_ref is None:
            return float('nan')
        return measure_fn(found_image, found_ref)

    return QualityMetric(name, higher_is_better, True, compute, version=f'1:{models.backend}')


def identity_similarity_metric(options: FaceModelOptions) -> QualityMetric:
    """``cos(e_I, e_ref)`` of the face identity embeddings of image and reference; nan if a face is missing."""
    return _face_fidelity_metric(options, 'identity_similarity', True, 'identity_embedding', 'identity_similarity')


def landmark_distance_metric(options: FaceModelOptions) -> QualityMetric:
    """LMD ``(1/68) Σ_k ‖p_k^I − p_k^ref‖₂`` between the 68 landmarks of image and reference; nan if none found."""
    return _face_fidelity_metric(options, 'landmark_distance', False, 'landmarks_68', 'landmark_distance')


FACE_METRIC_BUILDERS = {'identity_similarity': identity_similarity_metric,
                        'landmark_distance': landmark_distance_metric}


_REGISTRY = {
    'niqe': QualityMetric('niqe', False, False, niqe),
    'sharpness': QualityMetric('sharpness', True, False, sharpness),
    'noise_sigma': QualityMetric('noise_sigma', False, False, noise_sigma),
    'blockiness': QualityMetric('blockiness', False, False, blockiness),
    'colourfulness': QualityMetric('colourfulness', True, False, colourfulness),
    'hf_energy': QualityMetric('hf_energy', True, False, hf_energy),
}


def register_metric(metric: QualityMetric) -> None:
    """Add a metric to the registry (a user's own metric, or a test double)."""
    _REGISTRY[metric.name] = metric


def registered_metric_names() -> List[str]:
    return sorted(set(_REGISTRY) | set(FACE_METRIC_BUILDERS)) + [f'{PYIQA_PREFIX}<name>']


def _pyiqa_metric(name: str, weight_path: Optional[str]) -> QualityMetric:
    """A pyiqa metric with local weights: ``pyiqa.create_metric(name, pretrained_model_path=weight_path)``."""
    pyiqa_name = name[len(PYIQA_PREFIX):]
    if not weight_path:
        raise OptionError(f'metric {name} needs a local weight file: pass --metric-weights {name}=PATH')
    require_file(weight_path, f'metric_weights.{name}')
    try:  # pyiqa: a heavy optional dependency, imported when a pyiqa metric is chosen
        import pyiqa
        import torch
    except ImportError:
        raise ImportError(f'metric {name} needs the pyiqa package (pip install pyiqa==0.1.16)') from None
    with forced_weights_only():  # some pyiqa archs read their file with weights_only=False
        model = pyiqa.create_metric(pyiqa_name, as_loss=False, device='cpu', pretrained_model_path=weight_path)

    def compute(image: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return float(model(tensor).item())

    return QualityMetric(name, not model.lower_better, False, compute, version=f'1:{weight_path}')


def expand_metric_names(names: Sequence[str] | str) -> List[str]:
    """A preset name (``'default'``), a comma-separated string, or a list → the list of metric names."""
    if isinstance(names, str):
        names = list(METRIC_SETS[names]) if names in METRIC_SETS else [n.strip() for n in names.split(',')]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise OptionError(f'metric list has duplicates: {names}')
    return names


def build_metrics(names: Sequence[str] | str, weights: Optional[Mapping[str, str]] = None,
                  face: Optional[FaceModelOptions] = None) -> List[QualityMetric]:
    """Build the metrics named (preset or list); ``weights`` maps a learned metric's name to its local file;
    ``face`` chooses the face models of the fidelity metrics (dlib with detection by default)."""
    weights = dict(weights or {})
    names = expand_metric_names(names)
    unused = sorted(set(weights) - set(names))
    if unused:
        raise OptionError(f'weights given for metric(s) {unused} that are not in the metric list {names}')
    metrics = []
    for name in names:
        if name.startswith(PYIQA_PREFIX):
            metrics.append(_pyiqa_metric(name, weights.get(name)))
        elif name in _REGISTRY:
            metrics.append(_REGISTRY[name])
        elif name in FACE_METRIC_BUILDERS:
            metrics.append(FACE_METRIC_BUILDERS[name](face or FaceModelOptions()))
        else:
            raise OptionError(f'unknown quality metric {name!r}; registered: {registered_metric_names()}; '
                              f'presets: {sorted(METRIC_SETS)}')
    return metrics
