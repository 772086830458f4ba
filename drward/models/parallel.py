"""Data parallelism for drward's models: DDP over the trained parameters only, and sharded AdamW states.

**DDP.** BasicSR's ``model_to_device`` wraps a whole network in ``DistributedDataParallel`` when ``opt['dist']``.
A drward restorer is mostly frozen (SD's UNet, VAE, stage 1) and trains one part (the IRControlNet, or OSEDiff's
LoRA factors and ``conv_in``), and its training call is ``restore(...)``, not ``forward``. :func:`wrap_for_training`
wraps a :class:`TrainingForward` — a module whose ``forward`` is one method of the network — so that

* DDP's gradient reducer holds only the parameters with ``requires_grad`` (DDP leaves the others out): one
  all-reduce of the trained gradients per optimiser step, averaged over the P ranks;
* every parameter and buffer is broadcast from rank 0 once, at wrapping (tiny random models and freshly
  initialised parts are then the same on every rank; a resumed checkpoint is read by every rank anyway);
* buffers are not re-broadcast at every forward (``forward_sync_buffers=False``: the restorers' buffers are
  constants), so a forward is no collective and rank 0 can validate with the bare network while the others wait;
* ``gradient_as_bucket_view``: the gradients are views into DDP's buckets, no second copy. DDP keeps those buckets
  allocated for the whole run (one gradient-sized buffer, also between steps);
* what the broadcast wrote is marked changed (:func:`~drward.utils.distributed.mark_changed`): cached bf16 casts
  of the weights are rebuilt.

The model keeps the bare network (``self.net_g``) for everything else: validation, checkpoints, the reward report.
Gradient accumulation over micro-batches: :func:`sync_on_last` gives ``no_sync()`` for all but the last one.

**Sharded AdamW states** (``train.shard_optimizer_states``): :func:`make_optimizer` builds a
``torch.distributed.optim.ZeroRedundancyOptimizer`` — each rank keeps the states (``exp_avg``, ``exp_avg_sq``) of
its share of the parameters, steps that share and broadcasts it (:class:`ShardedOptimizer` then marks every
parameter changed, for the same reason as above). Saving a training state first gathers every
share on rank 0 (:func:`consolidate`), so the file holds an ordinary optimiser ``state_dict``: it resumes on any
number of ranks, sharded or not. :func:`zero_shard_bytes` counts the per-rank share the way ZeRO partitions
(largest parameter first, to the least-loaded rank), for the memory budget.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager, Dict, Iterable, List, Mapping, Sequence, Union

import torch
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

from drward.utils.distributed import is_dist, mark_changed

ParamsOrGroups = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]


class TrainingForward(nn.Module):
    """``forward(*args, **kwargs)`` = ``module.<method>(*args, **kwargs)``: the module DDP wraps, holding the
    network (so its parameters) as ``self.module``."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


def wrap_for_training(module: nn.Module, method: str, opt: Mapping, device: torch.device) -> nn.Module:
    """``module.<method>`` as a callable module: DDP-wrapped when ``opt['dist']`` (see the module docstring), the
    plain :class:`TrainingForward` otherwise. ``opt['find_unused_parameters']`` is BasicSR's option."""
    step = TrainingForward(module, method)
    if not opt.get('dist'):
        return step
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == 'cuda' else None
    wrapped = DistributedDataParallel(step, device_ids=device_ids, forward_sync_buffers=False,
                                      find_unused_parameters=bool(opt.get('find_unused_parameters', False)),
                                      gradient_as_bucket_view=True)
    mark_changed([*module.parameters(), *module.buffers()])  # rank 0's, written by DDP's broadcast
    return wrapped


def sync_on_last(wrapped: nn.Module, index: int, count: int) -> ContextManager:
    """For micro-batch ``index`` of ``count``: DDP's ``no_sync()`` (gradients accumulate locally) on all but the
    last, whose backward all-reduces the accumulated sum; a null context without DDP."""
    if isinstance(wrapped, DistributedDataParallel) and index < count - 1:
        return wrapped.no_sync()
    return nullcontext()


# ---------------------------------------------------------------------------------------------------- ZeRO
def optimizer_class(optim_type: str) -> type:
    """The ``torch.optim`` class of a BasicSR optimiser ``type`` (``AdamW``, ``Adam``, ...)."""
    cls = getattr(torch.optim, optim_type, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f'optimizer type {optim_type!r} is not a torch.optim optimiser')
    return cls


class ShardedOptimizer(ZeroRedundancyOptimizer):
    """``ZeroRedundancyOptimizer`` whose step marks every parameter changed: the shares it receives from the other
    ranks arrive by broadcast, which bumps no version counter."""

    def step(self, closure=None, **kwargs):
        loss = super().step(closure, **kwargs)
        mark_changed(self._all_params)
        return loss


def make_optimizer(optim_type: str, params: ParamsOrGroups, shard: bool, **kwargs) -> torch.optim.Optimizer:
    """``torch.optim.<optim_type>(params, **kwargs)``, or with ``shard`` (and a process group) a
    ``ZeroRedundancyOptimizer`` holding this rank's share of its states."""
    cls = optimizer_class(optim_type)
    if 'betas' in kwargs:  # option files give lists; BasicSR's GFPGAN fix: floats, not ints
        kwargs['betas'] = tuple(float(b) for b in kwargs['betas'])
    if shard and is_dist():
        return ShardedOptimizer(list(params), optimizer_class=cls, **kwargs)
    return cls(params, **kwargs)


def is_sharded(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, ZeroRedundancyOptimizer)


def consolidate(optimizers: Sequence[torch.optim.Optimizer], to: int = 0) -> None:
    """Gather every sharded optimiser's states on rank ``to`` (a collective: call it on every rank), so that its
    ``state_dict()`` there is the whole optimiser's."""
    for optimizer in optimizers:
        if is_sharded(optimizer):
            optimizer.consolidate_state_dict(to=to)


def zero_shard_bytes(groups: Sequence[Sequence[torch.Tensor]], world_size: int) -> List[int]:
    """Bytes of parameters each rank owns under ZeroRedundancyOptimizer's partition: within each group, largest
    parameter first, each to the rank with the fewest elements so far (ties: the lowest rank), the load carried
    across groups. Works on meta tensors. AdamW's states on a rank are twice its share."""
    elements, owned = [0] * world_size, [0] * world_size
    for group in groups:
        for p in sorted(group, key=lambda t: t.numel(), reverse=True):
            r = elements.index(min(elements))
            elements[r] += p.numel()
            owned[r] += p.numel() * p.element_size()
    return owned


__all__: List[str] = ['TrainingForward', 'wrap_for_training', 'sync_on_last', 'ShardedOptimizer', 'optimizer_class',
                       'make_optimizer', 'is_sharded', 'consolidate', 'zero_shard_bytes']
