"""A training sampler whose epochs are a pure function of ``(seed, epoch)`` and that can start mid-epoch.

BasicSR's :class:`~basicsr.data.data_sampler.EnlargedSampler` already orders epoch ``e`` by a permutation seeded
with ``e``, but a resumed run restarts the interrupted epoch from its first batch, and the random augmentations of
each item come from per-worker global RNGs whose history a resume cannot reproduce. :class:`ResumableSampler`
keeps EnlargedSampler's order and adds:

* :meth:`ResumableSampler.start_at` — the next ``__iter__`` of that epoch skips the samples already trained on;
* :class:`SampleKey` — each index it yields is an ``int`` (any dataset can use it) that also carries
  ``(seed, epoch, position)``; :func:`sample_seed` turns it into the item's RNG seed, so an item's random
  degradation depends on where it sits in the run, never on what was drawn before it;
* ``loader_generator`` — a generator for the DataLoader, reseeded from ``(seed, epoch)`` every epoch, so that
  starting a loader iterator (worker seeds) never draws from the global torch RNG.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler


class SampleKey(int):
    """A dataset index (the ``int`` value) that also names its draw: ``seed``, ``epoch`` and ``position`` (the
    place of the sample in the epoch's order over all ranks, unique within an epoch)."""

    def __new__(cls, index: int, seed: int, epoch: int, position: int) -> 'SampleKey':
        key = super().__new__(cls, index)
        key.seed, key.epoch, key.position = int(seed), int(epoch), int(position)
        return key

    def __reduce__(self):  # DataLoader workers receive indices pickled
        return SampleKey, (int(self), self.seed, self.epoch, self.position)


def sample_seed(key: SampleKey) -> int:
    """The RNG seed of one draw: a hash of ``(seed, epoch, position)`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([key.seed, key.epoch, key.position]).generate_state(1)[0])


class ResumableSampler(EnlargedSampler):
    """EnlargedSampler's order, yielding :class:`SampleKey` indices; ``start_at`` resumes an epoch mid-way."""

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas, rank, ratio)
        self.seed = int(seed)
        self.loader_generator = torch.Generator()
        self._start: Optional[Tuple[int, int]] = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.loader_generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch, 1]).generate_state(1)[0]))

    def start_at(self, epoch: int, samples_done: int) -> None:
        """Make the next pass over ``epoch`` skip its first ``samples_done`` samples (this rank's)."""
        self._start = (int(epoch), int(samples_done))

    def __iter__(self) -> Iterator[SampleKey]:
        skip = 0
        if self._start is not None and self._start[0] == self.epoch:
            skip = self._start[1]
        self._start = None
        for k, index in enumerate(super().__iter__()):
            if k >= skip:
                yield SampleKey(index, self.seed, self.epoch, self.rank + k * self.num_replicas)
