"""FRM pair loss ``L_FRM`` (paper, FRM training; docs/design.md §1).

For a pair with logits ``[s_1, s_2]`` (``s_k = exp(logit_scale)·cos(e_Ik, e_T)``) and label ``y`` (one-hot, or soft):
``L_FRM = −Σ_j y_j · log softmax([s_1, s_2])_j``, reduced over the batch by ``mean`` or ``sum`` (the dynamic FRM
update of the official code sums, then scales by 0.1 through ``loss_weight``).

Labels: an index tensor (B,) of the preferred image (0 = first), or a float tensor (B,) with P(first preferred), or a
(B, 2) probability tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.losses.common import reduce
from drward.utils.option_schema import Choice, Num, declare
from drward.utils.registry import register


def soft_labels(labels: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, 2) probabilities from an index, a P(first) value, or (B, 2) probabilities."""
    if labels.ndim == 2 and labels.shape == (batch, 2):
        return labels.float()
    if labels.ndim == 1 and labels.shape[0] == batch:
        if labels.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8):
            return F.one_hot(labels.long(), 2).float()
        p = labels.float()
        return torch.stack([p, 1 - p], dim=1)
    raise ValueError(f'PreferenceLoss: labels must be (B,) indices / P(first) or (B, 2) probabilities for B={batch}, '
                     f'got shape {tuple(labels.shape)}')


@register(LOSS_REGISTRY)
@declare(loss_weight=(Num(0), 'weight of the pair cross-entropy'), reduction=(Choice('mean', 'sum'), 'over the pairs'))
class PreferenceLoss(nn.Module):
    """``loss_weight · reduce_b(−Σ_j y_bj log softmax(s_b)_j)``."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        self.loss_weight, self.reduction = loss_weight, reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        if pred.ndim != 2 or pred.shape[1] != 2:
            raise ValueError(f'PreferenceLoss: logits must be (B, 2), got {tuple(pred.shape)}')
        y = soft_labels(target.to(pred.device), pred.shape[0])
        per_pair = -(y * F.log_softmax(pred.float(), dim=1)).sum(dim=1)
        return self.loss_weight * reduce(per_pair, self.reduction)


def pair_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs whose higher logit is the preferred image (soft labels: the more likely one)."""
    y = soft_labels(labels.to(logits.device), logits.shape[0])
    return (logits.argmax(dim=1) == y.argmax(dim=1)).float().mean()
