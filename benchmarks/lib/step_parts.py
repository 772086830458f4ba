"""The parts of one ReFL step, separated by instrumenting the real ``ReFLModel.optimize_parameters`` while it runs
(benchmarks/README.md, "How the parts are separated"):

* ``restorer.restore`` (wrapped): from its entry to the first denoiser call = *conditioning*;
* the restorer's ``TruncatedDDIMSampler.sample`` (wrapped on the instance): every denoiser call is attributed to the
  *no-grad prefix* or the *grad step(s)* by the sampler's own ``with_grad`` flag, and the DDIM update after a call to
  the same part; from the sampler's return to the end of ``restore`` = *decode*. A restorer without a sampler (one
  step) has its UNet's forward hooked instead: its calls are the grad step, what follows is decode;
* forward hooks on the loss modules: *FRM reward forward* (``RewardLoss``) and *other losses*;
* the generator's ``backward()`` call (``torch.autograd.backward``, wrapped) is split into three parts by gradient
  hooks on ``Î`` (the decoder's backward starts) and on ``ẑ_0`` (the grad steps' backward starts);
* step hooks on the generator optimiser, and a wrapper on ``update_frm``.

:func:`instrument` attaches all of it for a block and removes it afterwards; :func:`measure` runs the variants
(gradient through the last N denoiser calls) interleaved and keeps each run's :class:`PartMeasure` per part.
"""
from __future__ import annotations

import contextlib
import gc
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch

from benchmarks.lib.common import PartClock, PartMeasure, median_measures

#: The parts of one step, in the order they run: (key, label in the table).
PARTS = (
    ('conditioning', 'conditioning (restore work before the first denoiser call)'),
    ('prefix', 'no-grad prefix (denoiser calls + DDIM updates)'),
    ('grad_steps', 'grad step(s) (denoiser calls with graph + θ₀ reference)'),
    ('decode', 'decode (VAE decoder forward)'),
    ('loss_reg', 'L_reg forward'),
    ('loss_dwt', 'L_DWT forward (DT-CWT)'),
    ('reward', 'FRM reward forward (L_reward)'),
    ('loss_lpips', 'L_LPIPS forward (VGG)'),
    ('losses', 'loss sum and finiteness check'),
    ('bwd_losses', 'backward: losses and FRM'),
    ('bwd_decode', 'backward: VAE decoder'),
    ('bwd_steps', 'backward: grad step(s)'),
    ('bwd_conditioning', 'backward: conditioning (a trained encoder)'),
    ('optim_g', 'generator AdamW step'),
    ('reward_gt', 'GT reward for the log (FRM, no grad)'),
    ('frm_update', 'dynamic FRM update (every step here; every n in training)'),
    ('other', 'other (set-up, bookkeeping)'),
)
PART_LABELS = dict(PARTS)
#: The parts whose saved tensors make up the generator's graph (everything before its backward).
GENERATOR_FORWARD_PARTS = ('other', 'conditioning', 'prefix', 'grad_steps', 'decode', 'loss_reg', 'loss_dwt', 'reward',
                           'loss_lpips', 'losses')
#: ReFLModel's loss terms → their forward part.
LOSS_PARTS = {'l_reg': 'loss_reg', 'l_dwt': 'loss_dwt', 'l_reward': 'reward', 'l_lpips': 'loss_lpips'}


# ---------------------------------------------------------------------------------------------------- instrumentation
class _Patches:
    """Instance attributes set over methods (and hook handles), all undone by :meth:`undo`."""

    def __init__(self) -> None:
        self._undo: List[Callable[[], None]] = []

    def wrap(self, obj, name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
        original = getattr(obj, name)
        had_own = name in vars(obj)
        setattr(obj, name, make_wrapper(original))
        self._undo.append(lambda: setattr(obj, name, original) if had_own else delattr(obj, name))

    def handle(self, handle) -> None:
        self._undo.append(handle.remove)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def _switch_on_grad(clock: PartClock, part: str) -> Callable:
    """A tensor gradient hook that switches the clock to ``part`` when that tensor's gradient is computed."""
    def hook(grad):
        clock.switch(part)
    return hook


def _instrument_restorer(net, clock: PartClock, patches: _Patches) -> None:
    """Conditioning → prefix / grad step(s) → decode inside ``restore``; gradient hooks on ``Î`` and ``ẑ_0``."""
    def wrap_restore(restore):
        def timed_restore(*args, **kwargs):
            clock.switch('conditioning')
            out = restore(*args, **kwargs)
            if out.image.requires_grad:
                out.image.register_hook(_switch_on_grad(clock, 'bwd_decode'))
            if out.latent is not None and out.latent.requires_grad:
                out.latent.register_hook(_switch_on_grad(clock, 'bwd_steps'))
            clock.switch('losses')
            return out
        return timed_restore

    def wrap_sample(sample):
        def timed_sample(denoise, *args, **kwargs):
            def timed_denoise(z_t, t, with_grad):
                clock.switch('grad_steps' if with_grad else 'prefix')
                return denoise(z_t, t, with_grad)
            out = sample(timed_denoise, *args, **kwargs)
            clock.switch('decode')
            return out
        return timed_sample

    patches.wrap(net, 'restore', wrap_restore)
    sampler = getattr(net, 'sampler', None)
    if sampler is not None and hasattr(sampler, 'sample'):
        patches.wrap(sampler, 'sample', wrap_sample)
        return
    def unet_pre_hook(module, inputs):
        clock.switch('grad_steps')
        if inputs and torch.is_tensor(inputs[0]) and inputs[0].requires_grad:  # a trained encoder made z
            inputs[0].register_hook(_switch_on_grad(clock, 'bwd_conditioning'))

    unet = denoiser_module(net)
    patches.handle(unet.register_forward_pre_hook(unet_pre_hook))
    decoder = getattr(getattr(getattr(net, 'sd', None), 'vae', None), 'decoder', None)
    if decoder is not None:  # what runs between the UNet and the decoder (θ₀ reference, ẑ_0) is the grad step's
        patches.handle(decoder.register_forward_pre_hook(lambda module, inputs: clock.switch('decode')))
    else:
        patches.handle(unet.register_forward_hook(lambda module, inputs, output: clock.switch('decode')))


def denoiser_module(net) -> torch.nn.Module:
    """The UNet of a restorer without a sampler (``net.sd.unet`` or the first submodule named ``unet``)."""
    unet = getattr(getattr(net, 'sd', None), 'unet', None)
    if unet is None:
        unet = next((m for name, m in net.named_modules() if name.split('.')[-1] == 'unet'), None)
    if unet is None:
        raise RuntimeError(f'{type(net).__name__}: neither a sampler nor a UNet to instrument')
    return unet


def _instrument_losses(model, clock: PartClock, patches: _Patches) -> None:
    """Forward hooks on each loss module; after the last one, ``losses`` runs until the backward call."""
    for term, criterion in model.criteria.items():
        if criterion is None:
            continue
        part = LOSS_PARTS.get(term, 'losses')
        patches.handle(criterion.register_forward_pre_hook(lambda module, inputs, part=part: clock.switch(part)))
        patches.handle(criterion.register_forward_hook(lambda module, inputs, output: clock.switch('losses')))


def _instrument_backward(clock: PartClock, patches: _Patches) -> None:
    """The generator's ``backward()`` call (the one made right after the losses) runs in the backward parts; the
    engine's graph traversal before the first node runs counts there too. Other backward calls (the FRM update's)
    are left alone."""
    def wrap_backward(backward):
        def timed_backward(*args, **kwargs):
            if clock.current != 'losses':
                return backward(*args, **kwargs)
            clock.switch('bwd_losses')
            result = backward(*args, **kwargs)
            clock.switch('other')
            return result
        return timed_backward
    patches.wrap(torch.autograd, 'backward', wrap_backward)


def _instrument_optimisers(model, clock: PartClock, patches: _Patches) -> None:
    """Step hooks on the generator optimiser; a wrapper around the dynamic FRM update."""
    patches.handle(model.optimizer_g.register_step_pre_hook(lambda *a: clock.switch('optim_g')))
    patches.handle(model.optimizer_g.register_step_post_hook(lambda *a: clock.switch('reward_gt')))

    def wrap_update(update_frm):
        def timed_update(*args, **kwargs):
            clock.switch('frm_update')
            stats = update_frm(*args, **kwargs)
            clock.switch('other')
            return stats
        return timed_update
    patches.wrap(model, 'update_frm', wrap_update)


def _instrument_checkpoints(clock: PartClock, patches: _Patches) -> None:
    """Non-reentrant activation checkpoints (diffusers' and open_clip's) keep their inputs for the recomputation,
    outside autograd's saved tensors: count those inputs when the region's output joins the graph."""
    import open_clip.transformer
    import torch.utils.checkpoint

    def wrap_checkpoint(checkpoint):
        def counted_checkpoint(function, *args, **kwargs):
            out = checkpoint(function, *args, **kwargs)
            first = out[0] if isinstance(out, (tuple, list)) else out
            if clock.meter is not None and torch.is_tensor(first) and first.requires_grad:
                for tensor in (*args, *kwargs.values()):
                    if torch.is_tensor(tensor):
                        clock.meter.count(tensor)
            return out
        return counted_checkpoint
    for owner in (torch.utils.checkpoint, open_clip.transformer):
        if hasattr(owner, 'checkpoint'):
            patches.wrap(owner, 'checkpoint', wrap_checkpoint)


@contextlib.contextmanager
def instrument(model, clock: PartClock) -> Iterator[None]:
    """Attach the part boundaries of :data:`PARTS` to ``model`` (a ReFLModel) for the duration of the block."""
    patches = _Patches()
    try:
        _instrument_restorer(model.net_g, clock, patches)
        _instrument_losses(model, clock, patches)
        _instrument_backward(clock, patches)
        _instrument_optimisers(model, clock, patches)
        _instrument_checkpoints(clock, patches)
        yield
    finally:
        patches.undo()


# ---------------------------------------------------------------------------------------------------- measuring
@dataclass
class VariantResult:
    """Median part measures of one variant (gradient through the last ``grad_steps`` denoiser calls)."""

    grad_steps: int
    runs: List[Dict[str, PartMeasure]] = field(default_factory=list)
    totals: List[float] = field(default_factory=list)
    peaks: List[int] = field(default_factory=list)
    grad_calls: int = 0
    failure: Optional[str] = None

    @property
    def parts(self) -> Dict[str, PartMeasure]:
        return median_measures(self.runs)

    @property
    def seconds(self) -> float:
        """Median wall time of a whole step."""
        return statistics.median(self.totals) if self.totals else float('nan')

    @property
    def peak_bytes(self) -> int:
        """Median of the steps' peaks."""
        return int(statistics.median(self.peaks)) if self.peaks else 0


def model_tensors(model) -> Iterator[torch.Tensor]:
    """Every parameter and buffer of the restorer, the FRM and the loss modules (not counted as saved activations)."""
    modules = [model.net_g, model.frm, *(c for c in model.criteria.values() if c is not None)]
    for module in modules:
        yield from module.parameters()
        yield from module.buffers()


def run_step(model, batch: Dict, clock: PartClock, grad_steps: int, seed: int) -> Dict[str, PartMeasure]:
    """One instrumented ``optimize_parameters`` with gradient through the last ``grad_steps`` calls."""
    model.grad_steps = grad_steps
    model.generator.manual_seed(seed)
    model.feed_data(batch)
    clock.start('other')
    try:
        model.optimize_parameters(1)
    finally:
        clock.stop()
    return dict(clock.parts)


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def measure(model, batch: Dict, clock: PartClock, variants: Sequence[int], repeats: int, warmup: int,
            seed: int) -> Dict[int, VariantResult]:
    """``warmup`` unmeasured steps of the cheapest variant (N = 1: the same kernels, caches and optimiser states as
    every other N, at a fraction of a full chain's cost), then every variant ``repeats`` times, interleaved (round
    robin) so slow drifts hit all alike."""
    results = {n: VariantResult(n) for n in variants}
    with instrument(model, clock):
        for _ in range(warmup):
            run_step(model, batch, clock, min(variants), seed)
        for _ in range(repeats):
            for n, result in results.items():
                if result.failure:
                    continue
                parts = None
                try:
                    parts = run_step(model, batch, clock, n, seed)
                except (torch.OutOfMemoryError, RuntimeError) as error:
                    if not _is_out_of_memory(error):
                        raise
                    result.failure = 'out of memory'
                if parts is None:  # released outside the handler, so the failed graph is no longer referenced
                    _release(model)
                    continue
                result.grad_calls = int(model.log_dict.get('grad_calls', n))
                result.runs.append(parts)
                result.totals.append(clock.total_seconds)
                result.peaks.append(clock.peak_bytes)
    return results


def _release(model) -> None:
    """After an out-of-memory step: drop gradients and cached blocks so the next variant starts clean."""
    model.optimizer_g.zero_grad(set_to_none=True)
    model.optimizer_frm.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def choose_variants(k: int, also_n: Sequence[int], full_chain: bool) -> List[int]:
    """N = 1 (the paper's ReFL step), the extra N within [1, K], and N = K (the full-chain baseline)."""
    return sorted({1, *(n for n in also_n if 1 <= n <= k), *([k] if full_chain else [])})
