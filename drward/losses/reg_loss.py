"""Regulariser ``L_reg`` against the frozen initial copy θ₀ (docs/design.md §1; paper: the diversity safeguard).

* ``mode='output'`` (authors' code, default): ``L_reg = Σ_k mean((c_k^θ − c_k^{θ₀})²)`` over paired tensors — for
  DiffBIR the 13 control residuals of the trained IRControlNet and of its frozen initial copy, same inputs, same step.
  ``∂L_reg/∂c_k^θ = 2(c_k^θ − c_k^{θ₀}) / numel(c_k)``.
* ``mode='weight'``: ``L_reg = Σ_k ‖θ_k − θ₀_k‖²`` over paired parameter tensors (cheap, weight space).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.losses.common import REDUCTION, WEIGHT
from drward.utils.option_schema import Choice, declare
from drward.utils.registry import register

Pairs = Sequence[Tuple[torch.Tensor, torch.Tensor]]


def split_pairs(pred: Union[Pairs, Sequence[torch.Tensor]], target: Optional[Sequence[torch.Tensor]]):
    """Accept ``forward(pairs)`` or ``forward(trained_list, reference_list)``."""
    if target is None:
        pred = list(pred)
        return [a for a, _ in pred], [b for _, b in pred]
    pred, target = list(pred), list(target)
    if len(pred) != len(target):
        raise ValueError(f'RegLoss: {len(pred)} trained tensors but {len(target)} reference tensors')
    return pred, target


@register(LOSS_REGISTRY)
@declare(loss_weight=(WEIGHT, 'λ_reg'), reduction=(REDUCTION, 'over the batch'),
         mode=(Choice('output', 'weight'), 'output: the (c_k^θ, c_k^{θ₀}) pairs; weight: the trained weights'))
class RegLoss(nn.Module):
    """Args: ``mode`` ``'output'`` (default) or ``'weight'``; ``reduction`` is fixed by the mode's formula."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', mode: str = 'output'):
        super().__init__()
        if mode not in ('output', 'weight'):
            raise ValueError(f"RegLoss: mode must be 'output' or 'weight', got {mode!r}")
        self.loss_weight, self.reduction, self.mode = loss_weight, reduction, mode

    def forward(self, pred, target=None, **kwargs) -> torch.Tensor:
        trained, reference = split_pairs(pred, target)
        if not trained:
            raise ValueError('RegLoss: no tensors to regularise (the restorer returned no reg_pairs)')
        total = trained[0].new_zeros((), dtype=torch.float32)
        for c, c0 in zip(trained, reference):
            if c.shape != c0.shape:
                raise ValueError(f'RegLoss: paired shapes differ: {tuple(c.shape)} vs {tuple(c0.shape)}')
            sq = (c.float() - c0.detach().float()).pow(2)
            total = total + (sq.mean() if self.mode == 'output' else sq.sum())
        return self.loss_weight * total
