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
from drward.utils.option_schema import Bool, Int, Option, resolve


class BatchedPrefix:
    """Runs the no-grad prefixes of a step's micro-batches together (see the module docstring).

    Args:
        train_opt: the model's ``train`` options (reads the keys of :attr:`options`).
        net: the restorer; batching applies only when it has a prefix (:attr:`Restorer.has_prefix`).
    """

    #: The ``train`` keys it reads (a model's ``train_options`` include them).
    options = {
        'batched_prefix': Option(Bool(), False, "run the micro-batches' no-grad prefixes as one batch"),
        'prefix_batch_size': Option(Int(1, nullable=True), None, 'faces per prefix batch at most (~: no cap)'),
    }

    def __init__(self, train_opt: Mapping, net: Restorer, owner: str = 'ReFLModel'):
        opt = resolve(f'{owner} train', self.options, {k: v for k, v in train_opt.items() if k in self.options})
        self.enabled = opt['batched_prefix'] and bool(getattr(net, 'has_prefix', False))
        self.max_batch: Optional[int] = opt['prefix_batch_size']
        self.net = net

    def run(self, lq: torch.Tensor, chunks: Sequence[slice], grad_steps: int,
            generator: torch.Generator) -> List[Dict]:
        """Per micro-batch, the keyword arguments for its ``restore`` call: the state after its prefix when
        batching is on, else nothing (each restoration runs its own prefix)."""
        if not self.enabled or grad_steps < 1:
            return [{} for _ in chunks]
        return self.net.restore_prefixes(lq, chunks, grad_steps, generator=generator, max_batch=self.max_batch)
