"""``network_g.compile``: ``torch.compile`` of a restorer's no-grad denoiser call (the prefix's 49 of 50 calls).

:class:`CompiledOnce` compiles lazily at the first call (``dynamic=True``: the batched prefix changes the batch size
when a micro-batch leaves it at its stop step) and logs the first call's time, which is the compilation, once.
The gradient-enabled call is never compiled (its graph, checkpointing and the θ₀ reference stay eager).
Whether it pays is measured, not assumed: ``benchmarks/refl_step.py --grad-accum 4 --compile`` (docs/speed.md).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from basicsr.utils import get_root_logger


class CompiledOnce:
    """``fn`` compiled with ``torch.compile`` at its first call; that call's wall time is logged (``owner``)."""

    def __init__(self, fn: Callable, owner: str):
        self.fn, self.owner = fn, owner
        self.compiled = None
        self.compile_seconds = None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            return self.compiled(*args, **kwargs)
        self.compiled = torch.compile(self.fn, dynamic=True)
        start = time.perf_counter()
        out = self.compiled(*args, **kwargs)
        self.compile_seconds = time.perf_counter() - start
        get_root_logger().info(f'{self.owner}: compiled the no-grad denoiser (torch.compile) at its first call: '
                               f'{self.compile_seconds:.1f} s')
        return out
