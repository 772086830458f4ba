"""Storage faults in figures (issue 32 §2; docs/reliability.md, "Storage faults"): what each fault did to a run.

1. **Disk full during a save**: the tiny ReFL run of ``benchmarks/chaos_soak.py`` with the write of
   ``<at>.state`` failing with ``ENOSPC`` (``DRWARD_TEST_FAULT=enospc:<at>.state``, ``drward/utils/atomic_io.py``).
   It must stop with one line and exit status 74, leave the previous complete state as the newest one, and, resumed
   with ``--auto_resume`` once "space is freed" (the fault removed), end bit for bit on an uninterrupted run.
2. **Output folders that cannot be written**: ``tools/train.py`` (experiments), ``tools/test.py`` (results) and
   ``tools/label_pairs.py`` (the label log), each pointed under a regular file (which fails for root too); each
   must stop at start with one line, before any work.

Torn (truncated) newest files are counted by the chaos soak (its "torn files" and "fallbacks").

    python benchmarks/storage_faults.py            # 12 iterations, disk full at the state of iteration 8
    python benchmarks/storage_faults.py --smoke    # 6 iterations, disk full at iteration 4 (3 short trainings)

Prints a table and returns (``main``) ``{'faults': n, 'survived': n, 'rows': [...]}``; exit status 1 if one failed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, ROOT)

import torchrun_helpers as T  # noqa: E402

from benchmarks.chaos_soak import train_cmd  # noqa: E402
from drward.utils.atomic_io import FAULT_ENV  # noqa: E402
from drward.utils.storage_faults import EXIT_DISK_FULL  # noqa: E402


def train(name: str, data: str, iters: int, every: int, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *train_cmd(name, data, iters, every)], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, env={**T.environment(), **(env or {})})


def disk_full(work: str, iters: int, every: int, at: int) -> dict:
    """Run 1 (see the module docstring): ``{'status', 'line', 'states_left', 'resumed', 'max_abs_diff', 's'}``."""
    from drward.data.demo_faces import ensure_demo_faces
    ensure_demo_faces(os.path.join(work, 'faces'), size=64)
    ensure_demo_faces(os.path.join(work, 'val'), size=64, count=2)
    names = [f'storage_faults_{tag}_{os.getpid()}' for tag in ('whole', 'full')]
    exps = [os.path.join(ROOT, 'experiments', name) for name in names]
    started = time.time()
    try:
        whole = train(names[0], work, iters, every)
        if whole.returncode != 0:
            raise RuntimeError(f'the uninterrupted run failed:\n{whole.stderr[-3000:]}')
        full = train(names[1], work, iters, every, {FAULT_ENV: f'enospc:{at}.state'})
        output = full.stdout + full.stderr
        line = next((ln.strip() for ln in output.splitlines() if 'Disk full while saving' in ln), '(no line)')
        states = sorted(os.listdir(os.path.join(exps[1], 'training_states')))
        resumed = train(names[1], work, iters, every)
        found = [ln for ln in (resumed.stdout + resumed.stderr).splitlines() if 'Resuming training from' in ln]
        diff = (T.max_difference(T.final_weights(exps[1], iters), T.final_weights(exps[0], iters))
                if resumed.returncode == 0 else None)
        return {'status': full.returncode, 'traceback': 'Traceback' in full.stderr,
                'line': line[line.index('Disk full'):] if 'Disk full' in line else line, 'states_left': states,
                'resumed': found[-1][found[-1].index('Resuming'):].strip() if found else
                f'(resume exited {resumed.returncode})',
                'max_abs_diff': diff, 's': time.time() - started}
    finally:
        for name, exp in zip(names, exps):
            shutil.rmtree(exp, ignore_errors=True)
            shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)


def unwritable(work: str) -> List[dict]:
    """Run 2: ``[{'tool', 'status', 'line', 's'}]``, each tool's output pointed under a regular file."""
    blocker = os.path.join(work, 'file.txt')
    with open(blocker, 'w') as f:
        f.write('a regular file, not a folder\n')
    commands = {
        'tools/train.py': ['-opt', os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml'), '--force_yml',
                           f'path:experiments_root={blocker}/out'],
        'tools/test.py': ['-opt', os.path.join(ROOT, 'options', 'test_celeba_tiny.yml'), '--force_yml',
                          f'path:results_root={blocker}/out'],
        'tools/label_pairs.py': ['--pairs', os.path.join(work, 'pairs.jsonl'), '--out', f'{blocker}/labels.jsonl'],
    }
    rows = []
    for tool, args in commands.items():
        started = time.time()
        run = subprocess.run([sys.executable, os.path.join(ROOT, tool), *args], capture_output=True, text=True,
                             timeout=600, cwd=ROOT, env=T.environment())
        lines = run.stderr.strip().splitlines()
        rows.append({'tool': tool, 'status': run.returncode, 'line': lines[-1] if lines else '(nothing said)',
                     'traceback': 'Traceback' in run.stderr, 's': time.time() - started})
    return rows


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=12)
    parser.add_argument('--every', type=int, default=2, help='checkpoint frequency')
    parser.add_argument('--at', type=int, default=8, help='the iteration whose state meets a full disk')
    parser.add_argument('--smoke', action='store_true', help='6 iterations, disk full at iteration 4')
    args = parser.parse_args(argv)
    if args.smoke:
        args.iters, args.every, args.at = 6, 2, 4
    work = tempfile.mkdtemp(prefix='drward_storage_')
    try:
        full = disk_full(work, args.iters, args.every, args.at)
        tools = unwritable(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # every state before the full disk is kept (BasicSR keeps them all), none from it on
    kept = sorted(int(name.split('.')[0]) for name in full['states_left'])
    full_ok = (full['status'] == EXIT_DISK_FULL and not full['traceback'] and bool(kept) and kept[-1] == args.at -
               args.every and full['max_abs_diff'] == 0.0)
    rows = [('disk full while saving ' + f'{args.at}.state', full_ok,
             f"exit {full['status']}; states left {full['states_left']}; {full['resumed']}; final max abs diff "
             f"{full['max_abs_diff']}; {full['s']:.0f} s", full['line'])]
    rows += [(f"{t['tool']}: output under a regular file", t['status'] != 0 and not t['traceback']
              and 'cannot write into' in t['line'], f"exit {t['status']} after {t['s']:.1f} s", t['line'])
             for t in tools]
    print('| storage fault | survived | what happened | what it said |\n|---|---|---|---|')
    for fault, ok, did, said in rows:
        print(f'| {fault} | {"yes" if ok else "NO"} | {did} | {said.replace("|", "/")[:300]} |')
    survived = sum(ok for _, ok, _, _ in rows)
    print(f'storage faults injected {len(rows)}, survived {survived}')
    return {'faults': len(rows), 'survived': survived, 'rows': rows}


if __name__ == '__main__':
    result = main()
    sys.exit(0 if result['survived'] == result['faults'] else 1)
