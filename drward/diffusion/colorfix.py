"""Colour fixes applied after inference: DiffBIR's wavelet correction against the stage-1 output, and OSEDiff's
AdaIN alternative (:func:`adain_color_fix`).

A Laplacian-pyramid-like split with an "à trous" blur: level i blurs with the 3×3 binomial kernel
``[1, 2, 1]ᵀ[1, 2, 1] / 16`` dilated by ``2^i`` (replicate padding). After L levels the low-frequency part is
``low(x) = B_{L−1}(… B_0(x))`` and the high-frequency part (the sum of the per-level details) telescopes to
``x − low(x)``. The fix keeps the restored image's details and takes its colours from the reference:

    fixed = (image − low(image)) + low(reference)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BINOMIAL_3 = (0.25, 0.5, 0.25)


def dilated_binomial_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise 3×3 binomial blur of (B, C, H, W) with the given dilation and replicate padding (same size)."""
    taps = torch.tensor(_BINOMIAL_3, dtype=image.dtype, device=image.device)
    kernel = torch.outer(taps, taps).expand(image.shape[1], 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode='replicate')
    return F.conv2d(padded, kernel, groups=image.shape[1], dilation=dilation)


def wavelet_low_pass(image: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The low-frequency residual after ``levels`` dilated blurs (dilations 1, 2, 4, …, 2^(levels−1))."""
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    low = image
    for level in range(levels):
        low = dilated_binomial_blur(low, 2 ** level)
    return low


def wavelet_color_fix(image: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep ``image``'s high frequencies and take the low frequencies (colour, shading) from ``reference``.

    Args:
        image: restored images (B, C, H, W), any value range.
        reference: the colour reference (B, C, H', W') in the same range as ``image`` (DiffBIR: the stage-1
            output); resized (bicubic) to H×W when the sizes differ.
        levels: number of blur levels (DiffBIR: 5).

    Returns:
        ``(image − low(image)) + low(reference)``, shape and dtype of ``image``.
    """
    if image.ndim != 4 or reference.ndim != 4 or image.shape[:2] != reference.shape[:2]:
        raise ValueError(f'wavelet_color_fix needs (B, C, H, W) tensors with equal B and C, got '
                         f'{tuple(image.shape)} and {tuple(reference.shape)}')
    reference = reference.to(device=image.device, dtype=image.dtype)
    if reference.shape[-2:] != image.shape[-2:]:
        reference = F.interpolate(reference, size=image.shape[-2:], mode='bicubic', align_corners=False,
                                  antialias=True)
    return image - wavelet_low_pass(image, levels) + wavelet_low_pass(reference, levels)


def adain_color_fix(image: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per image and channel, ``image``'s mean and standard deviation replaced by ``reference``'s:
    ``(x − μ_x)/σ_x · σ_ref + μ_ref`` (OSEDiff's ``adain_color_fix``)."""
    mean, std = image.mean(dim=(-2, -1), keepdim=True), (image.var(dim=(-2, -1), keepdim=True) + eps).sqrt()
    ref_mean = reference.mean(dim=(-2, -1), keepdim=True)
    ref_std = (reference.var(dim=(-2, -1), keepdim=True) + eps).sqrt()
    return (image - mean) / std * ref_std + ref_mean
