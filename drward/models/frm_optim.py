"""The FRM's optimiser and one preference step, shared by ReFL's dynamic FRM update and FRM pre-training.

HPS v2 / the authors' recipe (docs/design.md §1): AdamW, weight decay only on ≥ 2-D weights (matrices, conv kernels,
embeddings); biases, norm parameters and ``logit_scale`` get none; gradient-norm clip (1.0 in ReFL).

Across P processes the step is one step on the global batch: every rank's gradient is combined before the clip
(DDP's average, or :func:`~drward.utils.distributed.average_gradients`), times P when the loss *sums* over its
pairs (:func:`global_batch_scale`), so that P ranks × b pairs give the update of one process on P·b pairs.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

from drward.losses.preference_loss import PreferenceLoss, pair_accuracy
from drward.models.parallel import make_optimizer
from drward.utils.distributed import all_ranks_agree, world_size
from drward.utils.options import OptionError


def frm_param_groups(frm: nn.Module, weight_decay: float) -> List[Dict]:
    """Trainable parameters split into ``ndim ≥ 2`` (decayed) and the rest (biases, norms, logit_scale: no decay)."""
    decay, no_decay = [], []
    for name, p in frm.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and 'logit_scale' not in name else no_decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def build_frm_optimizer(frm: nn.Module, opt: Mapping, shard: bool = False) -> torch.optim.Optimizer:
    """AdamW over :func:`frm_param_groups`; ``opt`` holds ``lr``, ``betas``, ``eps``, ``weight_decay`` (the caller's
    defaults filled in: ``OFFICIAL_FRM_OPTIM`` of the dynamic update, ``HPS_V2_OPTIM`` of FRMModel) and optionally
    ``type: AdamW``. ``shard``: its states split across the ranks (:func:`~drward.models.parallel.make_optimizer`)."""
    if opt.get('type', 'AdamW') != 'AdamW':
        raise OptionError("FRM optimiser: type: only AdamW is supported (the authors' and HPS v2's choice)")
    groups = frm_param_groups(frm, float(opt['weight_decay']))
    return make_optimizer('AdamW', groups, shard, lr=float(opt['lr']), betas=tuple(opt['betas']),
                          eps=float(opt['eps']))


def global_batch_scale(reduction: str) -> float:
    """What the rank-averaged gradient is multiplied by to be the global batch's: P for a summed loss, else 1."""
    return float(world_size()) if reduction == 'sum' else 1.0


def preference_step(frm, optimizer: torch.optim.Optimizer, loss_fn: PreferenceLoss, img_a: torch.Tensor,
                    img_b: torch.Tensor, captions, labels: torch.Tensor, grad_clip: Optional[float] = 1.0,
                    step: bool = True, forward: Optional[Callable] = None,
                    after_backward: Optional[Callable[[], None]] = None) -> Dict[str, float]:
    """One FRM step on pairs: ``L_FRM(frm.preference_logits(a, b, T), y)``, backward, clip, AdamW step.

    Returns the loss and the pair accuracy measured on the logits *before* the step. A non-finite loss or gradient
    norm steps nothing (the gradients are cleared) and adds ``frm_skipped: 1.0``; the caller logs it.
    Multi-process: ``forward`` computes the logits instead of ``frm.preference_logits`` (a DDP wrapper of it),
    ``after_backward`` combines the ranks' gradients before the clip; a non-finite loss on any rank skips the step
    on every rank (the gradient norm, measured after combining, is the same everywhere).
    """
    logits = (forward or frm.preference_logits)(img_a, img_b, captions)
    loss = loss_fn(logits, labels)
    accuracy = float(pair_accuracy(logits.detach(), labels))
    if not all_ranks_agree(bool(torch.isfinite(loss))):
        optimizer.zero_grad(set_to_none=True)
        return {'l_frm': float(loss.detach()), 'frm_acc': accuracy, 'frm_skipped': 1.0}
    loss.backward()
    if after_backward is not None:
        after_backward()
    # the norm is measured even without clipping (max_norm = inf) so that a non-finite gradient is never stepped
    grad_norm = float(torch.nn.utils.clip_grad_norm_(list(frm.trainable_parameters()), grad_clip or float('inf')))
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return {'l_frm': float(loss.detach()), 'frm_acc': accuracy, 'frm_grad_norm': grad_norm, 'frm_skipped': 1.0}
    if step:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {'l_frm': float(loss.detach()), 'frm_acc': accuracy, 'frm_grad_norm': grad_norm}
