"""Rehearse every real option file at real size, here: what a user does on a GPU box, with random weights.

    python benchmarks/rehearsal.py --workdir /scratch/rehearsal [--device cpu|cuda] [--jobs refl_diffbir ...] [--trace]

1. ``WORKDIR/weights/``: real-size random weights in the official layouts (:mod:`drward.weights.synthetic`;
   deterministic; files already there are reused).
2. ``WORKDIR/datasets/``: a handful of 512² faces made from the bundled demo faces (with captions), preference
   pairs for the FRM, and an LQ/GT test set.
3. Each job runs as a subprocess exactly as a user types it — ``tools/train.py -opt options/refl_diffbir.yml`` — with
   BasicSR's ``--force_yml`` changing only paths, dataset size and run length (one or two iterations, one FRM update,
   one checkpoint); K = 50, N = 1, the losses, the FRM update and the weight precision stay as in the real files. Runs
   land in ``WORKDIR/experiments/rehearsal_<job>/`` (``WORKDIR/results/`` for the test jobs), BasicSR's layout under
   the workdir (``path:experiments_root`` / ``path:results_root``), so the checkout stays clean.
4. A table: job, pass/fail, seconds per iteration (per image for tests), peak RSS of the job's process (its
   ``ru_maxrss``: RAM is the budget here as VRAM is on a GPU), checkpoint sizes. Exit status 1 if a job failed; the
   last line reads ``rehearsal: N/N jobs passed, peak X.X GiB``.

Disk: a real-size training job writes up to ~18 GB of checkpoints (``net_frm`` 3.9 GB, twice with BasicSR's
``_latest`` copy; a training state with two AdamW states, 7 GB for DiffBIR). Each job checks the workdir's free
space first (``Job.disk_gib``) and fails with a clear line instead of dying mid-write; once measured, a job's
checkpoints (random weights) are deleted unless ``--keep-checkpoints``, so the whole rehearsal needs the weights
(~12 GB) plus one job's checkpoints.

Random weights: the runs prove the files, shapes, memory and cost, not restoration quality.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GIB = 1024 ** 3
TRAIN_FACES, VAL_FACES, TEST_FACES = 8, 1, 2


@dataclass
class Job:
    """One user command: ``tool`` (train/test), its option file, ``--force_yml`` overrides, and how many
    iterations (or test images) it runs."""

    name: str
    tool: str
    option_file: str
    overrides: List[str]
    units: int
    unit: str = 'iter'
    disk_gib: float = 1.0  # what the job writes, at most (measured on a rehearsal), checked before it starts
    result: Dict = field(default_factory=dict)


def make_datasets(workdir: str) -> Dict[str, str]:
    """Faces (512², with captions), FRM pairs (human-labelled JSONL), and an LQ/GT test set, once."""
    import cv2

    from drward.data.demo_faces import ensure_demo_faces
    data = osp.join(workdir, 'datasets')
    faces = ensure_demo_faces(osp.join(data, 'faces512'), size=512, count=TRAIN_FACES + VAL_FACES + TEST_FACES)
    names = sorted(n for n in os.listdir(faces) if n.endswith('.png'))
    folders = {key: osp.join(data, key) for key in ('train', 'val', 'test_gt', 'test_lq', 'frm')}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    split = {'train': names[:TRAIN_FACES], 'val': names[TRAIN_FACES:TRAIN_FACES + VAL_FACES],
             'test_gt': names[-TEST_FACES:]}
    for key, chosen in split.items():
        for name in chosen:  # the test set's GT folder holds images only (BasicSR pairs its files with the LQ's)
            for suffix in ('.png',) if key == 'test_gt' else ('.png', '.txt'):
                src, dst = osp.join(faces, name[:-4] + suffix), osp.join(folders[key], name[:-4] + suffix)
                if osp.exists(src) and not osp.exists(dst):
                    os.link(src, dst)
    for stale in glob.glob(osp.join(folders['test_gt'], '*.txt')):  # captions a workdir of an older version left
        os.remove(stale)
    for name in split['test_gt']:  # a blurred, down-up-sampled LQ: enough to exercise the test pipeline
        lq = osp.join(folders['test_lq'], name)
        if not osp.exists(lq):
            image = cv2.imread(osp.join(faces, name))
            small = cv2.resize(cv2.GaussianBlur(image, (0, 0), 3), (128, 128), interpolation=cv2.INTER_AREA)
            cv2.imwrite(lq, cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC))
    pairs = osp.join(folders['frm'], 'pairs.jsonl')
    if not osp.exists(pairs):
        rows = []
        for i, name in enumerate(split['train']):  # GT preferred over its blurred copy: human-labelled rows
            lq = osp.join(folders['frm'], f'lq_{name}')
            if not osp.exists(lq):
                cv2.imwrite(lq, cv2.GaussianBlur(cv2.imread(osp.join(faces, name)), (0, 0), 2 + i % 3))
            rows.append({'image_a': osp.join(folders['train'], name), 'image_b': lq, 'caption': 'a photo of a face',
                         'label': 1.0, 'source': 'human', 'confidence': 1.0})
        with open(pairs, 'w') as handle:
            handle.writelines(json.dumps(row) + '\n' for row in rows)
    return {**folders, 'pairs': pairs}


def jobs(weights: Dict[str, str], data: Dict[str, str], device: str, workdir: str = ROOT) -> List[Job]:
    """The real option files with run-length, data and path overrides only; runs land under ``workdir``."""
    gpu = '1' if device == 'cuda' else '0'
    runs = [f'path:experiments_root={osp.join(workdir, "experiments")}']
    results = [f'path:results_root={osp.join(workdir, "results")}']
    common = [f'num_gpu={gpu}', 'logger:print_freq=1', 'logger:use_tb_logger=false', 'val:val_freq=1000000'] + runs
    paths = [f'network_g:sd_checkpoint={weights["sd"]}', f'train:lpips_opt:backbone_path={weights["vgg16"]}',
             f'train:reward_opt:frm:checkpoint={weights["frm"]}',
             f'datasets:train:dataroot_gt={data["train"]}', f'datasets:val:dataroot_gt={data["val"]}',
             'datasets:train:num_worker_per_gpu=1']
    # one generator step (batch 4 = 1 x accumulation 4, as the real file: four K = 50 restorations, their no-grad
    # prefixes batched as the real file's train.batched_prefix: true does), the FRM update and a checkpoint after
    # it: everything a long run allocates is allocated once
    refl_run = ['train:total_iter=1', 'train:frm_update:every=1', 'logger:save_checkpoint_freq=1']
    test_paths = [f'datasets:test_1:dataroot_lq={data["test_lq"]}', f'datasets:test_1:dataroot_gt={data["test_gt"]}',
                  f'network_g:sd_checkpoint={weights["sd"]}', 'val:pbar=false']
    return [
        Job('refl_diffbir', 'train', 'options/refl_diffbir.yml',
            common + paths + refl_run + ['name=rehearsal_refl_diffbir', 'train:batched_prefix=True',
                                         f'network_g:diffbir_checkpoint={weights["diffbir"]}',
                                         f'network_g:swinir_checkpoint={weights["swinir"]}'], 1, disk_gib=18),
        Job('refl_osediff', 'train', 'options/refl_osediff.yml',
            common + paths + refl_run + ['name=rehearsal_refl_osediff',
                                         f'network_g:osediff_checkpoint={weights["osediff"]}'], 1, disk_gib=13),
        Job('train_frm', 'train', 'options/train_frm.yml',
            common + ['name=rehearsal_train_frm', f'network_frm:checkpoint={weights["frm"]}',
                      f'datasets:train:pairs_file={data["pairs"]}', f'datasets:val:pairs_file={data["pairs"]}',
                      'datasets:train:batch_size_per_gpu=4', 'datasets:train:num_worker_per_gpu=1',
                      'train:total_iter=2', 'train:warmup_iter=0',  # not -1: --force_yml would read it as a string
                      'val:val_at_start=false', 'logger:save_checkpoint_freq=2'], 2, disk_gib=12),
        Job('test_celeba', 'test', 'options/test_celeba.yml',
            [f'num_gpu={gpu}', 'name=rehearsal_test_celeba', f'network_g:diffbir_checkpoint={weights["diffbir"]}',
             f'network_g:swinir_checkpoint={weights["swinir"]}', 'compare=~'] + test_paths + results,
            TEST_FACES, 'image'),
        Job('test_celeba_osediff', 'test', 'options/test_celeba_osediff.yml',
            [f'num_gpu={gpu}', 'name=rehearsal_test_celeba_osediff',
             f'network_g:osediff_checkpoint={weights["osediff"]}', 'compare=~'] + test_paths + results,
            TEST_FACES, 'image'),
    ]


def free_gib(folder: str) -> float:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize / GIB


def not_enough_disk(job: Job, workdir: str) -> Optional[Dict]:
    """A failed result without running the job when the workdir's disk has less than ``job.disk_gib`` free."""
    free = free_gib(workdir)
    if free >= job.disk_gib:
        return None
    message = (f'not run: {free:.1f} GiB free on the disk of {workdir}, the job writes up to {job.disk_gib:.0f} GiB '
               f'(checkpoints of real-size models); free some space or choose another --workdir')
    return {'ok': False, 'returncode': None, 'seconds': 0.0, 'peak_gib': 0.0, 'per_unit': None, 'log': '-',
            'checkpoints': '-', 'tail': message}


def run_job(job: Job, logdir: str, workdir: str, trace: bool = False, keep_checkpoints: bool = False) -> Dict:
    """Run one job as a subprocess; its exit code, wall time, peak RSS (``wait4``'s ``ru_maxrss``) and log.
    ``trace``: through ``benchmarks/rss_trace.py``, which logs RSS and time at the step's boundaries. The job's
    checkpoints are measured, then deleted unless ``keep_checkpoints``."""
    refused = not_enough_disk(job, workdir)
    if refused:
        return refused
    tracer = [osp.join(ROOT, 'benchmarks', 'rss_trace.py')] if trace else []
    command = [sys.executable, *tracer, osp.join(ROOT, 'tools', f'{job.tool}.py'), '-opt', job.option_file,
               '--force_yml', *job.overrides]
    log_path = osp.join(logdir, f'{job.name}.log')
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(' '.join(command) + '\n\n')
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - start
    with open(log_path, errors='replace') as log:
        text = log.read()
    files = checkpoint_files(job, workdir)
    sizes = ', '.join(f'{osp.basename(f)} {osp.getsize(f) / 1e6:,.0f} MB' for f in files) or '-'
    if not keep_checkpoints:
        for path in files:
            os.remove(path)
    return {'ok': process.returncode == 0, 'returncode': process.returncode, 'seconds': seconds,
            'peak_gib': usage.ru_maxrss * 1024 / GIB, 'per_unit': per_unit_seconds(text, job), 'log': log_path,
            'checkpoints': sizes, 'tail': text[-1500:]}


def per_unit_seconds(log_text: str, job: Job) -> Optional[float]:
    """Seconds per iteration from BasicSR's log lines (``time (data): t``, its running mean over iterations after
    the first), or per image from the test tool's timing line; None when the log has neither."""
    times = [float(t) for t in re.findall(r'time \(data\): ([0-9.]+)', log_text)]
    if times:
        return times[-1]
    per_image = re.findall(r'([0-9.]+) s/image', log_text)
    return float(per_image[-1]) if per_image else None


def checkpoint_files(job: Job, workdir: str) -> List[str]:
    """Files a training job wrote under ``WORKDIR/experiments/<name>/models`` and ``training_states``."""
    name = next((o.split('=', 1)[1] for o in job.overrides if o.startswith('name=')), job.name)
    runs = osp.join(workdir, 'experiments', name)
    return sorted(glob.glob(osp.join(runs, 'models', '*')) + glob.glob(osp.join(runs, 'training_states', '*')))


def report(done: Sequence[Job]) -> str:
    lines = ['| job | result | s / unit | peak RSS GiB | wall s | checkpoints |', '|---|---|--:|--:|--:|---|']
    for job in done:
        r = job.result
        unit = f'{r["per_unit"]:.1f} / {job.unit}' if r.get('per_unit') else f'{r["seconds"] / job.units:.1f} / ' \
                                                                            f'{job.unit} (wall)'
        lines.append(f'| {job.name} | {"pass" if r["ok"] else "FAIL"} | {unit} | {r["peak_gib"]:.1f} | '
                     f'{r["seconds"]:.0f} | {r["checkpoints"]} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', required=True, help='weights, data and logs go here (reused on a rerun)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--jobs', nargs='*', default=None, help='a subset of the job names (default: all)')
    parser.add_argument('--trace', action='store_true',
                        help='run each job through benchmarks/rss_trace.py: RSS and time at the step boundaries, '
                             'in the job\'s log')
    parser.add_argument('--keep-checkpoints', action='store_true',
                        help='keep each training job\'s checkpoints (random weights, up to ~18 GB per job)')
    args = parser.parse_args(argv)
    from drward.weights.synthetic import write_real_size_weights
    workdir = osp.abspath(args.workdir)
    logdir = osp.join(workdir, 'logs')
    os.makedirs(logdir, exist_ok=True)
    weights = {k: osp.abspath(v) for k, v in write_real_size_weights(osp.join(workdir, 'weights')).items()}
    data = make_datasets(workdir)
    selected = [j for j in jobs(weights, data, args.device, workdir) if not args.jobs or j.name in args.jobs]
    for job in selected:
        print(f'== {job.name}: tools/{job.tool}.py -opt {job.option_file} ...', flush=True)
        job.result = run_job(job, logdir, workdir, args.trace, args.keep_checkpoints)
        status = 'pass' if job.result['ok'] else f'FAIL (exit {job.result["returncode"]}; log {job.result["log"]})'
        print(f'   {status}, {job.result["seconds"]:.0f} s, peak {job.result["peak_gib"]:.1f} GiB', flush=True)
        if not job.result['ok']:
            print(job.result['tail'], flush=True)
    print(report(selected))
    passed = sum(j.result['ok'] for j in selected)
    peak = max((j.result['peak_gib'] for j in selected), default=0.0)
    print(f'rehearsal: {passed}/{len(selected)} jobs passed, peak {peak:.1f} GiB')
    return 0 if passed == len(selected) else 1


if __name__ == '__main__':
    sys.exit(main())
