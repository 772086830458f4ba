"""Cluster reliability on the CPU (gloo, tiny models): every torchrun scenario of docs/reliability.md, each compared
bit for bit with an uninterrupted one-node, two-process run of the same tiny ReFL training.

    python benchmarks/cluster_reliability.py [--scenarios static standalone c10d preempt two_nodes] [--keep]

* ``static``, ``standalone``, ``c10d``: ``torchrun --nproc_per_node 2 --max-restarts 1 ... --auto_resume`` on the
  static rendezvous (``--master_port P``), on ``--standalone``, and on ``--rdzv-backend c10d --rdzv-endpoint``;
  rank 1 is SIGKILLed once the first checkpoint is written; torchrun restarts both ranks, which resume from the
  newest complete state and finish. Each runs twice: without and with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
  (the ``variable`` column; PyTorch issue 135712, which drward's ``init_dist`` works around itself).
* ``preempt``: SIGUSR1 to rank 1 only once the first checkpoint is written: both ranks stop after the same
  iteration, save it and exit with status 75; a second launch with ``--auto_resume`` finishes.
* ``two_nodes``: two torchrun agents, ``--nnodes 2 --node_rank 0/1 --rdzv-backend c10d --rdzv-endpoint
  127.0.0.1:PORT --nproc-per-node 1`` (two "nodes" on loopback): one run; only global rank 0 writes.
* ``two_nodes_restarted``: the same with ``--max-restarts 1``; node 1's worker is SIGKILLed after the first
  checkpoint, without the variable.

Prints one row per scenario: its wall time, the exit statuses, where it resumed, and the largest absolute
difference of the final ``net_g`` / ``net_frm`` to the reference (0 = bit for bit). Takes ~1-3 min on 2 cores.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import socket
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, ROOT)

import torchrun_helpers as T  # noqa: E402

from benchmarks.lib.run_folders import remove_run_folders  # noqa: E402
from drward.data.demo_faces import ensure_demo_faces  # noqa: E402
from drward.utils.preemption import EXIT_PREEMPTED  # noqa: E402

#: What drward's documented restart line sets (docs/reliability.md).
RESTART_ENV = {'TORCH_DISABLE_SHARE_RDZV_TCP_STORE': '1'}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def experiment(name: str) -> str:
    return os.path.join(ROOT, 'experiments', name)


def resumed_at(log: str) -> str:
    found = re.findall(r'Resuming training from epoch: \d+, iter: (\d+)', log)
    return ','.join(found) or '-'


def reference(data: str, name: str, work: str) -> dict:
    start = time.time()
    run = T.torchrun(T.ONE_NODE, T.train_args(name, data), os.path.join(work, f'{name}.log'))
    return {'status': str(run.wait(timeout=600)), 'seconds': time.time() - start, 'resumed': '-'}


RESTARTS = ('--nproc_per_node', '2', '--max-restarts', '1')
RENDEZVOUS = {'static': lambda: (*RESTARTS, '--master_port', str(free_port())),
              'standalone': lambda: ('--standalone', *RESTARTS),
              'c10d': lambda: ('--nnodes', '1', *RESTARTS, '--rdzv-backend', 'c10d', '--rdzv-endpoint',
                               f'127.0.0.1:{free_port()}')}


def elastic(data: str, name: str, work: str, kind: str, variable: bool) -> dict:
    start, log = time.time(), os.path.join(work, f'{name}.log')
    env = {k: v for k, v in T.environment().items() if k not in RESTART_ENV}
    run = T.torchrun(RENDEZVOUS[kind](), T.train_args(name, data, '--auto_resume'), log,
                     env={**env, **RESTART_ENV} if variable else env)
    T.signal_worker_after_first_state(run, experiment(name), signal.SIGKILL)
    status = run.wait(timeout=600)
    return {'status': f'kill -9 rank 1 -> {status}', 'seconds': time.time() - start,
            'resumed': resumed_at(open(log).read())}


def preempt(data: str, name: str, work: str) -> dict:
    start, log = time.time(), os.path.join(work, f'{name}.log')
    run = T.torchrun(T.ONE_NODE, T.train_args(name, data), log)
    T.signal_worker_after_first_state(run, experiment(name), signal.SIGUSR1)
    first = run.wait(timeout=600)
    text = open(log).read()
    saved = re.findall(r'saved the state and checkpoints of iteration (\d+)', text)
    codes = sorted(set(re.findall(r'exitcode\s*:\s*(\d+)', text)))
    resumed = T.torchrun(T.ONE_NODE, T.train_args(name, data, '--auto_resume'), log + '.resumed')
    second = resumed.wait(timeout=600)
    return {'status': f'USR1 to rank 1 -> torchrun {first} (workers {"/".join(codes) or "?"}, expected '
                      f'{EXIT_PREEMPTED}; saved it {"/".join(saved)}); resumed -> {second}',
            'seconds': time.time() - start, 'resumed': resumed_at(open(log + '.resumed').read())}


def two_nodes(data: str, name: str, work: str) -> dict:
    start, port = time.time(), free_port()
    nodes = [T.torchrun(('--nnodes', '2', '--node_rank', str(rank), '--rdzv-backend', 'c10d', '--rdzv-endpoint',
                         f'127.0.0.1:{port}', '--rdzv-id', name, '--nproc-per-node', '1'),
                        T.train_args(name, data), os.path.join(work, f'{name}.node{rank}.log'))
             for rank in (0, 1)]
    statuses = [node.wait(timeout=600) for node in nodes]
    logs = glob.glob(os.path.join(experiment(name), 'train_*.log'))
    return {'status': f'nodes -> {statuses}, {len(logs)} log file(s) written', 'seconds': time.time() - start,
            'resumed': '-'}


def two_nodes_restarted(data: str, name: str, work: str) -> dict:
    """Two loopback "nodes" with ``--max-restarts 1``; node 1's worker is SIGKILLed after the first checkpoint."""
    start, port = time.time(), free_port()
    nodes = [T.torchrun(('--nnodes', '2', '--node_rank', str(rank), '--rdzv-backend', 'c10d', '--rdzv-endpoint',
                         f'127.0.0.1:{port}', '--rdzv-id', name, '--nproc-per-node', '1', '--max-restarts', '1'),
                        T.train_args(name, data, '--auto_resume'), os.path.join(work, f'{name}.node{rank}.log'))
             for rank in (0, 1)]
    T.signal_worker_after_first_state(nodes[1], experiment(name), signal.SIGKILL, local_rank=0)
    statuses = [node.wait(timeout=600) for node in nodes]
    return {'status': f'kill -9 node 1 -> {statuses}', 'seconds': time.time() - start,
            'resumed': resumed_at(open(os.path.join(work, f'{name}.node0.log')).read())}


def elastic_runs(kind: str):
    return {f'{kind}{tag}': (lambda data, name, work, v=variable: elastic(data, name, work, kind, v))
            for tag, variable in (('', False), ('+variable', True))}


SCENARIOS = {'static': elastic_runs('static'), 'standalone': elastic_runs('standalone'),
             'c10d': elastic_runs('c10d'), 'preempt': {'preempt': preempt}, 'two_nodes': {'two_nodes': two_nodes},
             'two_nodes_restarted': {'two_nodes_restarted': two_nodes_restarted}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scenarios', nargs='+', default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument('--keep', action='store_true', help='keep the experiment folders and logs')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='drward_cluster_')
    ensure_demo_faces(os.path.join(work, 'faces'), size=64)
    ensure_demo_faces(os.path.join(work, 'val'), size=64, count=2)
    tag = f'bench_cluster_{os.getpid()}'
    runs = {key: run for scenario in args.scenarios for key, run in SCENARIOS[scenario].items()}
    names = {key: f'{tag}_{key.replace("+", "_")}' for key in ['reference', *runs]}
    rows = []
    try:
        result = reference(work, names['reference'], work)
        expected = T.final_weights(experiment(names['reference']))
        rows.append(('reference (1 node, 2 processes)', result, 0.0))
        for key, run in runs.items():
            result = run(work, names[key], work)
            try:
                diff = T.max_difference(T.final_weights(experiment(names[key])), expected)
            except (OSError, AssertionError) as error:
                diff = f'no final weights ({type(error).__name__})'
            rows.append((key, result, diff))
    finally:
        print(f'{"scenario":32s} {"variable":>8s} {"time s":>7s} {"resumed at":>10s} {"max |Δw|":>10s}  exit statuses')
        for key, result, diff in rows:
            scenario, _, variable = key.partition('+')
            print(f'{scenario:32s} {"set" if variable else "-":>8s} {result["seconds"]:7.1f} {result["resumed"]:>10s} '
                  f'{str(diff):>10s}  {result["status"]}')
        remove_run_folders(ROOT, names.values(), work, args.keep)


if __name__ == '__main__':
    main()
