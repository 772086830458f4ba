"""Sharding a test set over the processes of ``torchrun ... tools/test.py --launcher pytorch`` (or slurm).

The rule is training validation's (:mod:`drward.models.validation`): item ``i`` of a test set (its index in the set
sorted by file path, :func:`sorted_positions`) goes to rank ``i mod P`` and is seeded by ``i`` as in one process, so
a face's restoration does not depend on ``P``, the batch or the order the file system lists the folder in. Every
rank restores and scores its share; the shares meet in :func:`gather`, which is also the barrier before rank 0
alone computes the set-level metrics (FID) over the whole folder and writes the reports.

**Waiting without a timeout.** Rank 0 may compute FID, write grids, then restore the next set's share while the
other ranks already wait in the next gather. The ranks wait for each other only in this module's collectives, which
run on a separate **gloo** group created with :data:`WAIT_TIMEOUT` (24 h), never on the default group: an NCCL
group has nothing pending while rank 0 works, so its watchdog (``dist_params.timeout_minutes``) never fires.
"""
from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional, Sequence

import torch.distributed as dist

from drward.data.readable_items import item_name
from drward.utils import distributed

#: How long a rank waits in a gather for the slowest rank (FID of a 3,000-face set on rank 0, a slow share).
WAIT_TIMEOUT = datetime.timedelta(hours=24)
_GROUP: Dict[str, Any] = {}


def wait_group():
    """The gloo group with the long timeout (created once, by every rank at the same point), or None alone."""
    if not distributed.is_dist():
        return None
    if 'group' not in _GROUP:
        _GROUP['group'] = dist.new_group(backend='gloo', timeout=WAIT_TIMEOUT)
    return _GROUP['group']


def rank() -> int:
    return distributed.rank()


def world_size() -> int:
    return distributed.world_size()


def mine(index: int, rank_: Optional[int] = None, world: Optional[int] = None) -> bool:
    """True when item ``index`` belongs to this rank: ``index mod P == rank``."""
    world = world_size() if world is None else world
    return index % world == (rank() if rank_ is None else rank_)


def sorted_positions(dataset) -> List[int]:
    """``positions[i]``: where item ``i`` of ``dataset`` stands in the set sorted by file path (BasicSR's paired
    dataset lists a folder in the file system's order, which differs between disks and copies). Sharding and seeds
    use this position, so every rank, node and copy of the set agrees on them."""
    names = [item_name(dataset, i) for i in range(len(dataset))]
    order = sorted(range(len(names)), key=lambda i: (names[i], i))
    positions = [0] * len(names)
    for position, index in enumerate(order):
        positions[index] = position
    return positions


def share_sizes(count: int, world: int) -> List[int]:
    """How many of ``count`` items each of ``world`` ranks gets under ``i mod P``."""
    return [len(range(r, count, world)) for r in range(world)]


def gather(obj: Any) -> List[Any]:
    """Every rank's ``obj``, by rank, on every rank (``[obj]`` alone); a barrier with :data:`WAIT_TIMEOUT`."""
    if not distributed.is_dist():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=wait_group())
    return out


def from_rank_zero(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (through the long-timeout group)."""
    if not distributed.is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=wait_group())
    return box[0]


def processes_note(counts: Sequence[int]) -> Optional[str]:
    """``restored on 2 processes (4 + 3 faces)`` for a sharded run, None in one process."""
    if len(counts) < 2:
        return None
    return f'restored on {len(counts)} processes ({" + ".join(str(c) for c in counts)} faces)'


def merge_skipped(dataset, shares: List[List[str]]) -> List[str]:
    """The ranks' unreadable-file lines in the dataset's order (as one process lists them)."""
    order = [item_name(dataset, i) for i in range(len(dataset))]

    def position(line: str) -> int:
        return next((i for i, name in enumerate(order) if line.startswith(f'{name} (')), len(order))
    return sorted((line for share in shares for line in share), key=position)
