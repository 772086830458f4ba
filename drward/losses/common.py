"""Helpers every drward loss shares: value ranges and BasicSR's reduction convention."""
from __future__ import annotations

import torch

from drward.utils.option_schema import Choice, Num

RANGES = ('[-1,1]', '[0,1]')
#: The specs every loss declares (``declare(loss_weight=(WEIGHT, ...), ...)``).
WEIGHT = Num(0)
REDUCTION = Choice('mean', 'sum', 'none')
INPUT_RANGE = Choice(*RANGES)


def check_range(name: str, input_range: str) -> str:
    if input_range not in RANGES:
        raise ValueError(f'{name}: input_range must be one of {RANGES}, got {input_range!r}')
    return input_range


def to_unit(x: torch.Tensor, input_range: str) -> torch.Tensor:
    """Map images to [0, 1]: ``Î' = clamp((Î + 1)/2)`` for [-1, 1] inputs, ``clamp(Î)`` for [0, 1] inputs."""
    return ((x + 1) / 2 if input_range == '[-1,1]' else x).clamp(0, 1)


def to_signed(x: torch.Tensor, input_range: str) -> torch.Tensor:
    """Map images to [-1, 1]."""
    return x if input_range == '[-1,1]' else x * 2 - 1


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """BasicSR's reductions over per-sample values: ``'mean'``, ``'sum'`` or ``'none'``."""
    if reduction == 'mean':
        return values.mean()
    if reduction == 'sum':
        return values.sum()
    if reduction == 'none':
        return values
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
