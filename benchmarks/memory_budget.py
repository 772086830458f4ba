"""Memory budget of one ReFL training step: what a GPU must hold for DiffBIR + FRM and OSEDiff + FRM, one row per
component, the total being the predicted CUDA peak, next to the 24 GiB of the cards most users have.

* **weights**: counted from the built modules (on the meta device: no memory, nothing initialised), each tensor's
  dtype and ``requires_grad`` as the model holds them — whatever storage ``weight_dtype`` chooses shows up as it is;
  every tensor reachable from a module counts, parameters, buffers and tensor attributes (a compute copy, a θ₀
  snapshot), each storage once;
* **gradients**: one per trained parameter, in its dtype; **AdamW states**: two per trained parameter (``exp_avg``,
  ``exp_avg_sq``, ``zeros_like(param)``), for the generator and for the FRM's unlocked groups;
* **saved activations**: what autograd keeps for the backward pass, measured exactly on one real ReFL step (N = 1)
  by the saved-tensor hooks of :class:`benchmarks.lib.common.SavedTensorMeter` (with checkpointing: plus the inputs
  the checkpoints keep). The N = 1 graph holds only the last denoiser call, so it does not depend on K:
  ``--steps`` shortens the no-grad prefix without changing the figure. ``--skip-activations`` prints the analytic
  rows only.

The step runs in two phases that are never alive together: the generator's forward + backward (its graph, then its
gradients; ``zero_grad(set_to_none=True)`` after the step) and the dynamic FRM update (its graph and gradients).
The bf16 casts of trained weights (the IRControlNet's compute copy, the FRM's cached casts of its trained half) live
in phase 1 only: each is stale once its optimiser steps and is released then (``Restorer.release_compute_caches``,
``FaceRewardModel.release_compute_cache``), before the FRM update allocates its gradients. So

    peak = weights without casts + AdamW states (generator + FRM)
           + max(casts + generator graph + gradients, FRM-update graph + gradients)

``--world-size P``: one GPU of a P-process run (:mod:`benchmarks.lib.budget_sharding`): sharded AdamW states; DDP's
generator-gradient buckets live in both phases. Not counted (small, or outside PyTorch's allocator): transient
workspace (attention, convolution, AdamW's foreach temporaries), one checkpointed region's recomputation, the CUDA
context.

    python benchmarks/memory_budget.py --skip-activations                 # SD 2.1 sizes, both restorers, counted
    python benchmarks/memory_budget.py --restorer diffbir --steps 2       # + activations measured (minutes, ~20 GiB)
    python benchmarks/memory_budget.py --size tiny --restorer both        # the same at tiny size (seconds)
    python benchmarks/memory_budget.py --skip-activations --world-size 4  # per GPU, 4 ranks, sharded AdamW states
    python benchmarks/memory_budget.py --restorer diffbir --weight-dtype bf16 --activations-gib 5.47 2.75 1.36
                                                                          # counted, with activations measured before
    python benchmarks/memory_budget.py --weight-dtype bf16 --activations-gib 5.47 2.75 1.36 --lora-ranks 8 32 128
                                          # DiffBIR: full fine-tune vs LoRA ranks (benchmarks/lib/budget_lora.py)
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402

from benchmarks.lib.bench_models import (  # noqa: E402
    SPECS,
    RestorerSpec,
    accepts_option,
    available,
    build_on_meta,
    build_refl_model,
    make_batch,
    set_checkpointing,
    size_title,
)
from benchmarks.lib.budget_counting import (  # noqa: E402,F401
    FRM_CASTS,
    HELD_OUTSIDE,
    Component,
    count_components,
    named_components,
    reachable_tensors,
)
from benchmarks.lib.budget_sharding import per_gpu_total, sharded_shares, sharing_note  # noqa: E402
from benchmarks.lib.common import PartClock, SavedTensorMeter, emit_report, markdown_table, memory_probe  # noqa: E402
from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402
from benchmarks.lib.step_parts import GENERATOR_FORWARD_PARTS, instrument, model_tensors, run_step  # noqa: E402

GOAL_GIB = 24
GIB = 2 ** 30


# ---------------------------------------------------------------------------------------------------- activations
@dataclass
class Activations:
    """Bytes saved for backward in one step: the generator's graph (N = 1) and the FRM update's graph."""

    generator: int
    frm_update: int
    cuda_peak: Optional[int] = None  # on CUDA: the step's peak allocated, to hold the prediction against
    cuda_reserved: Optional[int] = None  # on CUDA: the step's peak reserved by the caching allocator (nvidia-smi's)


def measure_activations(args: argparse.Namespace, spec: RestorerSpec) -> Tuple[Dict[bool, Activations],
                                                                              List[Component]]:
    """One real ReFL step (N = 1) without and one with gradient checkpointing (restorer and FRM): saved bytes by
    phase, and on CUDA the step's peak allocated (the first step also creates the AdamW states). Also the weights
    counted on the real model after the steps, so that casts made at the first call (cached compute copies) count."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as workdir:
        model = build_refl_model(args, spec, workdir)
    batch = make_batch(args, device)
    probe = memory_probe(device)
    clock = PartClock(probe, SavedTensorMeter(model_tensors(model)))
    measured = {}
    try:
        with instrument(model, clock):
            for checkpointing in (True, False):  # checkpointed first: the variant a 24 GiB card can run
                measured[checkpointing] = _measure_variant(model, batch, clock, checkpointing, args.seed, device)
    finally:
        probe.close()
    # the generator step released the restorer's compute copy (stale after its optimiser step); phase 1 holds it
    # again from the next restore on, so it is remade here before counting
    getattr(model.net_g, 'refresh_compute', lambda with_grad: None)(False)
    losses = [c for key, c in model.criteria.items() if c is not None and key != 'l_reward']
    return measured, count_components(named_components(model.net_g, model.frm, losses))


def _measure_variant(model, batch, clock, checkpointing: bool, seed: int,
                     device: torch.device) -> Optional[Activations]:
    """One step with checkpointing on or off; None when it runs out of (CUDA) memory, which frees what it held."""
    set_checkpointing(model, checkpointing, checkpointing)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    try:
        parts = run_step(model, batch, clock, 1, seed)
    except torch.cuda.OutOfMemoryError as error:
        print(f'memory_budget: the step with checkpointing {"on" if checkpointing else "off"} ran out of memory '
              f'({str(error).splitlines()[0][:160]}); reported as OOM', file=sys.stderr)
        model.optimizer_g.zero_grad(set_to_none=True)
        model.optimizer_frm.zero_grad(set_to_none=True)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        return None
    generator = sum(m.saved_bytes for key, m in parts.items() if key in GENERATOR_FORWARD_PARTS)
    peak = clock.start_bytes + clock.peak_bytes if device.type == 'cuda' else None
    reserved = torch.cuda.max_memory_reserved(device) if device.type == 'cuda' else None
    return Activations(generator, parts['frm_update'].saved_bytes, peak, reserved)


# ---------------------------------------------------------------------------------------------------- the budget
@dataclass
class Budget:
    """Everything the table shows, in bytes. ``activations``: keyed by checkpointing on/off; None when skipped.
    ``*_share``: the trained bytes whose AdamW states one GPU holds (all of them unless ``world_size`` > 1)."""

    components: List[Component]
    generator_trained: int
    frm_trained: int
    activations: Optional[Dict[bool, Activations]]
    #: bf16 casts of trained weights, alive in phase 1 only (counted in ``components`` where the model holds them)
    casts_in_components: int = 0
    #: the FRM's casts when the count was made on the meta device (made at its first reward call, so not held yet)
    frm_casts_to_come: int = 0
    world_size: int = 1
    generator_share: Optional[int] = None
    frm_share: Optional[int] = None

    def __post_init__(self) -> None:
        self.generator_share = self.generator_trained if self.generator_share is None else self.generator_share
        self.frm_share = self.frm_trained if self.frm_share is None else self.frm_share

    @property
    def weights(self) -> int:
        return sum(c.total for c in self.components)

    @property
    def optimiser_states(self) -> int:
        return 2 * (self.generator_share + self.frm_share)

    @property
    def held_gradients(self) -> int:
        """Gradients alive through both phases: DDP's buckets of the generator's (multi-GPU only)."""
        return self.generator_trained if self.world_size > 1 else 0

    @property
    def casts(self) -> int:
        return self.casts_in_components + self.frm_casts_to_come

    def total(self, checkpointing: bool, offload_frm: bool = False) -> Optional[int]:
        """The predicted peak (module docstring); without measured activations, its lower bound. ``offload_frm``
        (``train.frm_update.offload``): the FRM's AdamW states on the GPU in phase 2 only, the generator's in
        phase 1 only (host memory otherwise)."""
        acts = self.activations[checkpointing] if self.activations else Activations(0, 0)
        if acts is None:  # that variant ran out of memory
            return None
        phase1 = self.casts + acts.generator + self.generator_trained - self.held_gradients
        phase2 = acts.frm_update + self.frm_trained
        base = self.weights - self.casts_in_components + self.held_gradients
        if offload_frm:  # each optimiser's states on the GPU in its own phase only (drward/models/state_offload.py)
            return base + max(phase1 + 2 * self.generator_share, phase2 + 2 * self.frm_share)
        return base + self.optimiser_states + max(phase1, phase2)


def build_budget(args: argparse.Namespace, spec: RestorerSpec) -> Budget:
    net, frm, losses = build_on_meta(args, spec)
    components = count_components(named_components(net, frm, losses))
    frm_trained = next(c.trained_bytes for c in components if c.name == 'FRM')
    generator_trained = sum(c.trained_bytes for c in components) - frm_trained
    shares = sharded_shares(net, frm, args.world_size)
    activations = None
    if getattr(args, 'activations_gib', None):
        off, on, frm_graph = (int(v * GIB) for v in args.activations_gib)
        activations = {False: Activations(off, frm_graph), True: Activations(on, frm_graph)}
    elif not args.skip_activations:
        activations, components = measure_activations(args, spec)
    casts = sum(c.total for c in components if c.name in (HELD_OUTSIDE, FRM_CASTS))
    # before its first reward call the FRM holds no casts: one bf16 copy of its fp32 trained half comes then
    frm_bf16 = any('bfloat16' in c.frozen for c in components if c.name == 'FRM')
    no_cache = not any(c.name == FRM_CASTS for c in components)
    to_come = frm_trained // 2 if frm_bf16 and no_cache else 0
    return Budget(components, generator_trained, frm_trained, activations, casts, to_come, args.world_size, *shares)


def _describe(parts: Dict[str, int], scale: float) -> str:
    return ' + '.join(f'{b / scale:,.2f} {dtype}' for dtype, b in sorted(parts.items()))


def budget_rows(budget: Budget, scale: float) -> List[List[str]]:
    def cells(off: Optional[float], on: Optional[float]) -> List[str]:
        return [f'{v / scale:,.2f}' if v is not None else 'OOM' for v in (off, on)]

    def measured(checkpointing: bool, attr: str) -> Optional[int]:
        acts = budget.activations[checkpointing]
        return getattr(acts, attr) if acts is not None else None
    rows = []
    for c in budget.components:
        kinds = [f'frozen {_describe(c.frozen, scale)}'] if c.frozen else []
        kinds += [f'trained {_describe(c.trained, scale)}'] if c.trained else []
        rows.append([f'weights: {c.name}', '; '.join(kinds), *cells(c.total, c.total)])
    if budget.frm_casts_to_come:
        rows.append([f'weights: {FRM_CASTS}', 'made at its first reward call (bf16)',
                     *cells(budget.frm_casts_to_come, budget.frm_casts_to_come)])
    acts = budget.activations
    not_measured = ['not measured'] * 2
    p = budget.world_size
    shared = sharing_note(p)
    rows += [
        ['gradients: generator', 'DDP buckets, held through both phases' if p > 1 else
         'one per trained parameter (phase 1)', *cells(budget.generator_trained, budget.generator_trained)],
        ['AdamW states: generator', f'2 × trained{shared}',
         *cells(2 * budget.generator_share, 2 * budget.generator_share)],
        ['gradients: FRM', 'FRM update (phase 2)', *cells(budget.frm_trained, budget.frm_trained)],
        ['AdamW states: FRM', f'2 × FRM trained{shared}', *cells(2 * budget.frm_share, 2 * budget.frm_share)],
        ['saved activations: generator graph (N = 1)', 'measured (phase 1)',
         *(cells(measured(False, 'generator'), measured(True, 'generator')) if acts else not_measured)],
        ['saved activations: FRM update', 'measured (phase 2)',
         *(cells(measured(False, 'frm_update'), measured(True, 'frm_update')) if acts else not_measured)],
    ]
    total = '**total = predicted peak**' if acts else '**total without activations (lower bound)**'
    total, held = per_gpu_total(rows, budget, total, cells)
    rows.append([total, f'weights + states{held} + max(phase 1, phase 2); the casts count in phase 1 only '
                 f'({budget.casts / scale:,.2f})', *cells(budget.total(False), budget.total(True))])
    rows.append([total.replace('**total', '**total, FRM AdamW states offloaded'),
                 'train.frm_update.offload: max(phase 1 + generator states, phase 2 + FRM states)',
                 *cells(budget.total(False, True), budget.total(True, True))])
    if acts and any(a is not None and a.cuda_peak is not None for a in acts.values()):
        rows.append(['measured CUDA peak of the step', 'torch.cuda.max_memory_allocated',
                     *cells(measured(False, 'cuda_peak'), measured(True, 'cuda_peak'))])
        rows.append(['measured CUDA peak reserved', 'torch.cuda.max_memory_reserved (what nvidia-smi shows)',
                     *cells(measured(False, 'cuda_reserved'), measured(True, 'cuda_reserved'))])
    return rows


def closing_line(budget: Budget) -> str:
    """Over the goal: by how much, and what each measure would save (from this budget's own figures)."""
    best = budget.total(True) if budget.activations else budget.total(False)
    if best is None:
        return '**The checkpointed step ran out of memory on this device.**'
    over = best - GOAL_GIB * GIB
    if over <= 0 and not budget.activations:
        return (f'Without activations the budget leaves {-over / GIB:,.2f} GiB of the {GOAL_GIB} GiB goal for the '
                f'larger phase\'s saved activations and workspace (measure them: drop --skip-activations).')
    if over <= 0:
        return f'Fits the {GOAL_GIB} GiB goal with {-over / GIB:,.2f} GiB to spare (with checkpointing).'
    fp32_frozen = sum(c.frozen.get('float32', 0) for c in budget.components)
    measures = []
    if fp32_frozen:
        measures.append(f'frozen weights stored in bf16 (`weight_dtype: bf16`): −{fp32_frozen / 2 / GIB:,.2f} GiB')
    measures.append(f'8-bit AdamW states for the FRM: −{budget.frm_trained * 2 * 3 / 4 / GIB:,.2f} GiB, for the '
                    f'generator: −{budget.generator_trained * 2 * 3 / 4 / GIB:,.2f} GiB')
    measures.append(f'FRM AdamW states kept on the CPU between updates (every n = 10 steps): '
                    f'−{2 * budget.frm_trained / GIB:,.2f} GiB')
    measures.append('multi-GPU training with `train.shard_optimizer_states` (the per-GPU budget: `--world-size P`)')
    return f'**Over the {GOAL_GIB} GiB goal by {over / GIB:,.2f} GiB.** What closes it: ' + '; '.join(measures) + '.'


def _weight_dtype_note(args: argparse.Namespace, spec: RestorerSpec) -> str:
    """``--weight-dtype``, and the models that do not have the option (they keep their default)."""
    if args.weight_dtype is None:
        return '(the models\' default)'
    from basicsr.utils.registry import ARCH_REGISTRY

    from drward.archs.frm_arch import FaceRewardModel
    lacking = [cls.__name__ for cls in (ARCH_REGISTRY.get(spec.arch_type), FaceRewardModel)
               if not accepts_option(cls, 'weight_dtype')]
    return args.weight_dtype + (f' ({", ".join(lacking)}: no such option, default kept)' if lacking else '')


def render(args: argparse.Namespace, spec: RestorerSpec, budget: Budget) -> str:
    scale, unit = (GIB, 'GiB') if args.size == 'sd21' else (2 ** 20, 'MiB')
    per_gpu = f', per GPU of {args.world_size} (sharded AdamW states)' if args.world_size > 1 else ''
    header = (f'## Memory budget: {spec.title} + FRM ({size_title(args.size)}), {args.resolution}², batch '
              f'{args.batch}, N = 1, autocast {args.dtype}, weight_dtype {_weight_dtype_note(args, spec)}{per_gpu}'
              + (f', LoRA rank {args.lora_rank} on the IRControlNet' if getattr(args, 'lora_rank', None) else ''))
    table = markdown_table(['component', 'what', f'no checkpointing {unit}', f'checkpointing {unit}'],
                           budget_rows(budget, scale), align='llrr')
    in_unit = '' if unit == 'GiB' else f' ({GOAL_GIB * GIB / scale:,.0f} {unit})'
    goal = (f'Goal: {GOAL_GIB} GiB{in_unit}. Phase 1 = the generator\'s forward and backward, phase 2 = the dynamic '
            f'FRM update; never alive together.')
    if getattr(args, 'activations_gib', None):
        goal += (' Activations as given (--activations-gib, measured earlier); weights counted on the meta-device '
                 'build.')
    elif budget.activations:
        goal += (f' Activations measured on one real step on {args.device} with K = {args.steps} (the N = 1 graph '
                 f'does not depend on K); weights counted on that model after its steps.')
    else:
        goal += (' Weights counted on the meta-device build: casts a model makes at its first call (a cached '
                 'compute copy) are not in it; a run with activations counts them.')
    blocks = [header, table, goal]
    if args.size == 'sd21':
        blocks.append(closing_line(budget))
    return '\n\n'.join(blocks) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Memory budget of one ReFL step (restorer + FRM), per component.')
    parser.add_argument('--restorer', choices=(*sorted(SPECS), 'both'), default='both')
    parser.add_argument('--size', choices=('sd21', 'tiny'), default='sd21')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu', help='where activations are measured')
    parser.add_argument('--weight-dtype', choices=('bf16', 'fp32'), default=None,
                        help="the restorers' and the FRM's weight_dtype option (default: the models' default)")
    parser.add_argument('--dtype', choices=('bf16', 'fp32'), default='bf16',
                        help="ReFLModel's mixed_precision (autocast) for the measured step")
    parser.add_argument('--steps', type=int, default=50, help='K; the N = 1 graph does not depend on it')
    parser.add_argument('--resolution', type=int, default=None, help='image side (default: 512 sd21, 64 tiny)')
    parser.add_argument('--skip-activations', action='store_true', help='count only; run no step')
    parser.add_argument('--activations-gib', type=float, nargs=3, default=None,
                        metavar=('GEN_OFF', 'GEN_ON', 'FRM'),
                        help='count only, with activations measured earlier (GiB: generator graph without / with '
                             'checkpointing, FRM update graph), e.g. the README\'s 5.47 2.75 1.36 for DiffBIR')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--world-size', type=int, default=1,
                        help='one GPU of a P-rank run: AdamW states sharded over P, DDP gradient buckets (counted)')
    parser.add_argument('--out', default=None, help='also write the Markdown report to this file')
    parser.add_argument('--lora-rank', type=int, default=None, help='DiffBIR: LoRA of this rank on the IRControlNet')
    parser.add_argument('--lora-ranks', type=int, nargs='+', default=None, metavar='R',
                        help='DiffBIR: the full fine-tune and LoRA of each rank side by side '
                             '(benchmarks/lib/budget_lora.py)')
    add_smoke_flag(parser, 'tiny DiffBIR, counts and one step at 32²',
                   restorer='diffbir', size='tiny', resolution=32, steps=2, dtype='fp32')
    args = apply_smoke(parser.parse_args(argv))
    args.resolution = args.resolution or (512 if args.size == 'sd21' else 64)
    args.batch, args.gradient_checkpointing, args.frm_checkpointing = 1, False, False
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device available')
    return args


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lora_ranks:  # the LoRA table (DiffBIR only: the restorer whose paper recipe trains a whole network)
        from benchmarks.lib.budget_lora import lora_budgets, render_lora
        return emit_report(render_lora(args, SPECS['diffbir'], lora_budgets(args, SPECS['diffbir'], args.lora_ranks)),
                           args.out)
    names = sorted(SPECS) if args.restorer == 'both' else [args.restorer]
    reports = []
    for name in names:
        spec = SPECS[name]
        if not available(spec):
            reports.append(f'{spec.title}: `{spec.arch_type}` is not registered in this checkout; skipped.\n')
            continue
        reports.append(render(args, spec, build_budget(args, spec)))
    report = '\n'.join(reports)
    return emit_report(report, args.out)


if __name__ == '__main__':
    main()
