"""Multi-process training: starting the process group, and the few collectives drward's models use.

BasicSR's ``init_dist`` always asks for NCCL and calls ``torch.cuda.set_device``, so ``--launcher pytorch`` fails on
a CPU. :func:`init_dist` (installed by :mod:`drward.utils.basicsr_compat` in place of BasicSR's) chooses the
backend from the device the option file trains on: **gloo** on the CPU (``num_gpu: 0`` or no CUDA), **nccl** on
CUDA, where it binds process ``LOCAL_RANK`` to its GPU. The option file's top-level ``dist_params`` may set
``backend``, ``timeout_minutes`` and (slurm) ``port``. Launchers: ``pytorch`` (``torchrun``: ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and ``slurm`` (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_NODELIST``; the first node of the list is the master).

Every helper below is a no-op (or the identity) in a single process, so models call them unconditionally.

A collective writes into a tensor's memory without bumping its version counter, and drward caches casts of
weights by version (the bf16 compute copy of a trained branch, the FRM's frozen casts): whatever a collective
writes into weights is marked changed afterwards (:func:`mark_changed`).
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.autograd.graph import increment_version

from drward.utils import elastic_store
from drward.utils.options import check_keys

DIST_PARAMS_KEYS = ('backend', 'timeout_minutes', 'port')
#: ``dist_params.timeout_minutes`` when the option file sets none, by backend. NCCL's own default (10 min) is shorter
#: than what a rank may wait in a collective while rank 0 writes a real-size checkpoint (a 7 GB DiffBIR state) or
#: the ranks validate ~100 faces at ~100 s per face each; gloo's own default is 30 min.
DEFAULT_TIMEOUT_MINUTES = {'nccl': 60.0}
#: How the next :func:`init_dist` starts the group; set from the option file by :func:`configure`.
_SETTINGS: Dict[str, Any] = {'device': 'cpu', 'dist_params': {}}

#: The gradient bucket of :func:`average_gradients` (DDP's default bucket size).
BUCKET_BYTES = 25 * 2 ** 20


# ---------------------------------------------------------------------------------------------------- start
def trains_on_cuda(opt: Optional[Mapping]) -> bool:
    """True when the option file's ``num_gpu`` (BasicSR: 0 = CPU, ``auto`` = every GPU) asks for CUDA and CUDA is
    there — the device :class:`~basicsr.models.base_model.BaseModel` will put the model on."""
    num_gpu = (opt or {}).get('num_gpu', 'auto')
    return torch.cuda.is_available() and num_gpu != 0


def configure(opt: Optional[Mapping]) -> None:
    """Remember the option file's device and ``dist_params`` for :func:`init_dist` (called before BasicSR parses)."""
    params = dict((opt or {}).get('dist_params') or {})
    check_keys('dist_params', params, DIST_PARAMS_KEYS)
    _SETTINGS['device'] = 'cuda' if trains_on_cuda(opt) else 'cpu'
    _SETTINGS['dist_params'] = params


def choose_backend(device: str) -> str:
    """``nccl`` for CUDA tensors, ``gloo`` for CPU tensors."""
    return 'nccl' if device == 'cuda' else 'gloo'


def _slurm_environment(port: Optional[int]) -> None:
    """``torchrun``'s variables from slurm's: rank, world size, local rank, and the first node as the master."""
    rank, tasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
    per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', '1').split('(')[0]) or 1
    nodes = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']], check=True,
                           capture_output=True, text=True).stdout.split()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(tasks), MASTER_ADDR=nodes[0],
                      LOCAL_RANK=os.environ.get('SLURM_LOCALID', str(rank % per_node)))
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')


def init_dist(launcher: str, backend: Optional[str] = None, **kwargs) -> None:
    """Start the default process group for ``launcher`` (``pytorch`` or ``slurm``) on the configured device.

    Same signature as BasicSR's ``init_dist``; ``backend`` / ``port`` given here win over ``dist_params``. On CUDA,
    as BasicSR, data-loader workers are spawned, not forked; on the CPU they fork (a spawned worker re-imports
    drward: ~20 s per epoch on a small CPU).
    """
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f'--launcher {launcher!r}: drward knows pytorch and slurm')
    device = _SETTINGS['device']
    if device == 'cuda' and torch.multiprocessing.get_start_method(allow_none=True) is None:
        torch.multiprocessing.set_start_method('spawn')  # as BasicSR: no forked data-loader workers under CUDA
    params = {**_SETTINGS['dist_params'], **kwargs}
    if launcher == 'slurm':
        _slurm_environment(params.get('port'))
    backend = backend or params.get('backend') or choose_backend(device)
    if device == 'cuda':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    minutes = params.get('timeout_minutes') or DEFAULT_TIMEOUT_MINUTES.get(backend)
    timeout = datetime.timedelta(minutes=float(minutes)) if minutes else None
    if launcher == 'pytorch' and elastic_store.under_torchrun():  # each restart round in its own key space
        store, rank_, world, text = elastic_store.restart_round_store(timeout or datetime.timedelta(minutes=30))
        dist.init_process_group(backend=backend, timeout=timeout, store=store, rank=rank_, world_size=world)
        if rank_ == 0:
            print(f'init_dist: {text}', flush=True)
        return
    dist.init_process_group(backend=backend, timeout=timeout)


# ---------------------------------------------------------------------------------------------------- queries
def is_dist() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def comm_device() -> torch.device:
    """Where small collective tensors live: the current GPU for nccl, the CPU otherwise."""
    if is_dist() and dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


# ---------------------------------------------------------------------------------------------------- collectives
def all_ranks_agree(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (a MIN all-reduce): a step is skipped everywhere or nowhere."""
    if not is_dist():
        return bool(flag)
    value = torch.tensor([1 if flag else 0], device=comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def mean_over_ranks(values: Mapping[str, float]) -> Dict[str, float]:
    """Each value averaged over the ranks (every rank gets the mean), the keys kept in their order. Every rank
    must pass the same keys."""
    if not is_dist() or not values:
        return dict(values)
    keys = list(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=comm_device())
    dist.all_reduce(stacked)
    return dict(zip(keys, (stacked / world_size()).tolist()))


def average_gradients(parameters: Iterable[torch.Tensor], scale: float = 1.0) -> None:
    """Replace each gradient by ``scale ×`` its mean over the ranks (in place; ``None`` gradients stay None on every
    rank — they must be None on all of them). ``scale = world_size`` turns the mean into a sum."""
    if not is_dist():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    factor = scale / world_size()
    for bucket in gradient_buckets(grads):  # one collective per ~25 MiB bucket, not one per tensor
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat.mul_(factor)
        for grad, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(reduced)


def gradient_buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> List[List[torch.Tensor]]:
    """``tensors`` in order, grouped into buckets of one device and dtype of at most ``bucket_bytes`` (a tensor
    larger than that alone), as DDP buckets its gradients: hundreds of all-reduces become a few."""
    buckets: List[List[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        last = buckets[-1] if buckets else None
        fits = last is not None and size + nbytes <= bucket_bytes and last[0].dtype == tensor.dtype and \
            last[0].device == tensor.device
        if fits:
            last.append(tensor)
            size += nbytes
        else:
            buckets.append([tensor])
            size = nbytes
    return buckets


def mark_changed(tensors: Iterable[torch.Tensor]) -> None:
    """Bump the version counters of tensors a collective wrote into, so version-keyed caches recompute."""
    tensors = list(tensors)
    if tensors:
        increment_version(tensors)


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not is_dist():
        return
    tensors = [*module.parameters(), *module.buffers()]
    handles = [dist.broadcast(t.detach(), src, async_op=True) for t in tensors]
    for handle in handles:
        handle.wait()
    mark_changed(tensors)


def gather_by_rank(obj: Any) -> Dict[int, Any]:
    """``{rank: obj}`` over every rank (each rank gets the whole dict); ``{0: obj}`` in one process."""
    if not is_dist():
        return {0: obj}
    gathered: List[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return dict(enumerate(gathered))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_dist():
        dist.barrier()


def finish() -> None:
    """End a torchrun worker once its run is done (``tools/train.py``, ``tools/test.py``): leave the process group,
    flush the logs and exit 0 with ``os._exit``. Left to the interpreter's teardown, a worker whose files are all
    written can abort there ("terminate called without an active exception", SIGABRT: a backend thread destroyed
    while joinable), and torchrun then reports the run as failed. Outside a process group it does nothing."""
    if is_dist():
        dist.destroy_process_group()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may write shared files, e.g. the demo faces), the others after it."""
    if rank() != 0:
        barrier()
    try:
        yield
    finally:
        if rank() == 0:
            barrier()


__all__: List[str] = ['configure', 'choose_backend', 'init_dist', 'is_dist', 'rank', 'world_size', 'comm_device',
                      'all_ranks_agree', 'mean_over_ranks', 'average_gradients', 'mark_changed', 'broadcast_module_',
                      'gather_by_rank', 'broadcast_object', 'barrier', 'finish', 'rank_zero_first', 'trains_on_cuda']
