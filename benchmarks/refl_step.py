"""Benchmark: time and peak memory of one ReFL generator step, split into its parts, against full-chain backprop.

One step is ReFLModel's own ``optimize_parameters`` (one micro-batch): restore with gradient through the last N
denoiser calls, the four loss terms, backward, the generator's AdamW step, the GT reward for the log, and the dynamic
FRM update (run at every measured step here; every n = 10 in training). Nothing is re-implemented: the parts are
separated by instrumenting the real code while it runs —

* ``restorer.restore`` (wrapped): from its entry to the first denoiser call = *conditioning*;
* the restorer's ``TruncatedDDIMSampler.sample`` (wrapped on the instance): every denoiser call is attributed to the
  *no-grad prefix* or the *grad step(s)* by the sampler's own ``with_grad`` flag, and the DDIM update after a call to
  the same part; from the sampler's return to the end of ``restore`` = *decode*. A restorer without a sampler (one
  step) has its UNet's forward hooked instead: its calls are the grad step, what follows is decode;
* forward hooks on the loss modules: *FRM reward forward* (``RewardLoss``) and *other losses*;
* the generator's ``backward()`` call (``torch.autograd.backward``, wrapped) is split into three parts by gradient
  hooks on ``Î`` (the decoder's backward starts) and on ``ẑ_0`` (the grad steps' backward starts);
* step hooks on the generator optimiser, and a wrapper on ``update_frm``.

Each switch between parts synchronises CUDA before reading the clock, so the parts sum to the step's wall time.
Memory per part: the bytes autograd saved for backward (exact, any device) and the peak above the step's starting
level (CUDA: ``max_memory_allocated``; CPU: sampled RSS) — see ``benchmarks/common.py``. The same process then
measures the full-chain baseline (N = K: the graph over every denoiser call) and optional N = 2, 4, ...; repeats
are interleaved across variants and medians are reported.

    python benchmarks/refl_step.py                                  # DiffBIR, tiny, 64², K = 50, CPU, 1 thread
    python benchmarks/refl_step.py --restorer osediff --clock thread # CPU time: steadier on a busy CPU
    python benchmarks/refl_step.py --size sd21 --device cuda --also-n 2 4 --out sd21.md
    python benchmarks/refl_step.py --size sd21 --construct-only     # build on the meta device, count, don't run
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402

from benchmarks.common import (PartClock, PartMeasure, SavedTensorMeter, fmt_mib, fmt_ms, fmt_ratio,  # noqa: E402
                               markdown_table, median_measures, memory_probe)

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


# ---------------------------------------------------------------------------------------------------- restorers
@dataclass
class RestorerSpec:
    """How the benchmark builds one restorer family: ``arch_type`` (the ARCH_REGISTRY name) and ``options(steps)``,
    its tiny ``network_g`` options (K = ``steps``, stop index fixed at the last step)."""

    arch_type: str
    title: str
    options: Callable[[int], Dict]


SPECS: Dict[str, RestorerSpec] = {
    'diffbir': RestorerSpec('DiffBIRRestorer', 'DiffBIR',
                            lambda steps: dict(tiny=True, num_steps=steps, stop_window=1)),
    'osediff': RestorerSpec('OSEDiffRestorer', 'OSEDiff', lambda steps: dict(tiny=True)),
}


@contextlib.contextmanager
def real_sizes() -> Iterator[None]:
    """While the block runs, a restorer's tiny build makes SD 2.1-base (and DiffBIR face SwinIR) sizes, with random
    weights.

    The restorers have no "real sizes, random weights" option (a real build requires the weight files), so every
    loaded ``drward`` module global named ``TINY_SD`` / ``TINY_FACE_SWINIR`` is swapped for the real configuration
    and restored afterwards; :func:`check_real_sizes` verifies the build took them.
    """
    from drward.archs.face_swinir import FACE_SWINIR
    from drward.archs.sd_parts import SD21_BASE
    real = {'TINY_SD': SD21_BASE, 'TINY_FACE_SWINIR': FACE_SWINIR}
    modules = [module for name, module in list(sys.modules.items()) if name.startswith('drward.') and module]
    saved = [(module, name, getattr(module, name)) for module in modules for name in real if hasattr(module, name)]
    for module, name, _ in saved:
        setattr(module, name, real[name])
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def check_real_sizes(net) -> None:
    """Raise unless ``net``'s SD parts have SD 2.1-base's UNet (the :func:`real_sizes` swap reached the build)."""
    from drward.archs.sd_parts import SD21_BASE
    config = getattr(getattr(net, 'sd', None), 'config', None)
    if config is None or dict(config.unet) != dict(SD21_BASE.unet):
        raise RuntimeError(f'{type(net).__name__}: the sd21 build still has tiny sizes; its tiny build no longer reads '
                           f'TINY_SD (update benchmarks/refl_step.py real_sizes)')


def available(spec: RestorerSpec) -> bool:
    """Whether the restorer's arch is registered (OSEDiff may not exist yet in a checkout)."""
    import drward  # noqa: F401  (registers every arch)
    from basicsr.utils.registry import ARCH_REGISTRY
    return spec.arch_type in ARCH_REGISTRY


# ---------------------------------------------------------------------------------------------------- options
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Time and peak memory of one ReFL step, by part, '
                                                 'against full-chain backprop (same process).')
    parser.add_argument('--restorer', choices=sorted(SPECS), default='diffbir')
    parser.add_argument('--size', choices=('tiny', 'sd21'), default='tiny',
                        help='tiny random models (CPU) or SD 2.1 sizes with random weights (GPU)')
    parser.add_argument('--resolution', type=int, default=None, help='image side (default: 64 tiny, 512 sd21)')
    parser.add_argument('--steps', type=int, default=50, help='K, DDIM steps of the chain (official: 50)')
    parser.add_argument('--also-n', type=int, nargs='*', default=[], metavar='N',
                        help='extra variants: gradient through the last N denoiser calls (e.g. 2 4)')
    parser.add_argument('--no-full-chain', action='store_true', help='skip the full-chain (N = K) baseline')
    parser.add_argument('--batch', type=int, default=1, help='images per step (authors: 1, accumulation 4)')
    parser.add_argument('--repeats', type=int, default=3, help='measured steps per variant (median reported)')
    parser.add_argument('--warmup', type=int, default=1, help='unmeasured steps per variant first')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32',
                        help="bf16 = ReFLModel's mixed_precision: bf16 (autocast; weights stay fp32)")
    parser.add_argument('--gradient-checkpointing', action='store_true',
                        help="activation checkpointing in the restorer (UNet, control branch, VAE)")
    parser.add_argument('--frm-checkpointing', action='store_true',
                        help="also in the FRM (what ReFLModel's train.gradient_checkpointing turns on with the "
                             "restorer's)")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'thread'), default='wall',
                        help="wall time, or this thread's CPU time (CPU, --threads 1: steadier on a busy machine)")
    parser.add_argument('--rss-interval-ms', type=float, default=1.0, help='CPU memory sampling interval')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--construct-only', action='store_true',
                        help='build the models on the meta device and report their sizes; run nothing')
    parser.add_argument('--out', default=None, help='also write the Markdown report to this file')
    args = parser.parse_args(argv)
    if args.resolution is None:
        args.resolution = 512 if args.size == 'sd21' else 64
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device available')
    if args.clock == 'thread' and (args.device == 'cuda' or args.threads != 1):
        parser.error('--clock thread measures one CPU thread: use it with --device cpu --threads 1')
    return args


def loss_options(size: str) -> Dict:
    """The authors' four loss terms and weights; the FRM is the tiny CLIP or a random ViT-H-14 (HPS v2's size);
    LPIPS uses a random VGG backbone (same cost as the real one, no weight file needed)."""
    frm = {'model_name': 'tiny' if size == 'tiny' else 'ViT-H-14'}
    return {
        'reg_opt': {'type': 'RegLoss', 'mode': 'output', 'loss_weight': 1e-4},
        'dwt_opt': {'type': 'DWTLoss', 'mode': 'dtcwt', 'loss_weight': 0.01},
        'reward_opt': {'type': 'RewardLoss', 'loss_weight': 0.005, 'frm': frm},
        'lpips_opt': {'type': 'LPIPSLoss_drward', 'loss_weight': 0.01, 'net': 'vgg', 'random_backbone': True},
    }


def refl_options(args: argparse.Namespace, spec: RestorerSpec, workdir: str) -> Dict:
    """A ReFLModel option dict: one micro-batch per step, the FRM update at every step, no hack monitor, nothing
    written."""
    paths = {key: osp.join(workdir, key) for key in ('models', 'training_states', 'visualization', 'log')}
    return {
        'name': 'refl_step_benchmark', 'model_type': 'ReFLModel', 'is_train': True, 'dist': False, 'rank': 0,
        'world_size': 1, 'num_gpu': 1 if args.device == 'cuda' else 0, 'manual_seed': args.seed,
        'network_g': {'type': spec.arch_type, **spec.options(args.steps)},
        'path': {**paths, 'resume_state': None, 'pretrain_network_g': None},
        'train': {
            'grad_accum': 1, 'grad_steps': 1, 'mixed_precision': 'bf16' if args.dtype == 'bf16' else 'no',
            'gradient_checkpointing': bool(args.gradient_checkpointing and args.frm_checkpointing),
            'optim_g': {'type': 'AdamW', 'lr': 5e-5, 'weight_decay': 0.01},
            **loss_options(args.size),
            'frm_update': {'every': 1, 'loss_weight': 0.1, 'reduction': 'sum', 'grad_clip': 1.0},
            'hack_monitor': {'enabled': False},  # it runs at log steps only (print_freq), not in the step measured
        },
    }


def build_refl_model(args: argparse.Namespace, spec: RestorerSpec, workdir: str):
    """ReFLModel around the chosen restorer, built through BasicSR's model registry."""
    import drward  # noqa: F401
    from basicsr.models import build_model
    sizes = real_sizes() if args.size == 'sd21' else contextlib.nullcontext()
    with sizes, torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(refl_options(args, spec, workdir))
    if args.size == 'sd21':
        check_real_sizes(model.net_g)
    if args.gradient_checkpointing:
        model.net_g.set_gradient_checkpointing(True)
    if args.frm_checkpointing:
        model.frm.clip.set_grad_checkpointing(True)
    return model


def make_batch(args: argparse.Namespace, device: torch.device) -> Dict:
    """Random LQ/GT faces in [0, 1] (content does not change the cost) and the datasets' fallback caption."""
    from drward.data.face_degradation_dataset import DEFAULT_FALLBACK_CAPTION
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.resolution, args.resolution)
    gt = torch.rand(shape, generator=generator)
    lq = (gt + 0.1 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return {'lq': lq.to(device), 'gt': gt.to(device), 'caption': [DEFAULT_FALLBACK_CAPTION] * args.batch}


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


@contextlib.contextmanager
def instrument(model, clock: PartClock) -> Iterator[None]:
    """Attach the part boundaries of :data:`PARTS` to ``model`` (a ReFLModel) for the duration of the block."""
    patches = _Patches()
    try:
        _instrument_restorer(model.net_g, clock, patches)
        _instrument_losses(model, clock, patches)
        _instrument_backward(clock, patches)
        _instrument_optimisers(model, clock, patches)
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


def chain_length(net) -> int:
    """K, the number of denoiser calls of the restorer's chain (1 for a restorer without a sampler)."""
    return int(getattr(getattr(net, 'sampler', None), 'num_steps', 1))


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
    """Run every variant ``warmup + repeats`` times, interleaved (round robin) so slow drifts hit all alike."""
    results = {n: VariantResult(n) for n in variants}
    with instrument(model, clock):
        for repeat in range(warmup + repeats):
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
                if repeat >= warmup:
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


# ---------------------------------------------------------------------------------------------------- the report
def _variant_name(n: int, k: int) -> str:
    if n == k:
        return f'N = K = {k} (full chain)' if k > 1 else 'N = K = 1 (one step: the full chain)'
    return f'N = {n} (ReFL, paper)' if n == 1 else f'N = {n}'


def _graph_bytes(parts: Dict[str, PartMeasure]) -> int:
    """What the generator's forward saved for backward: every part before the backward (the FRM update's own
    graph comes later and is not alive at the same time)."""
    return sum(m.saved_bytes for key, m in parts.items() if key in GENERATOR_FORWARD_PARTS)


def _part_cells(measure_: Optional[PartMeasure], total: float) -> List[str]:
    """ms, share %, saved MiB, peak MiB of one part (n/a when the variant has no such part)."""
    if measure_ is None:
        return ['n/a'] * 4
    share = f'{100 * measure_.seconds / total:.1f}' if total > 0 else 'n/a'
    return [fmt_ms(measure_.seconds), share, fmt_mib(measure_.saved_bytes), fmt_mib(measure_.peak_bytes)]


def _parts_table(step: VariantResult, full: Optional[VariantResult], k: int) -> str:
    """Rows = parts; columns = the N = 1 step and the full-chain step (ms, share, saved, peak), their time ratio."""
    parts = step.parts
    full_parts = full.parts if full is not None else {}
    total = sum(m.seconds for m in parts.values())
    full_total = sum(m.seconds for m in full_parts.values())
    headers = ['part', 'N = 1 ms', 'share %', 'saved MiB', 'peak MiB',
               f'N = {k} ms', 'share %', 'saved MiB', 'peak MiB', 'time N = 1 / full']
    rows = []
    for key, label in PARTS:
        if key not in parts and key not in full_parts:
            continue
        mine, theirs = parts.get(key, PartMeasure()), full_parts.get(key)
        ratio = fmt_ratio(mine.seconds, theirs.seconds) if theirs is not None else 'n/a'
        rows.append([label, *_part_cells(mine, total), *_part_cells(theirs, full_total), ratio])
    summed = PartMeasure(total, step.peak_bytes, sum(m.saved_bytes for m in parts.values()))
    full_summed = (PartMeasure(full_total, full.peak_bytes, sum(m.saved_bytes for m in full_parts.values()))
                   if full is not None else None)
    rows.append(['**total** (sum of part medians)', *_part_cells(summed, total), *_part_cells(full_summed, full_total),
                 fmt_ratio(total, full_total) if full is not None else 'n/a'])
    return markdown_table(headers, rows)


def _variants_table(results: Dict[int, VariantResult], k: int) -> str:
    full = results.get(k)
    usable = full is not None and not full.failure
    full_graph = _graph_bytes(full.parts) if usable else 0
    headers = ['variant', 'grad calls', 'step ms', 'time / full chain', 'graph saved MiB', 'saved / full chain',
               'peak MiB', 'peak / full chain']
    rows = []
    for n, result in results.items():
        if result.failure:
            rows.append([_variant_name(n, k), str(n), result.failure] + ['n/a'] * 5)
            continue
        graph = _graph_bytes(result.parts)
        rows.append([_variant_name(n, k), str(result.grad_calls), fmt_ms(result.seconds),
                     fmt_ratio(result.seconds, full.seconds) if usable else 'n/a', fmt_mib(graph),
                     fmt_ratio(graph, full_graph) if usable else 'n/a', fmt_mib(result.peak_bytes),
                     fmt_ratio(result.peak_bytes, full.peak_bytes) if usable else 'n/a'])
    return markdown_table(headers, rows)


def _design_comparison(step: VariantResult, k: int) -> str:
    """The N = 1 step's grouped time shares; for a chain, next to DESIGN.md §5's FLOP shares (DiffBIR, SD 2.1
    sizes, 512², K = 50)."""
    parts = step.parts
    total = sum(m.seconds for m in parts.values())

    def share(*keys: str) -> str:
        return f'{100 * sum(parts[key].seconds for key in keys if key in parts) / total:.1f} %'
    shares = (f'prefix {share("prefix")}, decode forward + backward {share("decode", "bwd_decode")}, grad step '
              f'forward + backward {share("grad_steps", "bwd_steps")}, conditioning forward + backward '
              f'{share("conditioning", "bwd_conditioning")}, loss terms forward + backward (FRM, LPIPS, DT-CWT, '
              f'L_reg) {share("reward", *LOSS_PARTS.values(), "losses", "bwd_losses")}, FRM update '
              f'{share("frm_update")}')
    if k == 1:
        return f'Time shares of the step: {shares}.'
    return (f'Against DESIGN.md §5 (FLOPs of a DiffBIR step at SD 2.1 sizes, 512², K = 50: no-grad prefix ≈ 80 %, '
            f'VAE decode forward + backward ≈ 11 %, grad step forward + backward ≈ 5 %), this run\'s time shares '
            f'are: {shares}.')


def _checkpointing(args: argparse.Namespace) -> str:
    parts = [name for name, on in (('restorer', args.gradient_checkpointing), ('FRM', args.frm_checkpointing)) if on]
    return ' + '.join(parts) if parts else 'off'


def _setting(args: argparse.Namespace, spec: RestorerSpec, model, k: int) -> str:
    net = model.net_g
    trained = sum(p.numel() for p in net.trainable_parameters())
    restorer = sum(p.numel() for p in net.parameters())
    frm = sum(p.numel() for p in model.frm.parameters())
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
    else:
        device = f'CPU ({platform.machine()}, {torch.get_num_threads()} thread(s))'
    size = 'tiny random models' if args.size == 'tiny' else 'SD 2.1 sizes, random weights'
    return (f'## ReFL step: {spec.title} ({size}), {args.resolution}², batch {args.batch}, K = {k}, {args.dtype}, '
            f'gradient checkpointing: {_checkpointing(args)}\n\n'
            f'Device: {device}; torch {torch.__version__}. Parameters: restorer {restorer / 1e6:,.2f} M '
            f'(trained {trained / 1e6:,.2f} M), FRM {frm / 1e6:,.2f} M.')


def _chain_sentence(k: int) -> str:
    if k == 1:
        return 'One denoiser call (the grad step), no no-grad prefix.'
    return (f'The stop index is fixed at the last step (`stop_window: 1`), so N = 1 runs K − 1 = {k - 1} no-grad '
            f'calls.')


def _clock_name(args: argparse.Namespace) -> str:
    return 'CPU time of the main thread (`--clock thread`)' if args.clock == 'thread' else 'wall time'


def _caption(args: argparse.Namespace, k: int, step: VariantResult, memory: str) -> str:
    parts = step.parts
    total = sum(m.seconds for m in parts.values())
    frm = parts.get('frm_update', PartMeasure()).seconds
    amortised = frm / 10 / (total - frm + frm / 10) if total > 0 else 0.0
    return (f'One step = `ReFLModel.optimize_parameters` on one micro-batch (loss weights 1e-4 / 0.01 / 0.005 / '
            f'0.01, AdamW), median of {args.repeats} measured steps per variant after {args.warmup} warm-up '
            f'step(s), variants interleaved in one process. {_chain_sentence(k)} Parts are separated by hooks on the '
            f'running code (wrapped `restore`, sampler and backward call, loss-module hooks, gradient hooks on Î '
            f'and ẑ_0, optimiser step hooks; benchmarks/README.md) and sum to the step\'s {_clock_name(args)}; '
            f'CUDA is synchronised at every boundary. Shares are of the step total. Memory: *saved* = what autograd '
            f'kept for backward, counted by a saved-tensors hook (parameters excluded; "graph saved" = the '
            f'generator\'s forward parts); *peak* = {memory}. Weights are random '
            f'(the cost does not depend on them); LPIPS has a random VGG backbone. The dynamic FRM update runs at '
            f'every measured step here; at the official n = 10 it is {100 * amortised:.1f} % of a step.')


def render_report(args: argparse.Namespace, spec: RestorerSpec, model, k: int, results: Dict[int, VariantResult],
                  memory: str) -> str:
    step = results[1]
    if step.failure:
        return f'{_setting(args, spec, model, k)}\n\nThe N = 1 step failed: {step.failure}.\n'
    full = results.get(k)  # a one-step restorer (K = 1): the N = 1 step is the full chain
    full = full if full is not None and not full.failure else None
    blocks = [_setting(args, spec, model, k), _caption(args, k, step, memory),
              f'### Parts of one step (N = 1) and of the full-chain step (N = {k})', _parts_table(step, full, k),
              '### Variants', _variants_table(results, k), _design_comparison(step, k)]
    if k == 1:
        blocks.append('A one-step restorer: its only denoiser call is the grad step, so N = 1 is the full chain.')
    return '\n\n'.join(blocks) + '\n'


@dataclass
class BenchmarkRun:
    """A measured model: the ReFLModel, K, the variants' results and what the peak memory column means."""

    model: object
    k: int
    results: Dict[int, VariantResult]
    memory: str


def run_benchmark(args: argparse.Namespace, spec: RestorerSpec) -> BenchmarkRun:
    """Build the model and measure every variant (N = 1, the extra N, N = K) in this process."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as workdir:
        model = build_refl_model(args, spec, workdir)
    k = chain_length(model.net_g)
    variants = choose_variants(k, args.also_n, not args.no_full_chain)
    probe = memory_probe(device, args.rss_interval_ms / 1e3)
    timer = time.thread_time if args.clock == 'thread' else time.perf_counter
    clock = PartClock(probe, SavedTensorMeter(model_tensors(model)), timer)
    try:
        results = measure(model, make_batch(args, device), clock, variants, args.repeats, args.warmup, args.seed)
    finally:
        probe.close()
    return BenchmarkRun(model, k, results, probe.description)


def benchmark_report(args: argparse.Namespace, spec: RestorerSpec) -> str:
    run = run_benchmark(args, spec)
    return render_report(args, spec, run.model, run.k, run.results, run.memory)


# ---------------------------------------------------------------------------------------------------- construct only
def construct_report(args: argparse.Namespace, spec: RestorerSpec) -> str:
    """Build the restorer and the FRM with meta-device parameters (no memory, no weights) and count them."""
    import drward  # noqa: F401
    from accelerate import init_empty_weights
    from basicsr.archs import build_network

    from drward.archs.frm_arch import build_frm
    options = refl_options(args, spec, tempfile.gettempdir())
    sizes = real_sizes() if args.size == 'sd21' else contextlib.nullcontext()
    with init_empty_weights(), sizes:
        net = build_network(options['network_g'])
        frm = build_frm(options['train']['reward_opt']['frm'])
    if args.size == 'sd21':
        check_real_sizes(net)
    trained = {id(p) for p in net.trainable_parameters()} | {id(p) for p in frm.trainable_parameters()}
    modules = [(f'restorer.{name}', child) for name, child in net.named_children()] + [('FRM', frm)]
    rows, totals = [], [0, 0]
    for name, module in modules:
        count = sum(p.numel() for p in module.parameters())
        count_trained = sum(p.numel() for p in module.parameters() if id(p) in trained)
        totals = [totals[0] + count, totals[1] + count_trained]
        rows.append(_size_row(name, count, count_trained))
    rows.append(_size_row('**total**', *totals))
    size = 'tiny random models' if args.size == 'tiny' else 'SD 2.1 sizes'
    header = (f'## {spec.title} ({size}): built on the meta device, nothing run\n\n'
              f'K = {chain_length(net)}; parameter devices: {sorted({p.device.type for p in net.parameters()})}.')
    table = markdown_table(['module', 'parameters (M)', 'trained (M)', 'fp32 GiB', 'bf16 GiB',
                            'AdamW states GiB (fp32)'], rows)
    note = ('"trained": the restorer\'s trained part (generator step) and the FRM\'s unlocked groups (dynamic FRM '
            'update); AdamW keeps two fp32 states per trained parameter.')
    return f'{header}\n\n{table}\n\n{note}\n'


def _size_row(name: str, count: int, count_trained: int) -> List[str]:
    gib = 2 ** 30
    return [name, f'{count / 1e6:,.2f}', f'{count_trained / 1e6:,.2f}', f'{count * 4 / gib:,.2f}',
            f'{count * 2 / gib:,.2f}', f'{count_trained * 8 / gib:,.2f}']


# ---------------------------------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> str:
    """Run the benchmark (or the construct-only check); print the Markdown report, write it to ``--out``, return it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = SPECS[args.restorer]
    if not available(spec):
        report = (f'{spec.title}: `{spec.arch_type}` is not registered in this checkout '
                  f'(drward/archs/{args.restorer}_arch.py missing); skipped.\n')
    elif args.construct_only:
        report = construct_report(args, spec)
    else:
        if args.size == 'sd21' and args.device == 'cpu':
            print('refl_step: SD 2.1 sizes on the CPU take a very long time; meant for --device cuda',
                  file=sys.stderr)
        report = benchmark_report(args, spec)
    print(report)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as handle:
            handle.write(report)
    return report


if __name__ == '__main__':
    main()
