"""The truncated DDIM sampler shared by every restorer (DESIGN.md §1 "Truncated ReFL step", §5).

DDIM over K uniformly spaced timesteps t_0 > t_1 > … > t_{K−1} (K = 50: 981, 961, …, 1), no guidance. One update
from index i (timestep t, ``ᾱ_t``) to the next (``ᾱ_prev``; ``ᾱ_0`` after the last step, i.e. diffusers'
``set_alpha_to_one=False``), with ε = g_θ(z_t, t):

    ẑ_0    = (z_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t)
    σ_t(η) = η·sqrt((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev))
    z_prev = sqrt(ᾱ_prev)·ẑ_0 + sqrt(1 − ᾱ_prev − σ_t²)·ε + σ_t·n,   n ~ N(0, I)

Inference (``grad_steps = 0``) runs all K updates without gradient, η = 1 by default, and returns the final latent.
Training (``grad_steps = N ≥ 1``) picks a stop index s among the last M indices, runs indices < s − N + 1 under
``torch.no_grad()`` (no activations kept), calls the denoiser with gradient at indices s − N + 1 … s (in the
caller's grad mode), and at s returns ``ẑ_0`` from that call's ε directly (the paper's N = 1 is one gradient-enabled
call). η ~ U(0, 1) is drawn
once per :meth:`TruncatedDDIMSampler.sample` call unless given (or per update with ``eta_per_update=True``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import torch

from drward.diffusion.schedule import leading_timesteps, predict_x0, sd_alphas_cumprod

#: ``denoise(z_t, t, with_grad) -> ε``: z_t (B, C, h, w), t (B,) int64 model timesteps; ``with_grad`` tells the
#: restorer that this call is inside the gradient window (so it can also compute what ``L_reg`` needs).
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass
class SampleOutput:
    """What one :meth:`TruncatedDDIMSampler.sample` call returns.

    Attributes:
        latent: training: ``ẑ_0`` predicted at the stop step (differentiable through the last ``grad_calls``
            denoiser calls); inference: the latent after all K updates. float32 (or float64 for float64 input).
        stop_index: index s into :attr:`TruncatedDDIMSampler.timesteps` of the last denoiser call (K − 1 at
            inference).
        stop_timestep: the model timestep ``t_s`` of that call.
        eta: the DDIM η used (the mean of the drawn values when η is redrawn per update).
        grad_calls: how many denoiser calls ran with gradient enabled (0 at inference).
    """

    latent: torch.Tensor = field(repr=False)
    stop_index: int
    stop_timestep: int
    eta: float
    grad_calls: int

    def log_info(self) -> Dict[str, float]:
        """Scalars for a training log."""
        return {'stop_timestep': float(self.stop_timestep), 'eta': float(self.eta),
                'grad_calls': float(self.grad_calls)}


def ddim_sigma(alpha_t: float, alpha_prev: float, eta: float) -> float:
    """DDIM noise scale ``σ_t(η) = η·sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev))`` (Song et al., eq. 16)."""
    return eta * ((1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev)) ** 0.5


def ddim_update(z_t: torch.Tensor, eps: torch.Tensor, alpha_t: float, alpha_prev: float, sigma: float = 0.0,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One DDIM update ``z_prev = sqrt(ᾱ_prev)·ẑ_0 + sqrt(1 − ᾱ_prev − σ²)·ε + σ·n`` (``noise`` = n, needed if σ > 0)."""
    x0 = predict_x0(z_t, eps, alpha_t)
    direction = max(1.0 - alpha_prev - sigma ** 2, 0.0) ** 0.5
    z_prev = alpha_prev ** 0.5 * x0 + direction * eps.to(x0.dtype)
    if sigma > 0:
        if noise is None:
            raise ValueError('ddim_update: sigma > 0 needs a noise tensor')
        z_prev = z_prev + sigma * noise.to(x0.dtype)
    return z_prev


def _randn_like(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """N(0, I) shaped like ``like``, drawn on the generator's device (seeded ⇒ reproducible), then moved."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _uniform01(generator: Optional[torch.Generator]) -> float:
    device = generator.device if generator is not None else 'cpu'
    return float(torch.rand((), generator=generator, device=device, dtype=torch.float64))


class TruncatedDDIMSampler:
    """DDIM sampling with gradient through the last N denoiser calls only (see the module docstring).

    Args:
        num_steps: K, the number of DDIM steps (uniform "leading" spacing, offset 1: 50 → 981, …, 21, 1).
        stop_window: M, the stop index is drawn uniformly among the last M indices (official: 2 → t ∈ {21, 1}).
        eta_train: ``'uniform'`` (η ~ U(0, 1), official) or a fixed float η ≥ 0 for training calls.
        eta_infer: η at inference (official: 1).
        num_train_timesteps, beta_start, beta_end: the SD schedule (:func:`sd_alphas_cumprod`).
        eta_per_update: with ``eta_train='uniform'``, draw a fresh η for every DDIM update of a training call
            instead of once per call.
    """

    def __init__(self, num_steps: int = 50, stop_window: int = 2, eta_train: Union[str, float] = 'uniform',
                 eta_infer: float = 1.0, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012, eta_per_update: bool = False) -> None:
        self.alphas_cumprod = sd_alphas_cumprod(num_train_timesteps, beta_start, beta_end)
        self.timesteps = leading_timesteps(num_steps, num_train_timesteps, offset=1)
        if not 1 <= stop_window <= num_steps:
            raise ValueError(f'stop_window must be in [1, num_steps={num_steps}], got {stop_window}')
        if isinstance(eta_train, str) and eta_train != 'uniform':
            raise ValueError(f"eta_train must be 'uniform' or a float >= 0, got {eta_train!r}")
        self.num_steps = num_steps
        self.stop_window = stop_window
        self.eta_train = eta_train if isinstance(eta_train, str) else _checked_eta(eta_train)
        self.eta_infer = _checked_eta(eta_infer)
        self.eta_per_update = bool(eta_per_update)
        # ᾱ at each index and at the index after it (ᾱ_0 after the last one), as Python floats (float64 values).
        self.alpha_t: List[float] = self.alphas_cumprod[self.timesteps].tolist()
        self.alpha_prev: List[float] = self.alpha_t[1:] + [float(self.alphas_cumprod[0])]

    # -- random draws ------------------------------------------------------------------------------------------
    def draw_stop_index(self, generator: Optional[torch.Generator] = None) -> int:
        """A stop index s uniform among the last M indices, {K − M, …, K − 1}."""
        device = generator.device if generator is not None else 'cpu'
        low = self.num_steps - self.stop_window
        return int(torch.randint(low, self.num_steps, (), generator=generator, device=device))

    def draw_eta(self, generator: Optional[torch.Generator] = None) -> float:
        """η for a training call: U(0, 1) when ``eta_train == 'uniform'``, else the fixed value."""
        if self.eta_train == 'uniform':
            return _uniform01(generator)
        return float(self.eta_train)

    # -- sampling ----------------------------------------------------------------------------------------------
    def sample(self, denoise: DenoiseFn, z_T: torch.Tensor, grad_steps: int = 0, stop_index: Optional[int] = None,
               eta: Optional[float] = None, generator: Optional[torch.Generator] = None) -> SampleOutput:
        """Run the chain from ``z_T`` (B, C, h, w).

        Args:
            denoise: ``denoise(z_t, t, with_grad) -> ε`` (see :data:`DenoiseFn`); may return bf16.
            z_T: the starting latent, usually N(0, I).
            grad_steps: N; 0 = inference (all K updates, no gradient, final latent), N ≥ 1 = training
                (``ẑ_0`` at the stop step, graph over the last N calls; N ≥ s + 1 keeps the whole chain).
            stop_index: training only: the stop index s in [0, K); drawn with :meth:`draw_stop_index` if None.
            eta: DDIM η; default ``eta_infer`` at inference, :meth:`draw_eta` in training.
            generator: drives every random draw (stop index, η, DDIM noise), in that order.
        """
        if grad_steps < 0:
            raise ValueError(f'grad_steps must be >= 0, got {grad_steps}')
        if grad_steps == 0:
            if stop_index is not None:
                raise ValueError('stop_index applies to training calls (grad_steps >= 1) only')
            return self._sample_inference(denoise, z_T, self.eta_infer if eta is None else _checked_eta(eta),
                                          generator)
        return self._sample_truncated(denoise, z_T, grad_steps, stop_index, eta, generator)

    def _sample_inference(self, denoise: DenoiseFn, z_T: torch.Tensor, eta: float,
                          generator: Optional[torch.Generator]) -> SampleOutput:
        z = _working_copy(z_T)
        with torch.no_grad():
            for index in range(self.num_steps):
                z = self._denoise_and_update(denoise, z, index, eta, generator, with_grad=False)
        last = self.num_steps - 1
        return SampleOutput(z, last, int(self.timesteps[last]), eta, grad_calls=0)

    def _sample_truncated(self, denoise: DenoiseFn, z_T: torch.Tensor, grad_steps: int,
                          stop_index: Optional[int], eta: Optional[float],
                          generator: Optional[torch.Generator]) -> SampleOutput:
        stop = self.draw_stop_index(generator) if stop_index is None else self._checked_index(stop_index)
        redraw = eta is None and self.eta_per_update and self.eta_train == 'uniform'
        call_eta = _checked_eta(eta) if eta is not None else (None if redraw else self.draw_eta(generator))
        used_etas: List[float] = []
        first_grad = max(0, stop - grad_steps + 1)
        z = _working_copy(z_T)
        with torch.no_grad():  # the prefix: no graph, no stored activations
            for index in range(first_grad):
                step_eta = self.draw_eta(generator) if redraw else call_eta
                used_etas.append(step_eta)
                z = self._denoise_and_update(denoise, z, index, step_eta, generator, with_grad=False)
        # the gradient window, in the caller's grad mode (a report restoring under no_grad records no graph)
        for index in range(first_grad, stop):
            step_eta = self.draw_eta(generator) if redraw else call_eta
            used_etas.append(step_eta)
            z = self._denoise_and_update(denoise, z, index, step_eta, generator, with_grad=True)
        eps = self._denoise(denoise, z, stop, with_grad=True)
        z0 = predict_x0(z, eps, self.alpha_t[stop])
        reported_eta = call_eta if call_eta is not None else (sum(used_etas) / len(used_etas) if used_etas else 0.0)
        return SampleOutput(z0, stop, int(self.timesteps[stop]), reported_eta, grad_calls=stop - first_grad + 1)

    # -- one step ----------------------------------------------------------------------------------------------
    def _denoise(self, denoise: DenoiseFn, z: torch.Tensor, index: int, with_grad: bool) -> torch.Tensor:
        t = torch.full((z.shape[0],), int(self.timesteps[index]), dtype=torch.int64, device=z.device)
        eps = denoise(z, t, with_grad)
        if eps.shape != z.shape:
            raise ValueError(f'denoiser returned shape {tuple(eps.shape)} for a latent of shape {tuple(z.shape)}')
        return eps.to(z.dtype)

    def _denoise_and_update(self, denoise: DenoiseFn, z: torch.Tensor, index: int, eta: float,
                            generator: Optional[torch.Generator], with_grad: bool) -> torch.Tensor:
        eps = self._denoise(denoise, z, index, with_grad)
        alpha_t, alpha_prev = self.alpha_t[index], self.alpha_prev[index]
        sigma = ddim_sigma(alpha_t, alpha_prev, eta)
        noise = _randn_like(z, generator) if sigma > 0 else None
        return ddim_update(z, eps, alpha_t, alpha_prev, sigma, noise)

    def _checked_index(self, stop_index: int) -> int:
        if not 0 <= stop_index < self.num_steps:
            raise ValueError(f'stop_index must be in [0, {self.num_steps}), got {stop_index}')
        return int(stop_index)


def _checked_eta(eta: float) -> float:
    eta = float(eta)
    if eta < 0:
        raise ValueError(f'DDIM eta must be >= 0, got {eta}')
    return eta


def _working_copy(z_T: torch.Tensor) -> torch.Tensor:
    """The chain runs in float32 (float64 stays float64), whatever dtype the denoiser computes in."""
    return z_T.to(torch.promote_types(z_T.dtype, torch.float32))
