"""The batched no-grad prefix: one denoiser call per DDIM step for all the micro-batches of a generator step.

The generator's weights do not change between the micro-batches of one optimiser step, so the no-grad prefixes of
the ``grad_accum`` restorations (the 49 of 50 denoiser calls before each stop step) can run as one batch: at DDIM
index i every micro-batch still before its own stop step joins the call (a micro-batch leaves the batch when it
reaches its stop step). Each micro-batch keeps its own ``z_T``, stop step, η and DDIM noise, drawn from the model's
sampling generator in the order the micro-batch-by-micro-batch path draws them, so a run's random stream, and with
it resume, is unchanged by the option. The gradient-enabled step(s), the decode and the losses still run per
micro-batch, so the memory for activations is unchanged; the prefix holds the latents of the whole batch (a few
MiB) and runs the denoiser at batch ``grad_accum`` × micro-batch (``prefix_batch_size`` caps it, for small GPUs).

Options (``train``): ``batched_prefix`` (bool; default false, the real option files set true) and
``prefix_batch_size`` (null = no cap). Restorers without a prefix (OSEDiff: one step) ignore them.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch

from drward.archs.restorer import Restorer
from drward.utils.options import OptionError

BATCHED_PREFIX_KEYS = ('batched_prefix', 'prefix_batch_size')


class BatchedPrefix:
    """Runs the no-grad prefixes of a step's micro-batches together (see the module docstring).

    Args:
        train_opt: the model's ``train`` options (reads :data:`BATCHED_PREFIX_KEYS`).
        net: the restorer; batching applies only when it has a prefix (:attr:`Restorer.has_prefix`).
    """

    def __init__(self, train_opt: Mapping, net: Restorer, owner: str = 'ReFLModel'):
        batched = train_opt.get('batched_prefix', False)
        if not isinstance(batched, bool):
            raise OptionError(f'{owner}: train.batched_prefix must be true or false, got {batched!r}')
        self.enabled = batched and bool(getattr(net, 'has_prefix', False))
        cap = train_opt.get('prefix_batch_size')
        if cap is not None and int(cap) < 1:
            raise OptionError(f'{owner}: train.prefix_batch_size must be >= 1 (or null: no cap), got {cap!r}')
        self.max_batch: Optional[int] = int(cap) if cap is not None else None
        self.net = net

    def run(self, lq: torch.Tensor, chunks: Sequence[slice], grad_steps: int,
            generator: torch.Generator) -> List[Dict]:
        """Per micro-batch, the keyword arguments for its ``restore`` call: the state after its prefix when
        batching is on, else nothing (each restoration runs its own prefix)."""
        if not self.enabled or grad_steps < 1:
            return [{} for _ in chunks]
        return self.net.restore_prefixes(lq, chunks, grad_steps, generator=generator, max_batch=self.max_batch)
