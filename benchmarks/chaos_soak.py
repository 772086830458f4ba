"""Chaos soak: a tiny ReFL run SIGKILLed at random moments, some of them while a checkpoint or a training state is
being written, some followed by a truncated newest file; each time resumed with ``--auto_resume``. Its final
``net_g`` and ``net_frm`` must equal an uninterrupted run's, bit for bit.

    python benchmarks/chaos_soak.py                  # 1 process: 200 iterations, 12 kills (4 mid-write), 2 torn files
    python benchmarks/chaos_soak.py --ranks 2        # torchrun, 2 ranks, elastic restarts, random ranks killed
    python benchmarks/chaos_soak.py --smoke          # 3 kills (1 mid-write) and 1 torn state: the test suite's

Kills mid-write use the test hook of ``drward/utils/atomic_io.py`` (``DRWARD_TEST_FAULT=pause:S``: each write waits
S seconds with its temporary file written); the soak kills the writer as soon as the chosen file's temporary file
appears. A torn file: after a kill, the newest ``.state`` (or ``net_g`` checkpoint) is cut to half its size, as a
storage that lost the end of a write leaves it; the resume must fall back to the newest intact pair.

Prints one row per fault (what, when, resumed at, iterations lost, time to resume: from the relaunch, or from the kill
under torchrun, to the first iteration trained after resuming) and a summary line; ``--json`` writes it all.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, ROOT)

import torchrun_helpers as T  # noqa: E402

from benchmarks.lib.run_folders import remove_run_folders  # noqa: E402
from drward.data.demo_faces import ensure_demo_faces  # noqa: E402
from drward.utils.atomic_io import FAULT_ENV, TEMP_SUFFIX  # noqa: E402

ITER = re.compile(r'iter:\s+(\d+),')
#: BasicSR's line once it loaded the state (or found none: iteration 0), before the first iteration.
RESUMED = re.compile(r'Start training from epoch: \d+, iter: (\d+)')
FILES = {'state': 'training_states', 'net_g': 'models', 'net_frm': 'models'}


def train_cmd(name: str, data: str, iters: int, every: int) -> List[str]:
    """The tiny option file cut to its smallest: K = 2, 1 face per step, the FRM updated every 2nd iteration."""
    overrides = [f'name={name}', f'train:total_iter={iters}', 'network_g:num_steps=2', 'train:grad_accum=1',
                 'train:frm_update:every=2', f'logger:save_checkpoint_freq={every}', 'logger:print_freq=1',
                 'val:val_freq=100000', 'datasets:train:batch_size_per_gpu=1',
                 f'datasets:train:dataroot_gt={os.path.join(data, "faces")}',
                 f'datasets:val:dataroot_gt={os.path.join(data, "val")}']
    return [os.path.join(ROOT, 'tools', 'train.py'), '-opt', os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml'),
            '--auto_resume', '--force_yml', *overrides]


class Run:
    """One launch (``python tools/train.py`` or torchrun), its output in a file read as it grows."""

    def __init__(self, args: List[str], log: str, env: Dict[str, str], ranks: int, restarts: int = 0):
        self.log, self.started, self.since = log, time.time(), 0  # since: where this round's output begins
        prefix = [sys.executable] if ranks == 1 else \
            [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(ranks),
             '--max-restarts', str(restarts)]
        with open(log, 'w') as out:
            self.process = subprocess.Popen([*prefix, *args], stdout=out, stderr=subprocess.STDOUT, text=True,
                                            env=env, cwd=ROOT)

    def text(self) -> str:
        with open(self.log, errors='replace') as f:
            return f.read()

    def progress(self) -> int:
        """The last iteration this round logged."""
        return last_iter(self.text()[self.since:])

    def resumed_output(self) -> Optional[str]:
        """This round's output once it resumed and trained an iteration, else None."""
        text = self.text()[self.since:]
        found = RESUMED.search(text)
        return text if found and ITER.search(text[found.end():]) else None

    def victims(self, ranks: int) -> List[int]:
        return [self.process.pid] if ranks == 1 else T.worker_pids(self.process.pid)


def last_iter(text: str) -> int:
    found = ITER.findall(text)
    return int(found[-1]) if found else 0


def temp_files(exp: str, kind: str) -> List[str]:
    pattern = f'.{kind}_*' if kind != 'state' else '.*.state.*'
    return glob.glob(os.path.join(exp, FILES[kind], pattern + TEMP_SUFFIX))


def wait(condition, run: Run, timeout: float = 900, poll: float = 0.02):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if run.process.poll() is not None:
            raise RuntimeError(f'the run ended (status {run.process.returncode}) before the fault; see {run.log}')
        if time.time() > deadline:
            raise TimeoutError(f'no fault moment within {timeout} s; see {run.log}')
        time.sleep(poll)


def plan(rng: random.Random, iters: int, every: int, kills: int, mid_write: int, torn: int) -> List[dict]:
    """``kills`` faults at increasing random iterations; ``mid_write`` of them during the save of a checkpoint
    iteration (state, net_g or net_frm, by turns), ``torn`` of the others followed by a truncated newest file."""
    checkpoints = list(range(every, iters, every))
    save_at = sorted(rng.sample(checkpoints, mid_write))
    others = sorted(rng.sample([i for i in range(2, iters) if i not in save_at], kills - mid_write))
    faults = [{'kind': 'kill', 'at': i} for i in others] + \
             [{'kind': 'kill mid-write', 'at': i, 'file': ('state', 'net_g', 'net_frm')[n % 3]}
              for n, i in enumerate(save_at)]
    faults.sort(key=lambda f: f['at'])
    plain = [f for f in faults if f['kind'] == 'kill']
    for n, fault in enumerate(rng.sample(plain, min(torn, len(plain)))):
        fault['torn'] = ('state', 'net_g')[n % 2]
    return faults


def tear_newest(exp: str, what: str) -> str:
    """Cut the newest state (or the newest state's ``net_g`` checkpoint) to half its size; returns its name."""
    states = sorted(glob.glob(os.path.join(exp, 'training_states', '*.state')),
                    key=lambda p: int(os.path.basename(p).split('.')[0]))
    if not states:
        return 'nothing yet'
    it = os.path.basename(states[-1]).split('.')[0]
    path = states[-1] if what == 'state' else os.path.join(exp, 'models', f'net_g_{it}.safetensors')
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    return os.path.relpath(path, exp)


def inject(fault: dict, run: Run, exp: str, ranks: int, rng: random.Random, seconds_per_iter: float) -> None:
    """Wait for the fault's moment in ``run`` and SIGKILL a process (the writer for a mid-write kill)."""
    wait(lambda: run.progress() >= fault['at'] - (1 if 'file' in fault else 0), run)
    if 'file' in fault:
        fault['moment'] = os.path.basename(wait(lambda: (temp_files(exp, fault['file']) or [None])[0], run))
        victim = run.victims(ranks)[0]  # rank 0 writes
        fault['rank'] = 0
    else:
        time.sleep(rng.uniform(0, seconds_per_iter))  # a random moment inside the next iteration
        pids = wait(lambda: run.victims(ranks), run)
        pick = rng.randrange(len(pids))
        victim, fault['rank'] = pids[pick], pick
    fault['killed_after'] = run.progress()
    os.kill(victim, signal.SIGKILL)
    fault['killed_at'] = time.time()


def resume_figures(fault: dict, text: str) -> None:
    """Where the run resumed after ``fault`` (``text``: the output from the resume on) and how fast."""
    resumed = RESUMED.search(text)
    fault['resumed_at'] = int(resumed.group(1)) if resumed else None
    fault['fallback'] = 'skipping training state' in text[:resumed.start()] if resumed else False
    fault['lost'] = fault['killed_after'] - fault['resumed_at'] if resumed else None


def soak(args, data: str, name: str, work: str) -> List[dict]:
    rng = random.Random(args.seed)
    exp = os.path.join(ROOT, 'experiments', name)
    faults = plan(rng, args.iters, args.every, args.kills, args.mid_write, args.torn if args.ranks == 1 else 0)
    env = T.environment()
    env.pop('TORCH_DISABLE_SHARE_RDZV_TCP_STORE', None)
    cmd = train_cmd(name, data, args.iters, args.every) + (['--launcher', 'pytorch'] if args.ranks > 1 else [])
    pause = {FAULT_ENV: f'pause:{args.pause}'}
    if args.ranks > 1:  # one torchrun; it restarts the group after every kill
        run = Run(cmd, os.path.join(work, 'soak.log'), {**env, **pause}, args.ranks, restarts=len(faults))
        for fault in faults:
            inject(fault, run, exp, args.ranks, rng, args.seconds_per_iter)
            run.since = len(run.text())
            text = wait(run.resumed_output, run)
            fault['to_resume_s'] = time.time() - fault['killed_at']
            resume_figures(fault, text)
        status = run.process.wait(timeout=3600)
    else:  # one process per launch, relaunched after every kill
        for n, fault in enumerate(faults + [None]):
            run = Run(cmd, os.path.join(work, f'launch{n}.log'),
                      {**env, **pause} if fault and 'file' in fault else env, 1)
            if n:
                previous = faults[n - 1]
                text = wait(run.resumed_output, run)
                previous['to_resume_s'] = time.time() - run.started
                resume_figures(previous, text)
            if fault is None:
                status = run.process.wait(timeout=3600)
                break
            inject(fault, run, exp, 1, rng, args.seconds_per_iter)
            run.process.wait()
            if 'torn' in fault:
                fault['moment'] = f'then {tear_newest(exp, fault["torn"])} cut in half'
    if status != 0:
        raise RuntimeError(f'the soak run ended with status {status}; logs under {work}')
    return faults


def report(faults: List[dict], diff, ranks: int, seconds: float, reference_s: float) -> str:
    lines = [f'{"#":>2s} {"fault":15s} {"rank":>4s} {"after it":>8s} {"resumed at":>10s} {"lost":>4s} '
             f'{"to resume s":>11s}  moment']
    for n, f in enumerate(faults, 1):
        lines.append(f'{n:2d} {f["kind"]:15s} {f.get("rank", 0):4d} {f["killed_after"]:8d} '
                     f'{str(f["resumed_at"]):>10s} {str(f["lost"]):>4s} {f.get("to_resume_s", 0):11.1f}  '
                     f'{f.get("moment", "")}{" (fell back)" if f.get("fallback") else ""}')
    survived = sum(f['resumed_at'] is not None for f in faults) if diff == 0.0 else 0
    lost = [f['lost'] for f in faults if f['lost'] is not None]
    waits = [f['to_resume_s'] for f in faults if 'to_resume_s' in f]
    lines.append(f'{ranks} rank(s): faults injected {len(faults)}, survived {survived} '
                 f'({sum("file" in f for f in faults)} mid-write, {sum("torn" in f for f in faults)} torn files, '
                 f'{sum(bool(f.get("fallback")) for f in faults)} fallbacks to an older state); iterations lost per '
                 f'fault mean {sum(lost) / max(len(lost), 1):.1f} max {max(lost, default=0)}; time to resume mean '
                 f'{sum(waits) / max(len(waits), 1):.1f} s max {max(waits, default=0):.1f} s; '
                 f'final max |Δw| = {diff}; '
                 f'soak {seconds:.0f} s, uninterrupted {reference_s:.0f} s')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ranks', type=int, default=1, choices=[1, 2])
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--every', type=int, default=5, help='checkpoint frequency')
    parser.add_argument('--kills', type=int, default=12)
    parser.add_argument('--mid_write', type=int, default=4, help='kills while a checkpoint or state is written')
    parser.add_argument('--torn', type=int, default=2, help='kills followed by a truncated newest file (1 rank)')
    parser.add_argument('--pause', type=float, default=0.3, help='seconds each write waits in a mid-write launch')
    parser.add_argument('--seconds_per_iter', type=float, default=0.5, help='range of the random delay in a step')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--smoke', action='store_true', help='6 iterations, 3 kills (1 mid-write), 1 torn state')
    parser.add_argument('--json', help='write the faults and the summary here')
    parser.add_argument('--keep', action='store_true')
    args = parser.parse_args(argv)
    if args.smoke:
        args.iters, args.every, args.kills, args.mid_write, args.torn = 6, 2, 3, 1, 1
    work = tempfile.mkdtemp(prefix='drward_chaos_')
    ensure_demo_faces(os.path.join(work, 'faces'), size=64)
    ensure_demo_faces(os.path.join(work, 'val'), size=64, count=2)
    tag = f'chaos_{os.getpid()}'
    names = [f'{tag}_reference', f'{tag}_soak']
    try:
        start = time.time()
        ref_cmd = [a for a in train_cmd(names[0], work, args.iters, args.every) if a != '--auto_resume']
        ref = Run(ref_cmd + (['--launcher', 'pytorch'] if args.ranks > 1 else []), os.path.join(work, 'ref.log'),
                  T.environment(), args.ranks)
        if ref.process.wait(timeout=3600) != 0:
            raise RuntimeError(f'the uninterrupted run failed; see {ref.log}')
        reference_s, start = time.time() - start, time.time()
        faults = soak(args, work, names[1], work)
        seconds = time.time() - start
        final = [T.final_weights(os.path.join(ROOT, 'experiments', n), args.iters) for n in names]
        diff = T.max_difference(final[1], final[0])
        text = report(faults, diff, args.ranks, seconds, reference_s)
        print(text)
        result = {'faults': faults, 'max_abs_diff': diff, 'summary': text.splitlines()[-1]}
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(result, f, indent=1)
        return result
    finally:
        remove_run_folders(ROOT, names, work, args.keep)


if __name__ == '__main__':
    main()
