"""``memory_budget.py --world-size P``: one GPU's share of a P-process run, counted.

With ``train.shard_optimizer_states`` a rank keeps the AdamW states of the parameters ZeroRedundancyOptimizer
assigns it (largest parameter first, each to the least-loaded rank, whole parameters only:
:func:`drward.models.parallel.zero_shard_bytes`); DDP keeps the generator's gradients in its buckets for the whole
run, so they are alive in the FRM update too.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from torch import nn


def sharded_shares(net: nn.Module, frm: nn.Module, world_size: int) -> Tuple[Optional[int], Optional[int]]:
    """The largest per-GPU share of the generator's and of the FRM's trained bytes under ZeroRedundancyOptimizer
    over ``world_size`` ranks (its parameter groups as the models build them); (None, None) for one GPU."""
    if world_size <= 1:
        return None, None
    from drward.models.frm_optim import frm_param_groups
    from drward.models.parallel import zero_shard_bytes
    generator = zero_shard_bytes([list(net.trainable_parameters())], world_size)
    frm_groups = [group['params'] for group in frm_param_groups(frm, 0.0)]
    return max(generator), max(zero_shard_bytes(frm_groups, world_size))


def sharing_note(world_size: int) -> str:
    """What the AdamW rows say beside ``2 × trained``."""
    return f', sharded over {world_size} GPUs (largest share)' if world_size > 1 else ''


def per_gpu_total(rows: List[List[str]], budget, total: str, cells: Callable) -> Tuple[str, str]:
    """For P > 1: append the row of what sharding saves per GPU; return the total's label and the extra term of its
    formula (DDP's generator gradients). For one GPU: the label unchanged and no term."""
    p = budget.world_size
    if p <= 1:
        return total, ''
    saved = 2 * (budget.generator_trained + budget.frm_trained) - budget.optimiser_states
    rows.append(['(sharding saves per GPU, not added)', f'AdamW states unsharded − sharded over {p}',
                 *cells(saved, saved)])
    return total.replace('**total', f'**total per GPU ({p} GPUs)'), ' + generator gradients'
