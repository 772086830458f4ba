"""Tiny ``torchrun ... tools/train.py --launcher pytorch`` runs on the CPU (gloo) for tests and
``benchmarks/cluster_reliability.py``: the README's line with the demo cut short, any torchrun arguments (one node,
two "nodes" on loopback, restarts), run to the end or signalled once its first checkpoint is written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch
from option_files import ROOT

TOTAL, EVERY = 6, 3
#: One node, two processes: the README's line.
ONE_NODE = ('--standalone', '--nproc_per_node', '2')


def train_args(name: str, data: str, *extra: str) -> List[str]:
    """``tools/train.py`` on the tiny option file, cut short: 6 iterations, K = 4, 2 faces per rank in 2
    micro-batches, the FRM updated at 2, 4 and 6, checkpoints at 3 and 6, validation at the end only, on 2 faces
    (``data/faces``, ``data/val``)."""
    overrides = [f'name={name}', f'train:total_iter={TOTAL}', 'network_g:num_steps=4', 'train:grad_accum=2',
                 'train:frm_update:every=2', f'logger:save_checkpoint_freq={EVERY}', 'logger:print_freq=1',
                 'val:val_freq=100', 'datasets:train:batch_size_per_gpu=2',
                 f'datasets:train:dataroot_gt={os.path.join(data, "faces")}',
                 f'datasets:val:dataroot_gt={os.path.join(data, "val")}']
    return [os.path.join(ROOT, 'tools', 'train.py'), '-opt', os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml'),
            '--launcher', 'pytorch', *extra, '--force_yml', *overrides]


def environment(**extra: str) -> Dict[str, str]:
    """One thread per process (the same kernels in every run compared bit for bit)."""
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', **extra}


def torchrun(torchrun_args: Sequence[str], args: Sequence[str], log_path: str, env: Optional[dict] = None
             ) -> subprocess.Popen:
    """Start ``python -m torch.distributed.run <torchrun_args> <args>``, its output to ``log_path``."""
    with open(log_path, 'w') as log:  # a file, not a pipe: nobody reads a pipe while the run goes on
        return subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', *torchrun_args, *args],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=env or environment(), cwd=ROOT)


def torchrun_train(name: str, data: str, *extra: str, torchrun_args: Sequence[str] = ONE_NODE
                   ) -> subprocess.CompletedProcess:
    """The tiny run to its end; output captured."""
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', *torchrun_args,
                           *train_args(name, data, *extra)], capture_output=True, text=True, env=environment(),
                          timeout=600, cwd=ROOT)


def worker_pids(parent: int) -> List[int]:
    """The worker processes torchrun (``parent``) started, oldest first (local rank order)."""
    children = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(parent), '--sort=start_time'],
                              capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children]


def wait_for(path: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, f'the run ended before {path} was written'
        assert time.time() < deadline, f'no {path} within {timeout} s'
        time.sleep(0.05)


def signal_worker_after_first_state(process: subprocess.Popen, exp: str, sig: int = signal.SIGKILL,
                                    local_rank: int = 1) -> int:
    """Once ``<exp>/training_states/<EVERY>.state`` exists, send ``sig`` to torchrun's worker ``local_rank``;
    returns that worker's pid."""
    wait_for(os.path.join(exp, 'training_states', f'{EVERY}.state'), process)
    pid = worker_pids(process.pid)[local_rank]
    os.kill(pid, sig)
    return pid


def final_weights(exp: str, it: int = TOTAL) -> Dict[str, torch.Tensor]:
    """``net_g`` (trained part) and ``net_frm`` of iteration ``it``, keyed ``g.*`` / ``frm.*``."""
    from safetensors.torch import load_file
    g = load_file(os.path.join(exp, 'models', f'net_g_{it}.safetensors'))
    frm = torch.load(os.path.join(exp, 'models', f'net_frm_{it}.pth'), weights_only=True)['state_dict']
    return {**{f'g.{k}': v for k, v in g.items()}, **{f'frm.{k}': v for k, v in frm.items()}}


def max_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """The largest absolute difference over two weight dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


__all__ = ['ROOT', 'TOTAL', 'EVERY', 'ONE_NODE', 'train_args', 'environment', 'torchrun', 'torchrun_train', 'wait_for',
           'worker_pids', 'signal_worker_after_first_state', 'final_weights', 'max_difference']
