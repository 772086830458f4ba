"""LoRA rows of the memory budget (``benchmarks/memory_budget.py --lora-ranks 8 32 128``): DiffBIR + FRM with the
full IRControlNet trained (the paper) and with LoRA adapters of each rank on it, side by side, against a 12 GiB card.

Each row is a whole budget (:class:`benchmarks.memory_budget.Budget`, counted on the meta-device build): with LoRA
the IRControlNet's own weights are frozen (stored in ``weight_dtype``), no θ₀ copy is kept (θ₀ = the adapters
disabled), and gradients and AdamW states exist for the factors only. The saved activations are the ones given with
``--activations-gib`` (measured on the full fine-tune's step) or measured per row; LoRA keeps nearly the same graph
(the gradient still flows back through the whole IRControlNet to the adapters; the adapters' inputs and rank-r
intermediates are added, the frozen layers' weight gradients need nothing), which the tiny-size rows measure.

The paper's recipe (batch 4 as 4 micro-batches of 1 by accumulation, K = 50, the FRM updated every 10 steps) has
the peak of one micro-batch's step: the N = 1 graph does not depend on K, accumulation keeps only the gradients
(counted), and the FRM update is phase 2 of the budget.
"""
from __future__ import annotations

import argparse
import copy
from typing import List, Optional, Sequence

from benchmarks.lib.common import markdown_table

GOAL_12_GIB = 12


def lora_budgets(args: argparse.Namespace, spec, ranks: Sequence[int]) -> List[tuple]:
    """``[(label, rank or None, Budget), ...]``: the full fine-tune, then one per LoRA rank."""
    from benchmarks.memory_budget import build_budget
    rows = []
    for rank in [None, *ranks]:
        variant = copy.copy(args)
        variant.lora_rank = rank
        rows.append(('full IRControlNet (paper)' if rank is None else f'LoRA rank {rank}', rank,
                     build_budget(variant, spec)))
    return rows


def _fmt(value: Optional[int], scale: float) -> str:
    return 'OOM' if value is None else f'{value / scale:,.2f}'


def render_lora(args: argparse.Namespace, spec, budgets: List[tuple]) -> str:
    from benchmarks.memory_budget import GIB, size_title
    scale, unit = (GIB, 'GiB') if args.size == 'sd21' else (2 ** 20, 'MiB')
    rows = []
    for label, _rank, budget in budgets:
        weights = budget.weights - budget.casts_in_components
        rows.append([label, f'{budget.generator_trained / 4 / 1e6:,.2f}', _fmt(weights, scale),  # fp32 masters
                     _fmt(budget.generator_trained, scale), _fmt(2 * budget.generator_share, scale),
                     _fmt(budget.activations[True].generator, scale) if budget.activations and
                     budget.activations[True] is not None else '-',
                     _fmt(budget.total(False), scale), _fmt(budget.total(True), scale),
                     _fmt(budget.total(True, True), scale)])
    acts = ('activations as given (--activations-gib: the full fine-tune\'s measured graph)'
            if getattr(args, 'activations_gib', None) else
            'activations measured on one step per row' if not args.skip_activations else
            'no activations (lower bounds)')
    header = (f'## Memory budget with LoRA: {spec.title} + FRM ({size_title(args.size)}), {args.resolution}², '
              f'micro-batch 1, N = 1, weight_dtype {args.weight_dtype or "default"}; {acts}')
    table = markdown_table(['generator', 'trained M params', f'weights {unit}', f'gradients {unit}',
                            f'AdamW states {unit}', f'graph, ckpt {unit}', f'peak {unit}', f'peak, ckpt {unit}',
                            f'peak, ckpt + FRM offload {unit}'], rows, align='lrrrrrrrr')
    blocks = [header, table]
    if args.size == 'sd21':
        blocks.append(goal_line(budgets))
    return '\n\n'.join(blocks) + '\n'


def _phases(budget) -> tuple:
    """(phase-1 bytes, phase-2 bytes, weights held through both) of the checkpointed, FRM-offloaded step."""
    acts = budget.activations[True] if budget.activations else None
    generator_graph, frm_graph = (acts.generator, acts.frm_update) if acts is not None else (0, 0)
    phase1 = budget.casts + generator_graph + budget.generator_trained - budget.held_gradients + \
        2 * budget.generator_share
    phase2 = frm_graph + budget.frm_trained + 2 * budget.frm_share
    return phase1, phase2, budget.weights - budget.casts_in_components + budget.held_gradients


def goal_line(budgets: List[tuple]) -> str:
    """Whether the checkpointed, offloaded LoRA step fits 12 GiB; otherwise which phase sets the peak and what
    brings it under (computed from the same budget)."""
    from benchmarks.memory_budget import GIB
    goal = GOAL_12_GIB * GIB
    best = [(label, b.total(True, True)) for label, rank, b in budgets if rank is not None]
    fits = [label for label, total in best if total is not None and total <= goal]
    unseen = ('Not counted: transient workspace (attention, convolution, AdamW temporaries), the batched no-grad '
              'prefix\'s batch-4 calls and the CUDA context (typically 0.3-0.5 GiB).')
    if fits:
        return (f'**Fits a {GOAL_12_GIB} GiB card** (counted, with checkpointing and the FRM offload): '
                f'{", ".join(fits)}. {unseen}')
    label, total = min(best, key=lambda item: item[1] if item[1] is not None else float('inf'))
    budget = next(b for name, _, b in budgets if name == label)
    phase1, phase2, held = _phases(budget)
    frm_weights = sum(c.total for c in budget.components if c.name == 'FRM')
    restorer = held - frm_weights  # the restorer's (and the fidelity losses') weights: idle during the FRM update
    parked = max(held + phase1, held - restorer + phase2)
    eight_bit = held + max(phase1, phase2 - 2 * budget.frm_share * 3 // 4)
    peak_phase = 'the dynamic FRM update (phase 2)' if phase2 > phase1 else "the generator's step (phase 1)"
    return (f'**Over {GOAL_12_GIB} GiB by {(total - goal) / GIB:,.2f} GiB** with {label}, checkpointing and the FRM '
            f'offload: the peak is {peak_phase}, {held / GIB:,.2f} GiB of weights + {phase2 / GIB:,.2f} GiB (FRM '
            f'graph, gradients and AdamW states) against {phase1 / GIB:,.2f} GiB in phase 1. What it takes: the '
            f'restorer\'s frozen weights ({restorer / GIB:,.2f} GiB) parked in host memory during the FRM update '
            f'(every n = 10 steps, as the offload does for the AdamW states; not implemented): '
            f'{parked / GIB:,.2f} GiB; or 8-bit AdamW states for the FRM (bitsandbytes, not in drward): '
            f'{eight_bit / GIB:,.2f} GiB. {unseen}')
