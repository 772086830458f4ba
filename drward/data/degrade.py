"""The synthetic face degradation of DiffusionReward (docs/design.md §1, "Degradations").

``I_LQ = resize_up( JPEG_q( ↓_r( I_GT ⊛ k_σ ) + n_δ ) )``: a Gaussian blur kernel ``k_σ`` (size 41, isotropic or
anisotropic with probability 0.5 each, σ ∈ [0.1, 12]), a bilinear downsample by ``r ∈ [1, 12]``, Gaussian noise of
standard deviation ``δ ∈ [0, 15]`` (in 0–255 units), JPEG compression at quality ``q ∈ [30, 100]``, then a bilinear
resize back to the GT size. These are DiffBIR's stage-2 face settings (CodeFormer-style degradation), which the
paper trains with.

The building blocks are BasicSR's (``basicsr.data.degradations``): ``random_mixed_kernels`` draws the kernel,
``add_gaussian_noise`` adds the noise. The noise σ and the JPEG quality are drawn here (uniform, as BasicSR's
``random_add_*`` do) so that one draw is a plain value object, :class:`Degradation`, that other code (the annotation
tool) can build by hand to make controlled LQ variants. :func:`jpeg_compress` gives exactly BasicSR's
``add_jpg_compression`` result but hands OpenCV uint8 pixels and an integer quality: OpenCV 5 warns on every call
with BasicSR's float pixels and rejects the float quality of its ``random_add_jpg_compression``.

Images here are numpy ``(H, W, 3)`` float32 in [0, 1] in **BGR** order (OpenCV's, as BasicSR's functions assume;
JPEG's chroma handling depends on it); :func:`degrade_tensor` takes RGB torch tensors and converts.

Randomness comes from the global ``random`` / ``numpy.random`` generators, as in BasicSR (its data loader seeds
them per worker). Pass ``seed`` to draw from a fixed seed instead; the global state is restored afterwards.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from basicsr.data.degradations import add_gaussian_noise, bivariate_Gaussian, random_mixed_kernels

from drward.utils.option_schema import Choice, Int, ListOf, Num, Option

Range = Tuple[float, float]


@dataclass(frozen=True)
class DegradationSettings:
    """The ranges one degradation is drawn from; defaults are the paper's (DiffBIR stage-2 face settings).

    Attributes:
        blur_kernel_size: side of the blur kernel (odd).
        kernel_list / kernel_prob: kernel types for ``random_mixed_kernels`` and their probabilities.
        blur_sigma: range of the kernel's σ (both axes for anisotropic kernels).
        downsample_range: range of the downsampling factor ``r``.
        noise_range: range of the noise standard deviation ``δ`` in 0–255 units; ``None`` adds no noise.
        jpeg_range: range of the JPEG quality ``q``; ``None`` skips JPEG.
    """

    blur_kernel_size: int = 41
    kernel_list: Tuple[str, ...] = ('iso', 'aniso')
    kernel_prob: Tuple[float, ...] = (0.5, 0.5)
    blur_sigma: Range = (0.1, 12.0)
    downsample_range: Range = (1.0, 12.0)
    noise_range: Optional[Range] = (0.0, 15.0)
    jpeg_range: Optional[Range] = (30.0, 100.0)

    def __post_init__(self) -> None:
        if self.blur_kernel_size % 2 != 1 or self.blur_kernel_size < 1:
            raise ValueError(f'blur_kernel_size must be a positive odd number, got {self.blur_kernel_size}')
        if len(self.kernel_list) != len(self.kernel_prob) or not self.kernel_list:
            raise ValueError(f'kernel_list {self.kernel_list} and kernel_prob {self.kernel_prob} must pair up')
        for name in ('blur_sigma', 'downsample_range', 'noise_range', 'jpeg_range'):
            _check_range(name, getattr(self, name), optional=name in ('noise_range', 'jpeg_range'))
        if self.downsample_range[0] < 1:
            raise ValueError(f'downsample_range must start at 1 or more, got {self.downsample_range}')

    @classmethod
    def option_keys(cls) -> Tuple[str, ...]:
        """The option-file keys that set these fields (the field names)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def declared(cls) -> Dict[str, Option]:
        """The fields as dataset option keys: spec and help from :data:`_FIELD_SPECS`, default the field's own."""
        return {f.name: Option(_FIELD_SPECS[f.name][0], f.default, _FIELD_SPECS[f.name][1]) for f in fields(cls)}

    @classmethod
    def from_options(cls, opt: Mapping[str, Any]) -> 'DegradationSettings':
        """Build from an option dict, taking the keys of :meth:`option_keys` that are present."""
        given = {key: opt[key] for key in cls.option_keys() if key in opt}
        for key, value in given.items():
            if isinstance(value, list):
                given[key] = tuple(value)
        return cls(**given)


_RANGE = ListOf(Num(0), length=2, nullable=True)
#: Spec and help of each :class:`DegradationSettings` field (its default is the field's).
_FIELD_SPECS = {
    'blur_kernel_size': (Int(1), 'side of the blur kernel (odd)'),
    'kernel_list': (ListOf(Choice('iso', 'aniso')), 'blur kernel types'),
    'kernel_prob': (ListOf(Num(0, 1)), 'their probabilities'),
    'blur_sigma': (ListOf(Num(0), length=2), "[low, high] of the kernel's sigma"),
    'downsample_range': (ListOf(Num(1), length=2), '[low, high] of the downsampling factor r'),
    'noise_range': (_RANGE, '[low, high] of the noise sigma in 0-255 units (~: no noise)'),
    'jpeg_range': (ListOf(Int(1, 100), length=2, nullable=True), '[low, high] JPEG quality (~: no JPEG)'),
}


def _check_range(name: str, value: Optional[Sequence[float]], optional: bool) -> None:
    if value is None and optional:
        return
    if value is None or len(value) != 2 or value[0] > value[1]:
        raise ValueError(f'{name} must be a [low, high] pair with low <= high, got {value}')


@dataclass
class Degradation:
    """One drawn degradation: kernel ``k``, downsample factor ``r``, noise ``δ`` (0–255 units), JPEG quality ``q``.

    ``noise_sigma = 0`` adds no noise; ``jpeg_quality = None`` skips JPEG.
    """

    kernel: np.ndarray
    scale: float
    noise_sigma: float = 0.0
    jpeg_quality: Optional[int] = None


def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: Optional[float] = None,
                    theta: float = 0.0) -> np.ndarray:
    """A normalised Gaussian blur kernel (BasicSR's ``bivariate_Gaussian``); isotropic when ``sigma_y`` is None."""
    isotropic = sigma_y is None
    return bivariate_Gaussian(kernel_size, sigma_x, sigma_x if isotropic else sigma_y, theta, isotropic=isotropic)


#: Kernel weight :func:`crop_kernel` may leave out: below float32's resolution of pixels in [0, 1] (eps 1.2e-7).
BLUR_TOLERANCE = 1e-7


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img ⊛ k``: ``cv2.filter2D(img, -1, k)`` (correlation, reflect-101 borders) computed the cheap way for ``k``.

    Two rewrites that change the result only by float32 rounding (≤ 1e-6 on images in [0, 1], where filter2D's own
    DFT path rounds too; ``tests/test_data_lmdb.py``), 5× faster for an isotropic 41² kernel at 512²
    (``benchmarks/data_pipeline.py``):

    * the kernel's outer rings whose absolute weights sum to at most the tolerance are cropped (small σ);
    * a separable kernel ``k = a bᵀ`` (every isotropic Gaussian; the rank-1 test is ``k = r cᵀ / Σk`` with the row
      and column sums ``r``, ``c``, to 1e-9 of its peak) runs as two 1-D passes (``cv2.sepFilter2D``); OpenCV
      would otherwise take its DFT path for any kernel over 11².
    """
    kernel = crop_kernel(np.asarray(kernel, dtype=np.float64))
    rows, cols = kernel.sum(axis=1), kernel.sum(axis=0)
    total = kernel.sum()
    if total != 0 and np.abs(np.outer(rows, cols) / total - kernel).max() <= 1e-9 * np.abs(kernel).max():
        return cv2.sepFilter2D(img, -1, (cols / total).astype(np.float32), rows.astype(np.float32))
    return cv2.filter2D(img, -1, kernel.astype(np.float32))


def crop_kernel(kernel: np.ndarray, tolerance: float = BLUR_TOLERANCE) -> np.ndarray:
    """``kernel`` without its outer rings whose absolute weights sum to at most ``tolerance`` (centre kept)."""
    size = kernel.shape[0]
    if kernel.shape != (size, size) or size % 2 != 1:
        return kernel
    magnitude, margin = np.abs(kernel), 0
    while margin < size // 2:
        inner = magnitude[margin + 1:size - margin - 1, margin + 1:size - margin - 1].sum()
        if magnitude.sum() - inner > tolerance:
            break
        margin += 1
    return kernel[margin:size - margin, margin:size - margin]


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-compress a BGR float image in [0, 1] at ``quality`` (pixels rounded to 8 bits first), float32 back."""
    pixels = np.clip(np.round(np.clip(img, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode('.jpg', pixels, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f'OpenCV failed to JPEG-encode an image of shape {img.shape} at quality {quality}')
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR).astype(np.float32) / 255.0


def sample_degradation(settings: DegradationSettings = DegradationSettings()) -> Degradation:
    """Draw one :class:`Degradation` from ``settings`` with the global RNGs (as BasicSR's data pipeline does)."""
    sigma = settings.blur_sigma
    if sigma[0] == sigma[1]:  # BasicSR asserts a strict range; a fixed σ is an isotropic kernel
        kernel = gaussian_kernel(settings.blur_kernel_size, float(sigma[0]))
    else:
        kernel = random_mixed_kernels(list(settings.kernel_list), list(settings.kernel_prob),
                                      settings.blur_kernel_size, sigma, sigma, (-math.pi, math.pi), noise_range=None)
    scale = float(np.random.uniform(*settings.downsample_range))
    noise_sigma = 0.0 if settings.noise_range is None else float(np.random.uniform(*settings.noise_range))
    quality = None if settings.jpeg_range is None else int(np.random.uniform(*settings.jpeg_range))
    return Degradation(kernel=kernel, scale=scale, noise_sigma=noise_sigma, jpeg_quality=quality)


def apply_degradation(img: np.ndarray, degradation: Degradation) -> np.ndarray:
    """Apply ``degradation`` to a BGR ``(H, W, 3)`` float32 image in [0, 1]; the result has the input's size.

    The noise itself is drawn from the global numpy RNG (BasicSR's ``add_gaussian_noise``).
    """
    height, width = img.shape[:2]
    lq = blur(img.astype(np.float32), degradation.kernel)
    small = (max(1, int(width // degradation.scale)), max(1, int(height // degradation.scale)))
    lq = cv2.resize(lq, small, interpolation=cv2.INTER_LINEAR)
    if degradation.noise_sigma > 0:
        lq = add_gaussian_noise(lq, sigma=degradation.noise_sigma, clip=True, rounds=False)
    if degradation.jpeg_quality is not None:
        lq = jpeg_compress(lq, degradation.jpeg_quality)
    lq = cv2.resize(lq, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(lq, 0.0, 1.0).astype(np.float32)


@contextmanager
def seeded_global_rng(seed: Optional[int]) -> Iterator[None]:
    """Seed ``random`` and ``numpy.random`` for the block and restore their previous states after it.

    With ``seed=None`` the block uses (and advances) the global generators unchanged.
    """
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def degrade(img: np.ndarray, settings: DegradationSettings = DegradationSettings(),
            seed: Optional[int] = None) -> Tuple[np.ndarray, Degradation]:
    """Draw a degradation from ``settings`` and apply it to a BGR float32 image; returns ``(I_LQ, degradation)``."""
    with seeded_global_rng(seed):
        degradation = sample_degradation(settings)
        return apply_degradation(img, degradation), degradation


def degrade_tensor(img: torch.Tensor, settings: DegradationSettings = DegradationSettings(),
                   seed: Optional[int] = None) -> torch.Tensor:
    """:func:`degrade` for RGB tensors ``(3, H, W)`` or ``(B, 3, H, W)`` in [0, 1]; same shape, dtype and device.

    In a batch, item ``i`` uses ``seed + i`` when ``seed`` is given.
    """
    if img.dim() == 3:
        return degrade_tensor(img.unsqueeze(0), settings, seed)[0]
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f'degrade_tensor expects (3, H, W) or (B, 3, H, W) RGB images, got {tuple(img.shape)}')
    outputs = []
    for i, item in enumerate(img.detach().float().cpu()):
        bgr = item.permute(1, 2, 0).numpy()[..., ::-1].copy()
        lq, _ = degrade(bgr, settings, None if seed is None else seed + i)
        outputs.append(torch.from_numpy(lq[..., ::-1].copy()).permute(2, 0, 1))
    return torch.stack(outputs).to(device=img.device, dtype=img.dtype)
