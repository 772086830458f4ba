"""Build big modules without a first copy of their weights, then materialise them from the checkpoint (issue 14).

``with empty_weights(True, dtype): model = Net(...)`` creates every parameter on the meta device (no memory, no
random initialisation) with ``dtype`` as its declared dtype; buffers are real (they are small and some are computed
at construction, e.g. attention masks). The weight loaders (:func:`drward.weights.common.load_converted`) then
*assign* the checkpoint's tensors, cast to each parameter's declared dtype, instead of copying into allocated
weights: a model is held once, not twice (random init + checkpoint). :func:`check_materialized` raises when a
parameter was left on the meta device (a checkpoint that did not cover the model).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def empty_weights(enabled: bool, dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Parameters created inside live on the meta device with dtype ``dtype`` (when ``enabled``)."""
    if not enabled:
        yield
        return
    from accelerate import init_empty_weights
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init_empty_weights(include_buffers=False):
            yield
    finally:
        torch.set_default_dtype(previous)


def has_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def check_materialized(module: nn.Module, owner: str) -> None:
    """Raise naming the parameters a checkpoint left unfilled on the meta device."""
    left = [name for name, p in module.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f'{owner}: {len(left)} parameters were not in the checkpoint: {left[:8]}')
