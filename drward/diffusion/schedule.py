"""Stable Diffusion's noise schedule and the closed-form clean-latent prediction (docs/design.md §1).

SD 2.1 (and DiffBIR on top of it) uses the LDM "linear" schedule, which diffusers calls ``scaled_linear``:

    β_t = (linspace(sqrt(β_start), sqrt(β_end), T))_t²,   ᾱ_t = Π_{s≤t} (1 − β_s),

with β_start = 0.00085, β_end = 0.012, T = 1000 training timesteps, ε-prediction.
"""
from __future__ import annotations

from typing import Union

import torch

AlphaBar = Union[float, torch.Tensor]


def sd_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                      beta_end: float = 0.012) -> torch.Tensor:
    """``ᾱ_t`` for t = 0 … T−1 as a float64 tensor of shape (T,).

    β is a linspace of sqrt(β) squared (LDM ``linear`` = diffusers ``scaled_linear``), computed in float64 as LDM and
    DiffBIR do (diffusers computes the same values in float32).
    """
    if num_train_timesteps < 1:
        raise ValueError(f'num_train_timesteps must be >= 1, got {num_train_timesteps}')
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f'need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}')
    sqrt_betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - sqrt_betas ** 2, dim=0)


def leading_timesteps(num_steps: int, num_train_timesteps: int = 1000, offset: int = 1) -> torch.Tensor:
    """Descending model timesteps of a ``num_steps``-step sampler, uniform "leading" spacing plus ``offset``.

    ``t_i = (num_steps − 1 − i)·⌊T / num_steps⌋ + offset``; 50 steps → 981, 961, …, 21, 1 (DiffBIR's DDIM
    timesteps; diffusers ``timestep_spacing='leading', steps_offset=1``). Returned as int64, shape (num_steps,).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f'num_steps must be in [1, {num_train_timesteps}], got {num_steps}')
    stride = num_train_timesteps // num_steps
    timesteps = torch.arange(num_steps - 1, -1, -1, dtype=torch.int64) * stride + offset
    if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
        raise ValueError(f'{num_steps} steps with offset {offset} give timestep {int(timesteps[0])}, outside '
                         f'[0, {num_train_timesteps - 1}]; use fewer steps')
    return timesteps


def _as_batch_factor(alpha_bar_t: AlphaBar, like: torch.Tensor) -> torch.Tensor:
    """``ᾱ_t`` as a tensor that broadcasts over ``like`` (B, ...): a scalar, or (B,) reshaped to (B, 1, …, 1)."""
    alpha = torch.as_tensor(alpha_bar_t, dtype=like.dtype, device=like.device)
    if alpha.ndim == 1:
        alpha = alpha.reshape(-1, *([1] * (like.ndim - 1)))
    return alpha


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: AlphaBar) -> torch.Tensor:
    """Clean-latent prediction ``ẑ_0 = (z_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t)``.

    Args:
        z_t: noisy latent (B, C, h, w).
        eps: the denoiser's ε-prediction, same shape (any float dtype).
        alpha_bar_t: ``ᾱ_t`` as a Python float, a 0-d tensor, or a (B,) tensor (one value per sample).

    Returns:
        ``ẑ_0`` in the promoted dtype of ``z_t`` and ``eps``, at least float32 (bf16 ε is upcast).
    """
    dtype = torch.promote_types(torch.promote_types(z_t.dtype, eps.dtype), torch.float32)
    z_t, eps = z_t.to(dtype), eps.to(dtype)
    alpha = _as_batch_factor(alpha_bar_t, z_t)
    return (z_t - (1.0 - alpha).sqrt() * eps) / alpha.sqrt()
