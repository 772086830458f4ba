"""The GPU run, prepared: every check a lent GPU should answer, in one command, ending in one Markdown table.

    bash benchmarks/gpu_check.sh                              # CUDA, SD 2.1 sizes, random official-layout weights
    bash benchmarks/gpu_check.sh --device cpu --size tiny     # the same plumbing on the CPU (minutes)

Checks, each a subprocess with its own time limit (a failing or slow one is reported and the next runs):

1. ``environment``: torch, the device, bf16 support (:func:`drward.utils.precision_check.bf16_advice`);
2. ``weights`` (sd21): random weights in the official layouts (:mod:`drward.weights.synthetic`), reused if present;
3. ``train_diffbir`` / ``train_osediff``: the rehearsal's training jobs (``options/refl_*.yml``; tiny: the
   ``*_tiny.yml`` files) for 2 iterations, the FRM update and a checkpoint included;
4. ``prefix``: ``benchmarks/refl_step.py --grad-accum 4 --compare-batched-prefix`` (sd21: bf16, checkpointing);
5. ``budget``: ``benchmarks/memory_budget.py`` measuring real steps (CUDA: ``max_memory_allocated`` beside the
   counted prediction);
5b. ``lora_step`` / ``budget_lora``: DiffBIR with LoRA (``--lora-rank``, 32) on the IRControlNet: one step's time
   (``refl_step.py --lora-rank``) and its measured memory budget;
6. ``test``: ``tools/test.py`` on 2 faces;
7. ``eval_throughput``: ``benchmarks/eval_throughput.py``: faces per second, peak memory and the largest pixel
   difference from batch 1 at B = 1, 2, 4, 8, with the predicted CelebA-Test time on 1 and 8 GPUs.

Writes ``gpu_check.md`` (the summary table, then each check's own report) and the logs to ``--out`` (default
``$OUT``, else ``gpu_check_out``). Exit status 1 if a check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PY = sys.executable


@dataclass
class Check:
    """One check: a command, its time limit, and how to read its one-line result from the output files."""

    name: str
    command: List[str]
    timeout_s: int
    summary: Callable[[str], str] = lambda log: ''
    report: Optional[str] = None  # a Markdown file the command writes, appended to gpu_check.md
    result: dict = field(default_factory=dict)


def _tail_line(pattern: str) -> Callable[[str], str]:
    def read(log: str) -> str:
        lines = [line for line in log.splitlines() if pattern in line]
        return lines[-1].strip()[:160] if lines else ''
    return read


def _per_iteration(log: str) -> str:
    """BasicSR's running mean of the iteration time, from the last log line that has it."""
    found = re.findall(r'time \(data\): ([0-9.]+)', log)
    return f'{float(found[-1]):.1f} s / iteration (BasicSR\'s mean), exit 0' if found else 'exit 0'


def _step_summary(log: str) -> str:
    """The N = 1 row of refl_step.py's variants table: step time, saved graph, peak."""
    rows = [line for line in log.splitlines() if line.startswith('| N = 1 (ReFL')]
    cells = [c.strip() for c in rows[-1].strip('|').split('|')] if rows else []
    if len(cells) < 7:
        return ''
    return f'N = 1 step {cells[2]} ms, graph saved {cells[4]} MiB, peak {cells[6]} MiB'


def _prefix_summary(path: str) -> Callable[[str], str]:
    def read(_log: str) -> str:
        if not osp.exists(path):
            return ''
        variants = json.load(open(path))['variants']
        cells = [f"batched {'on' if v['batched_prefix'] else 'off'}: {v['seconds_per_face']:.2f} s/face, prefix "
                 f"{100 * v['prefix_share']:.0f} %" for v in variants]
        if len(variants) == 2:
            cells.append(f"ratio {variants[1]['seconds_per_face'] / variants[0]['seconds_per_face']:.3f}")
        return '; '.join(cells)
    return read


def _budget_summary(path: str) -> Callable[[str], str]:
    """Per restorer, with checkpointing: the predicted peak, with offloading, and (CUDA) the measured peak."""
    labels = (('| **total = predicted', 'predicted'), ('| **total, FRM AdamW', 'offloaded'),
              ('| measured CUDA peak of the step', 'measured allocated'), ('| measured CUDA peak reserved', 'reserved'))

    def read(_log: str) -> str:
        if not osp.exists(path):
            return ''
        parts, unit = [], 'GiB'
        for line in open(path):
            if line.startswith('## Memory budget: '):
                parts.append(line[len('## Memory budget: '):].split(' (')[0] + ':')
            elif line.startswith('| component'):
                unit = 'MiB' if 'MiB' in line else 'GiB'
            for prefix, label in labels:
                if line.startswith(prefix):
                    parts.append(f"{label} {line.strip().strip('|').split('|')[-1].strip()} {unit}")
        text = ' '.join(parts)
        for label in ('offloaded', 'measured allocated', 'reserved'):
            text = text.replace(f' {label} ', f', {label} ')
        return text.replace('iB OSEDiff', 'iB; OSEDiff') + ' (checkpointing)' if parts else ''
    return read


def training_overrides(size: str, workdir: str, device: str) -> List[str]:
    gpu = '1' if device == 'cuda' else '0'
    return [f'num_gpu={gpu}', 'logger:print_freq=1', 'logger:use_tb_logger=false', 'val:val_freq=1000000',
            'train:total_iter=2', 'train:frm_update:every=2', 'logger:save_checkpoint_freq=2',
            f'path:experiments_root={osp.join(workdir, "experiments")}']


def checks(args: argparse.Namespace, workdir: str) -> List[Check]:
    """The checks of the module docstring for ``args.size`` / ``args.device``."""
    size, device, tiny = args.size, args.device, args.size == 'tiny'
    env = Check('environment', [PY, '-c', 'from drward.utils.precision_check import main; main()', '--device',
                                device], 600,  # importing drward alone can take minutes on a loaded 2-core machine
                _tail_line('bf16'))
    prefix_json = osp.join(workdir, 'prefix.json')
    real = [] if tiny else ['--dtype', 'bf16', '--weight-dtype', 'bf16', '--gradient-checkpointing',
                            '--frm-checkpointing']
    prefix = Check('prefix', [PY, 'benchmarks/refl_step.py', '--size', size, '--device', device, '--grad-accum', '4',
                              '--compare-batched-prefix', '--steps', str(args.steps), '--repeats', str(args.repeats),
                              '--threads', str(args.threads), '--json', prefix_json,
                              '--out', osp.join(workdir, 'prefix.md'), *real],
                   args.prefix_timeout, _prefix_summary(prefix_json), osp.join(workdir, 'prefix.md'))
    budget_md = osp.join(workdir, 'budget.md')
    budget = Check('budget', [PY, 'benchmarks/memory_budget.py', '--size', size, '--device', device,
                              '--weight-dtype', 'bf16', '--steps', '2', '--out', budget_md],
                   600, _budget_summary(budget_md), budget_md)
    trains, test = training_checks(args, workdir)
    return [env, *([] if tiny else [weights_check(workdir)]), *trains, prefix, budget, *lora_checks(args, workdir),
            test, eval_throughput_check(size, device, workdir)]


def eval_throughput_check(size: str, device: str, workdir: str) -> Check:
    """Faces per second and peak memory of evaluation at B = 1, 2, 4, 8 (benchmarks/eval_throughput.py)."""
    out = osp.join(workdir, 'eval_throughput.md')
    return Check('eval_throughput', [PY, 'benchmarks/eval_throughput.py', '--size', size, '--device', device,
                                     '--out', out, '--json', osp.join(workdir, 'eval_throughput.json')],
                 900, _tail_line('Fastest'), out)


def lora_checks(args: argparse.Namespace, workdir: str) -> List[Check]:
    """DiffBIR with LoRA (rank ``--lora-rank``) on the IRControlNet: one step's time (``refl_step.py``: N = 1, the
    full chain off) and its memory budget measured on real steps (CUDA: ``max_memory_allocated``)."""
    real = [] if args.size == 'tiny' else ['--dtype', 'bf16', '--weight-dtype', 'bf16', '--gradient-checkpointing',
                                           '--frm-checkpointing']
    step_md, budget_md = osp.join(workdir, 'lora_step.md'), osp.join(workdir, 'budget_lora.md')
    step = Check('lora_step', [PY, 'benchmarks/refl_step.py', '--size', args.size, '--device', args.device,
                               '--lora-rank', str(args.lora_rank), '--steps', str(args.steps), '--no-full-chain',
                               '--repeats', str(args.repeats), '--threads', str(args.threads), '--out', step_md, *real],
                 args.prefix_timeout, _step_summary, step_md)
    budget = Check('budget_lora', [PY, 'benchmarks/memory_budget.py', '--restorer', 'diffbir', '--size', args.size,
                                   '--device', args.device, '--weight-dtype', 'bf16', '--steps', '2',
                                   '--lora-rank', str(args.lora_rank), '--out', budget_md],
                   600, _budget_summary(budget_md), budget_md)
    return [step, budget]


def weights_check(workdir: str) -> Check:
    return Check('weights', [PY, '-m', 'drward.weights.synthetic', osp.join(workdir, 'weights')], 900,
                 _tail_line('vgg16'))


def training_checks(args: argparse.Namespace, workdir: str):
    """The two training jobs (2 iterations) and tools/test.py on 2 faces: the real files at sd21 (the rehearsal's
    jobs and weights), the tiny files at tiny size (demo faces made under the workdir)."""
    from drward.data.demo_faces import ensure_demo_faces
    over = training_overrides(args.size, workdir, args.device)
    per_iter = _per_iteration
    if args.size == 'tiny':
        faces = ensure_demo_faces(osp.join(workdir, 'faces64'), size=64, count=8)
        test_faces = ensure_demo_faces(osp.join(workdir, 'faces128'), size=128, count=2)
        data = [f'datasets:train:dataroot_gt={faces}', f'datasets:val:dataroot_gt={faces}']
        jobs = [(name, f'options/refl_{name}_tiny.yml', over + data + [f'name=gpu_check_{name}'])
                for name in ('diffbir', 'osediff')]
        test = ('options/test_celeba_tiny.yml', [f'datasets:test_1:dataroot_gt={test_faces}', 'name=gpu_check_test',
                                                 f'path:results_root={osp.join(workdir, "results")}',
                                                 f'num_gpu={1 if args.device == "cuda" else 0}'])
    else:
        from benchmarks.rehearsal import jobs as rehearsal_jobs
        from benchmarks.rehearsal import make_datasets
        from drward.weights.synthetic import FILES
        # the paths the weights check writes (it runs first); the rehearsal's jobs with 2 iterations instead of 1
        weights = {k: osp.join(workdir, 'weights', name) for k, name in FILES.items()}
        rehearsal = {j.name: j for j in rehearsal_jobs(weights, make_datasets(workdir), args.device, workdir)}
        run_length = ('train:total_iter', 'train:frm_update:every', 'logger:save_checkpoint_freq')
        jobs = [(name, rehearsal[f'refl_{name}'].option_file,
                 [o for o in rehearsal[f'refl_{name}'].overrides if not o.startswith(run_length)]
                 + [o for o in over if o.startswith(run_length)]) for name in ('diffbir', 'osediff')]
        test = (rehearsal['test_celeba'].option_file, rehearsal['test_celeba'].overrides)
    trains = [Check(f'train_{name}', [PY, 'tools/train.py', '-opt', option, '--force_yml', *overrides],
                    args.train_timeout, per_iter) for name, option, overrides in jobs]
    return trains, Check('test', [PY, 'tools/test.py', '-opt', test[0], '--force_yml', *test[1]], 600,
                         _per_image)


def _per_image(log: str) -> str:
    found = re.findall(r'([0-9.]+) ?s/image', log)
    return f'{float(found[-1]):.2f} s / image (2 faces), exit 0' if found else 'exit 0'


def run_check(check: Check, logdir: str) -> None:
    log_path = osp.join(logdir, f'{check.name}.log')
    start = time.time()
    env = {**os.environ, 'PYTHONPATH': ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), 'HF_HUB_OFFLINE': '1'}
    with open(log_path, 'w') as log:
        log.write(' '.join(check.command) + '\n\n')
        log.flush()
        try:
            code = subprocess.run(check.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=check.timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = 'timeout'
    text = open(log_path, errors='replace').read()
    check.result = {'ok': code == 0, 'code': code, 'seconds': time.time() - start, 'log': log_path,
                    'summary': check.summary(text) if code == 0 else text.strip().splitlines()[-1][:200]}


def render(args: argparse.Namespace, done: Sequence[Check], device_name: str) -> str:
    from benchmarks.lib.common import markdown_table
    rows = [[c.name, 'pass' if c.result['ok'] else f"FAIL ({c.result['code']})", f"{c.result['seconds']:.0f}",
             c.result['summary'].replace('|', '/')] for c in done]
    head = (f'## GPU check: {args.size} on {device_name} ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}), '
            f'K = {args.steps}')
    blocks = [head, markdown_table(['check', 'result', 'wall s', 'what it measured'], rows, align='llrl')]
    for c in done:
        if c.report and osp.exists(c.report):
            blocks.append(open(c.report).read().strip())
    return '\n\n'.join(blocks) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--size', choices=('sd21', 'tiny'), default='sd21')
    parser.add_argument('--out', default=os.environ.get('OUT') or 'gpu_check_out', help='folder for the table')
    parser.add_argument('--steps', type=int, default=None, help='K of the prefix benchmark (default 50; tiny 10)')
    parser.add_argument('--repeats', type=int, default=2, help='measured steps per prefix variant')
    parser.add_argument('--threads', type=int, default=max(1, min(os.cpu_count() or 1, 16)))
    parser.add_argument('--train-timeout', type=int, default=600)
    parser.add_argument('--prefix-timeout', type=int, default=900)
    parser.add_argument('--only', nargs='*', default=None, help='a subset of the check names')
    parser.add_argument('--lora-rank', type=int, default=32, help='rank of the LoRA checks (lora_step, budget_lora)')
    args = parser.parse_args(argv)
    args.steps = args.steps or (10 if args.size == 'tiny' else 50)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: --device cuda but no CUDA device; use --device cpu --size tiny for the plumbing')
        return 2
    out = osp.abspath(args.out)
    workdir, logdir = osp.join(out, 'work'), osp.join(out, 'logs')
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    device_name = torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'
    selected = [c for c in checks(args, workdir) if not args.only or c.name in args.only]
    for check in selected:
        print(f'== {check.name}: {" ".join(check.command[:4])} ...', flush=True)
        run_check(check, logdir)
        print(f"   {'pass' if check.result['ok'] else 'FAIL'} in {check.result['seconds']:.0f} s: "
              f"{check.result['summary']}", flush=True)
    table = render(args, selected, device_name)
    with open(osp.join(out, 'gpu_check.md'), 'w') as handle:
        handle.write(table)
    print(table)
    print(f'gpu_check: {sum(c.result["ok"] for c in selected)}/{len(selected)} passed; table in '
          f'{osp.join(out, "gpu_check.md")}')
    return 0 if all(c.result['ok'] for c in selected) else 1


if __name__ == '__main__':
    sys.exit(main())
