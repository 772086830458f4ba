"""The truncated DDIM sampler shared by every restorer (docs/design.md §1 and Cost).

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
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from drward.diffusion import row_noise
from drward.diffusion.row_noise import Generators
from drward.diffusion.schedule import leading_timesteps, predict_x0, sd_alphas_cumprod

#: ``denoise(z_t, t, with_grad) -> ε``: z_t (B, C, h, w), t (B,) int64 model timesteps; ``with_grad`` tells the
#: restorer that this call is inside the gradient window (so it can also compute what ``L_reg`` needs).
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
#: ``denoise_rows(z_t, t, rows) -> ε`` without gradient, for the batched prefix: ``rows`` (int64, on z_t's device) are
#: the positions of z_t's samples in the concatenated batch of every chain (to pick each sample's condition).
RowsDenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ChainDraws:
    """Every random draw of one training chain after ``z_T`` (:meth:`TruncatedDDIMSampler.draw_chain`).

    Attributes:
        stop_index: s, the index of the last (gradient-enabled) denoiser call.
        first_grad: the first index of the gradient window, ``max(0, s − N + 1)``; the prefix is the indices before.
        etas: η of the update at each index i < s.
        noises: the DDIM noise n of the update at each index i < s (None where σ_t(η) = 0).
        reported_eta: the η logged (the drawn one, or the mean of the per-update draws).
    """

    stop_index: int
    first_grad: int
    etas: List[float]
    noises: List[Optional[torch.Tensor]] = field(repr=False)
    reported_eta: float


@dataclass
class PrefixState:
    """A chain's state after its no-grad prefix ran elsewhere (:meth:`TruncatedDDIMSampler.run_prefix`): the
    latent at ``draws.first_grad`` and the chain's draws, which the gradient window goes on consuming."""

    latent: torch.Tensor = field(repr=False)
    draws: ChainDraws


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
    """One DDIM update ``z_prev = sqrt(ᾱ_prev)·ẑ_0 + sqrt(1 − ᾱ_prev − σ²)·ε + σ·n``
    (``noise`` = n, needed if σ > 0)."""
    x0 = predict_x0(z_t, eps, alpha_t)
    direction = max(1.0 - alpha_prev - sigma ** 2, 0.0) ** 0.5
    z_prev = alpha_prev ** 0.5 * x0 + direction * eps.to(x0.dtype)
    if sigma > 0:
        if noise is None:
            raise ValueError('ddim_update: sigma > 0 needs a noise tensor')
        z_prev = z_prev + sigma * noise.to(x0.dtype)
    return z_prev


def _randn_like(like: torch.Tensor, generator: Optional[Generators]) -> torch.Tensor:
    """N(0, I) shaped like ``like``, drawn on the generator's device (seeded ⇒ reproducible; row ``r`` from
    ``generator[r]`` for a list, :mod:`drward.diffusion.row_noise`), then moved."""
    return host_to_device(row_noise.randn(like.shape, generator, like.dtype, like.device), like.device)


def _draw_noise(chain: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """N(0, I) shaped and typed like ``chain``, on the generator's device (the CPU for the default generator)."""
    device = generator.device if generator is not None else chain.device
    return torch.randn(chain.shape, generator=generator, device=device, dtype=chain.dtype)


def _to_device(tensors: List[Optional[torch.Tensor]], device: torch.device) -> List[Optional[torch.Tensor]]:
    """``tensors`` on ``device``; host → CUDA copies go through pinned memory with ``non_blocking`` (the copies
    queue on the stream instead of stalling the host before every denoiser call)."""
    return [t if t is None or t.device == device else host_to_device(t, device) for t in tensors]


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor.to(device)``; from the CPU to CUDA pinned first and non-blocking (the caching host allocator keeps
    the pinned block alive until the copy has run)."""
    if torch.device(device).type == 'cuda' and tensor.device.type == 'cpu':
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
               eta: Optional[float] = None, generator: Optional[Generators] = None,
               prefix: Optional[PrefixState] = None) -> SampleOutput:
        """Run the chain from ``z_T`` (B, C, h, w).

        Args:
            denoise: ``denoise(z_t, t, with_grad) -> ε`` (see :data:`DenoiseFn`); may return bf16.
            z_T: the starting latent, usually N(0, I).
            grad_steps: N; 0 = inference (all K updates, no gradient, final latent), N ≥ 1 = training
                (``ẑ_0`` at the stop step, graph over the last N calls; N ≥ s + 1 keeps the whole chain).
            stop_index: training only: the stop index s in [0, K); drawn with :meth:`draw_stop_index` if None.
            eta: DDIM η; default ``eta_infer`` at inference, :meth:`draw_eta` in training.
            generator: drives every random draw (stop index, η, DDIM noise), in that order; at inference also a
                list of generators, one per row (each row's noise drawn from its own).
            prefix: training only: the chain's no-grad prefix already ran (a batched prefix); continue from its
                latent with its draws (``z_T``, ``stop_index``, ``eta`` and ``generator`` are then unused).
        """
        if grad_steps < 0:
            raise ValueError(f'grad_steps must be >= 0, got {grad_steps}')
        if grad_steps and row_noise.is_per_row(generator):
            raise ValueError('a generator per row is for inference (grad_steps = 0); training draws from one')
        if grad_steps == 0:
            if stop_index is not None:
                raise ValueError('stop_index applies to training calls (grad_steps >= 1) only')
            return self._sample_inference(denoise, z_T, self.eta_infer if eta is None else _checked_eta(eta),
                                          generator)
        return self._sample_truncated(denoise, z_T, grad_steps, stop_index, eta, generator, prefix)

    def _sample_inference(self, denoise: DenoiseFn, z_T: torch.Tensor, eta: float,
                          generator: Optional[Generators]) -> SampleOutput:
        z = _working_copy(z_T)
        with torch.no_grad():
            for index in range(self.num_steps):
                z = self._denoise_and_update(denoise, z, index, eta, generator, with_grad=False)
        last = self.num_steps - 1
        return SampleOutput(z, last, int(self.timesteps[last]), eta, grad_calls=0)

    def _sample_truncated(self, denoise: DenoiseFn, z_T: torch.Tensor, grad_steps: int,
                          stop_index: Optional[int], eta: Optional[float],
                          generator: Optional[torch.Generator], prefix: Optional[PrefixState] = None) -> SampleOutput:
        if prefix is None:  # every draw first (the order the chain consumes them), then the no-grad prefix
            draws = self.draw_chain(z_T, grad_steps, generator, stop_index, eta)
            z = self.run_prefix(lambda z_t, t, rows: denoise(z_t, t, False), [z_T], [draws])[0]
        else:
            draws, z = prefix.draws, prefix.latent
        stop = draws.stop_index
        # the gradient window, in the caller's grad mode (a report restoring under no_grad records no graph)
        for index in range(draws.first_grad, stop):
            eps = self._denoise(denoise, z, index, with_grad=True)
            z = self._update(z, eps, index, draws.etas[index], draws.noises[index])
        eps = self._denoise(denoise, z, stop, with_grad=True)
        z0 = predict_x0(z, eps, self.alpha_t[stop])
        return SampleOutput(z0, stop, int(self.timesteps[stop]), draws.reported_eta,
                            grad_calls=stop - draws.first_grad + 1)

    # -- the no-grad prefix, one restoration or several at once -------------------------------------------------
    def draw_chain(self, like: torch.Tensor, grad_steps: int, generator: Optional[torch.Generator],
                   stop_index: Optional[int] = None, eta: Optional[float] = None) -> ChainDraws:
        """Every random draw of a training chain from ``z_T`` (shaped like ``like``), in the order the sequential
        chain has always consumed them: the stop index s, then η (once, or per update with ``eta_per_update``)
        and the DDIM noise n of each update i < s (n only where σ_t(η) > 0). Drawing them up front changes no
        value; the noises land on ``like``'s device in one copy (pinned and non-blocking from a CPU generator to
        CUDA)."""
        if grad_steps < 1:
            raise ValueError(f'draw_chain is for training chains (grad_steps >= 1), got {grad_steps}')
        stop = self.draw_stop_index(generator) if stop_index is None else self._checked_index(stop_index)
        redraw = eta is None and self.eta_per_update and self.eta_train == 'uniform'
        call_eta = _checked_eta(eta) if eta is not None else (None if redraw else self.draw_eta(generator))
        chain = _working_copy(like)
        etas, noises = [], []
        for index in range(stop):
            step_eta = self.draw_eta(generator) if redraw else call_eta
            etas.append(step_eta)
            sigma = ddim_sigma(self.alpha_t[index], self.alpha_prev[index], step_eta)
            noises.append(_draw_noise(chain, generator) if sigma > 0 else None)
        reported = call_eta if call_eta is not None else (sum(etas) / len(etas) if etas else 0.0)
        return ChainDraws(stop, max(0, stop - grad_steps + 1), etas, _to_device(noises, chain.device), reported)

    def run_prefix(self, denoise_rows: RowsDenoiseFn, starts: Sequence[torch.Tensor], draws: Sequence[ChainDraws],
                   max_batch: Optional[int] = None) -> List[torch.Tensor]:
        """The no-grad prefixes of several chains (micro-batches) with one denoiser call per DDIM index.

        Chain c (rows ``offset_c … offset_c + B_c − 1`` of the concatenated batch) runs its indices
        ``0 … first_grad_c − 1`` from ``starts[c]``; at index i the chains still before their gradient window form
        one batch (a chain leaves it at its own stop step), split into calls of at most ``max_batch`` rows. Each
        chain's DDIM update uses its own η and noise (``draws[c]``), so batching changes no random draw: only the
        denoiser's batch size differs from running the chains one by one. Returns each chain's latent at its
        ``first_grad``, in the chain dtype (float32)."""
        latents = [_working_copy(z) for z in starts]
        sizes = [z.shape[0] for z in latents]
        offsets = [sum(sizes[:c]) for c in range(len(sizes))]
        with torch.no_grad():  # no graph, no stored activations
            for index in range(max((d.first_grad for d in draws), default=0)):
                active = [c for c, d in enumerate(draws) if d.first_grad > index]
                rows = torch.cat([torch.arange(offsets[c], offsets[c] + sizes[c]) for c in active])
                z = torch.cat([latents[c] for c in active]) if len(active) > 1 else latents[active[0]]
                eps = self._denoise_rows(denoise_rows, z, index, rows.to(z.device), max_batch)
                start = 0
                for c in active:
                    latents[c] = self._update(latents[c], eps[start:start + sizes[c]], index, draws[c].etas[index],
                                              draws[c].noises[index])
                    start += sizes[c]
        return latents

    def _denoise_rows(self, denoise_rows: RowsDenoiseFn, z: torch.Tensor, index: int, rows: torch.Tensor,
                      max_batch: Optional[int]) -> torch.Tensor:
        step = z.shape[0] if not max_batch else int(max_batch)
        pieces = []
        for begin in range(0, z.shape[0], step):
            part = z[begin:begin + step]
            t = torch.full((part.shape[0],), int(self.timesteps[index]), dtype=torch.int64, device=z.device)
            eps = denoise_rows(part, t, rows[begin:begin + step])
            if eps.shape != part.shape:
                raise ValueError(f'denoiser returned shape {tuple(eps.shape)} for a latent of shape '
                                 f'{tuple(part.shape)}')
            pieces.append(eps.to(z.dtype))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _update(self, z: torch.Tensor, eps: torch.Tensor, index: int, eta: float,
                noise: Optional[torch.Tensor]) -> torch.Tensor:
        alpha_t, alpha_prev = self.alpha_t[index], self.alpha_prev[index]
        return ddim_update(z, eps, alpha_t, alpha_prev, ddim_sigma(alpha_t, alpha_prev, eta), noise)

    # -- one step ----------------------------------------------------------------------------------------------
    def _denoise(self, denoise: DenoiseFn, z: torch.Tensor, index: int, with_grad: bool) -> torch.Tensor:
        t = torch.full((z.shape[0],), int(self.timesteps[index]), dtype=torch.int64, device=z.device)
        eps = denoise(z, t, with_grad)
        if eps.shape != z.shape:
            raise ValueError(f'denoiser returned shape {tuple(eps.shape)} for a latent of shape {tuple(z.shape)}')
        return eps.to(z.dtype)

    def _denoise_and_update(self, denoise: DenoiseFn, z: torch.Tensor, index: int, eta: float,
                            generator: Optional[Generators], with_grad: bool) -> torch.Tensor:
        eps = self._denoise(denoise, z, index, with_grad)
        sigma = ddim_sigma(self.alpha_t[index], self.alpha_prev[index], eta)
        return self._update(z, eps, index, eta, _randn_like(z, generator) if sigma > 0 else None)

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
