"""Training states that resume a run bit for bit: atomic ``<iter>.state`` files holding every random stream.

BasicSR's ``save_training_state`` stores the epoch, the iteration, the optimisers and the schedulers. A run resumed
from that is not the run that was interrupted: the random streams start afresh. :class:`ResumableStateMixin`
(put it before ``BaseModel`` in a model's bases) also stores

* ``random[rank]``: the model's own generators (:meth:`~ResumableStateMixin.random_generators`, e.g. ReFL's
  sampling generator) and the process-wide ones (torch CPU, this rank's own CUDA device, numpy, Python
  ``random``), keyed by the
  process rank: in a multi-process run rank 0 gathers every rank's streams into its file, and each rank takes
  its own back on resume (a rank the file lacks, in a run resumed on more processes, warns and draws afresh);
* ``manual_seed``: the seed the data order and degradations are keyed by (see ``drward.utils.resumable_sampler``);
* ``model``: the model's counters (:meth:`~ResumableStateMixin.extra_training_state`);

and writes the file atomically (:func:`drward.utils.atomic_io.atomic_save`). Everything is stored as tensors,
numbers and tuples, so the file loads with ``torch.load(weights_only=True)``. Sharded optimisers
(``ZeroRedundancyOptimizer``) are consolidated on rank 0 first, so the file holds whole optimiser states.
"""
from __future__ import annotations

import random
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from basicsr.utils import get_root_logger

from drward.models.parallel import consolidate
from drward.utils.atomic_io import atomic_save
from drward.utils.distributed import gather_by_rank


def capture_random_state(generators: Mapping[str, torch.Generator]) -> Dict[str, Any]:
    """The state of ``generators`` and of the process-wide RNGs (torch, CUDA, numpy, ``random``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {'generators': {name: gen.get_state() for name, gen in generators.items()},
             'torch': torch.get_rng_state(),
             'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
             'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this rank's device only: get_rng_state_all() holds one entry per *visible* GPU, and a run resumed where
        # fewer are visible (one GPU per SLURM task, a smaller node) could not put them back
        state['cuda_device'] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore_random_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Put back what :func:`capture_random_state` captured; a generator missing from ``state`` is an error."""
    missing = sorted(set(generators) - set(state['generators']))
    if missing:
        raise KeyError(f'training state has no random state for the generator(s) {missing}; '
                       f'it holds {sorted(state["generators"])}')
    # BasicSR loads resume states onto the GPU; RNG states must be CPU byte tensors
    for name, gen in generators.items():
        gen.set_state(state['generators'][name].cpu())
    torch.set_rng_state(state['torch'].cpu())
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuples(state['python']))
    if torch.cuda.is_available():
        _restore_cuda_state(state)


def _restore_cuda_state(state: Mapping[str, Any]) -> None:
    """This rank's CUDA generator from ``cuda_device``; from an older file's ``cuda`` list (one per GPU visible to
    the writer) the entry of this process's device, when the writer saw that many GPUs (else a warning)."""
    device = torch.cuda.current_device()
    if 'cuda_device' in state:
        torch.cuda.set_rng_state(state['cuda_device'].cpu(), device)
    elif 'cuda' in state:
        if device < len(state['cuda']):
            torch.cuda.set_rng_state(state['cuda'][device].cpu(), device)
        else:
            get_root_logger().warning(f'training state: no CUDA random state for device {device} (the writer saw '
                                      f'{len(state["cuda"])} GPUs); CUDA draws afresh')


def _as_tuples(value):
    """``random.setstate`` needs tuples; some loaders hand lists back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class ResumableStateMixin:
    """Atomic, bit-identical training states for a BasicSR model (see the module docstring)."""

    def random_generators(self) -> Dict[str, torch.Generator]:
        """The model's own random streams, by name (override; none by default)."""
        return {}

    def extra_training_state(self) -> Dict[str, Any]:
        """Counters and other small values a resumed run needs (override; none by default)."""
        return {}

    def load_extra_training_state(self, state: Mapping[str, Any]) -> None:
        """Put back :meth:`extra_training_state` (override)."""

    def training_state(self, epoch: int, current_iter: int,
                       random_by_rank: Optional[Mapping[int, Any]] = None) -> Dict[str, Any]:
        """BasicSR's state (epoch, iter, optimisers, schedulers) plus the random streams (``random_by_rank``, by
        default this process's) and the model's extras."""
        if random_by_rank is None:
            random_by_rank = {int(self.opt.get('rank', 0)): capture_random_state(self.random_generators())}
        return {'epoch': epoch, 'iter': current_iter,
                'optimizers': [o.state_dict() for o in self.optimizers],
                'schedulers': [s.state_dict() for s in self.schedulers],
                'manual_seed': self.opt.get('manual_seed'),
                'random': dict(random_by_rank),
                'model': self.extra_training_state()}

    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Write ``training_states/<iter>.state`` atomically (rank 0 only, as BasicSR; nothing for iter −1). Every
        rank must call it: sharded optimisers are consolidated and the random streams gathered first."""
        if current_iter == -1:
            return
        consolidate(self.optimizers)
        streams = gather_by_rank(capture_random_state(self.random_generators()))
        if self.opt.get('rank', 0) != 0:
            return
        path = f"{self.opt['path']['training_states']}/{current_iter}.state"
        atomic_save(self.training_state(epoch, current_iter, streams), path)

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        """BasicSR's optimiser/scheduler resume, then the random streams and the model's extras."""
        super().resume_training(resume_state)
        self.resumed_iter = int(resume_state.get('iter', 0))  # for load_extra_training_state's messages
        rank = int(self.opt.get('rank', 0))
        streams = (resume_state.get('random') or {}).get(rank)
        if streams is None:
            get_root_logger().warning(f'{type(self).__name__}: the training state holds no random streams for rank '
                                      f'{rank} (written by an older version?): the resumed run draws other noise, '
                                      'degradations and data order than an uninterrupted one would')
        else:
            restore_random_state(streams, self.random_generators())
        self.load_extra_training_state(resume_state.get('model') or {})
