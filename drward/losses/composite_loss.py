"""A weighted sum of any registered losses, so one BasicSR loss slot (e.g. ``pixel_opt``) carries several.

``L = loss_weight · Σ_i L_i(pred, target)`` where each ``L_i`` is built from its own option dict (``type`` plus its
options, its ``loss_weight`` included). Example (BasicSR ``SRModel``)::

    pixel_opt:
      type: CompositeLoss
      losses:
        - {type: L1Loss, loss_weight: 1.0}
        - {type: DWTLoss, loss_weight: 0.01, input_range: '[0,1]'}
        - {type: RewardLoss, loss_weight: 0.005, input_range: '[0,1]', frm: {model_name: tiny}}

The last call's terms (each weighted) are kept in ``last_terms``. A host model logs only the slot's total (e.g.
GFPGAN's ``l_g_pix``); ``log_every: N`` writes the terms to BasicSR's log every N-th call
(``CompositeLoss terms (call N): L1Loss 1.2e-01, DWTLoss 3.4e-03, RewardLoss 4.9e-03``).
"""
from __future__ import annotations

import copy
from typing import Dict, Mapping, Sequence

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.losses.common import REDUCTION, WEIGHT
from drward.utils.option_schema import Int, ListOf, Section, Text, declare
from drward.utils.registry import register


@register(LOSS_REGISTRY)
@declare(losses=(ListOf(Section({'type': Text()}, open_keys=True)), 'the registered losses summed (each its own keys)'),
         loss_weight=(WEIGHT, 'weight of the sum'), reduction=(REDUCTION, 'passed to each loss'),
         log_every=(Int(0), 'log each term every n calls (0: never)'))
class CompositeLoss(nn.Module):
    def __init__(self, losses: Sequence[Mapping], loss_weight: float = 1.0, reduction: str = 'mean',
                 log_every: int = 0):
        super().__init__()
        if not losses:
            raise ValueError('CompositeLoss: `losses` must list at least one loss option dict')
        if int(log_every) < 0:
            raise ValueError(f'CompositeLoss: log_every must be >= 0 (0: never), got {log_every!r}')
        self.loss_weight = loss_weight
        self.log_every, self.calls = int(log_every), 0
        self.names, parts = [], []
        for i, opt in enumerate(losses):
            if 'type' not in opt:
                raise ValueError(f'CompositeLoss: losses[{i}] has no `type` (a registered loss name)')
            name = opt['type']
            self.names.append(name if name not in self.names else f'{name}_{i}')
            parts.append(build_loss(copy.deepcopy(dict(opt))))
        self.parts = nn.ModuleList(parts)
        self.last_terms: Dict[str, torch.Tensor] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor = None, **kwargs) -> torch.Tensor:
        terms = {name: part(pred, target, **kwargs) for name, part in zip(self.names, self.parts)}
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        self.calls += 1
        if self.log_every and self.calls % self.log_every == 0:
            values = ', '.join(f'{name} {float(value):.4e}' for name, value in self.last_terms.items())
            get_root_logger().info(f'CompositeLoss terms (call {self.calls}): {values}')
        return self.loss_weight * sum(terms.values())
