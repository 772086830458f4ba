"""The paper's ablation table, the reward-hacking recipe and a multi-reward run — at TINY size on the CPU.

    python benchmarks/ablations_tiny.py [--iters 12] [--heldout 4] [--jobs 2] [--out DIR]

Runs, each with ``tools/train.py`` from the tiny option files (short: ``--iters`` generator steps, K = 4 DDIM steps,
batch 2, the FRM update every 4 steps, the same seed):

* ``full`` (``options/refl_diffbir_tiny.yml``) and the four ablations (``options/ablations/*_tiny.yml``: no reward,
  no LPIPS + DWT, no regulariser, no dynamic FRM update);
* ``hack``: the reward-hacking recipe: ``refl_diffbir_no_dynamic_frm_tiny.yml`` for ``--iters`` steps, then resumed
  from its own state with the updates switched on (``--auto_resume --force_yml train:frm_update:every=4``) for as
  many again; its ``training_curves.png`` shows both phases with the switch marked;
* ``multireward`` (``options/refl_diffbir_multireward_tiny.yml``): the tiny FRM plus a tiny random MUSIQ;
* ``lora`` (``options/ablations/refl_diffbir_lora_tiny.yml``): LoRA rank 32 on the IRControlNet instead of the full
  fine-tune (``network_g.lora``).

Once all have trained, each restorer is tested by ``tools/test.py`` on the same held-out demo faces (faces the
training set does not contain, degraded with a fixed seed), PSNR, SSIM, LPIPS, MUSIQ and the FRM reward (judged by the
FRM every run starts from: ``no_dynamic_frm``'s, never updated; ``untrained``: the restorer they all start from, so
each row's reward gain is its FRM reward minus that row's), and the ``tools/compare_runs.py`` table is printed
against ``full``,
followed by the hack monitor's values before and after the switch and the multi-reward run's reward terms.

TINY RANDOM models score nothing about faces: the numbers show the mechanics (every recipe trains, resumes, tests and
lands in one table), not the paper's results. Experiment folders: ``experiments/ablations_tiny_*`` and
``results/ablations_tiny_*`` (replaced on every run).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import mean
from typing import Dict, Optional, Sequence

import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)
from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402

PREFIX = 'ablations_tiny_'
TRAIN_FACES = 16
EVERY = 4
VARIANTS = {  # label -> option file
    'full': 'options/refl_diffbir_tiny.yml',
    'no_reward': 'options/ablations/refl_diffbir_no_reward_tiny.yml',
    'no_lpips_dwt': 'options/ablations/refl_diffbir_no_lpips_dwt_tiny.yml',
    'no_reg': 'options/ablations/refl_diffbir_no_reg_tiny.yml',
    'no_dynamic_frm': 'options/ablations/refl_diffbir_no_dynamic_frm_tiny.yml',
    'hack': 'options/ablations/refl_diffbir_no_dynamic_frm_tiny.yml',
    'multireward': 'options/refl_diffbir_multireward_tiny.yml',
    'lora': 'options/ablations/refl_diffbir_lora_tiny.yml',
}
#: The judge of the FRM reward column: the FRM every run starts from (same seed, same build order), as the run
#: without dynamic updates saves it unchanged at its end.
JUDGE_RUN = 'no_dynamic_frm'
TEST_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False},
                'lpips': {'type': 'calculate_lpips', 'net': 'alex', 'weights_dir': 'weights/iqa'},
                'musiq': {'type': 'calculate_musiq', 'weights_dir': 'weights/iqa'}}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=12, help='generator steps per run (the hack run: twice)')
    parser.add_argument('--heldout', type=int, default=4, help='held-out demo faces to test on')
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (one thread each)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS),
                        help='a subset of the runs (full and hack are always kept: the tables need them)')
    parser.add_argument('--out', default=osp.join(ROOT, 'experiments', f'{PREFIX}work'),
                        help='folder for the option files, the faces and the table')
    add_smoke_flag(parser, 'the full run and the judge run, 1 generator step each, 1 held-out face',
                   iters=1, heldout=1, jobs=1, variants=['full'],
                   out=lambda: tempfile.mkdtemp(prefix='drward_smoke_'))
    args = apply_smoke(parser.parse_args(argv))
    args.variants = list(dict.fromkeys(['full', JUDGE_RUN, *args.variants]))
    return args


def make_faces(work: str, heldout: int) -> Dict[str, str]:
    from drward.data.demo_faces import demo_face_name, make_demo_faces
    every, train, test = (osp.join(work, name) for name in ('faces_all', 'faces_train', 'faces_heldout'))
    make_demo_faces(every, size=64, count=TRAIN_FACES + heldout)
    for folder, indices in ((train, range(TRAIN_FACES)), (test, range(TRAIN_FACES, TRAIN_FACES + heldout))):
        os.makedirs(folder, exist_ok=True)
        for index in indices:
            for ext in ('.png', '.txt'):
                shutil.copy(osp.join(every, demo_face_name(index) + ext), folder)
    return {'train': train, 'test': test}


def train_options(label: str, option_file: str, faces: str, iters: int) -> Dict:
    with open(osp.join(ROOT, option_file), encoding='utf-8') as handle:
        opt = yaml.safe_load(handle)
    opt['name'] = PREFIX + label
    opt['network_g']['num_steps'] = 4
    opt['train'].update(total_iter=iters, grad_accum=2)
    if opt['train']['frm_update'].get('every') != 'never':
        opt['train']['frm_update']['every'] = EVERY
    opt['datasets']['train'].update(dataroot_gt=faces, demo_faces=False, batch_size_per_gpu=2)
    opt['datasets'].pop('val')
    opt.pop('val')
    opt['logger'].update(print_freq=2, save_checkpoint_freq=iters)
    return opt


def test_options(label: str, train_opt: Dict, faces: str, iters: int, judge: str) -> Dict:
    with open(osp.join(ROOT, 'options', 'test_celeba_tiny.yml'), encoding='utf-8') as handle:
        opt = yaml.safe_load(handle)
    opt['name'] = f'{PREFIX}test_{label}'
    opt['num_gpu'] = 0
    opt['datasets']['test_1'].update(name='HeldOutDemoFaces64', dataroot_gt=faces, demo_faces=False, gt_size=64)
    opt['network_g'] = dict(train_opt['network_g'])
    models = osp.join(ROOT, 'experiments', train_opt['name'], 'models')
    opt['path'] = {'pretrain_network_g': osp.join(models, f'net_g_{iters}.safetensors') if iters else None,
                   'restored_root': osp.join(ROOT, 'results', f'{PREFIX}restored', label)}
    reward = {'type': 'calculate_frm_reward', 'model_name': 'tiny', 'checkpoint': judge}
    opt['val'].update(label=label, pbar=False, save_img=False, metrics={**TEST_METRICS, 'frm_reward': reward})
    return opt


def run(tool: str, opt_path: str, log_path: str, *extra: str) -> float:
    """``python tools/<tool>.py -opt <opt_path> [extra]`` on one thread; raises with the log's tail on failure."""
    start = time.time()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': ROOT}
    with open(log_path, 'a', encoding='utf-8') as log:
        code = subprocess.call([sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), '-opt', opt_path, *extra],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if code:
        tail = open(log_path, encoding='utf-8', errors='replace').read()[-3000:]
        raise RuntimeError(f'tools/{tool}.py -opt {opt_path} {" ".join(extra)} failed ({code}):\n{tail}')
    return time.time() - start


def write_yaml(opt: Dict, path: str) -> str:
    with open(path, 'w', encoding='utf-8') as handle:
        yaml.safe_dump(opt, handle, sort_keys=False)
    return path


def train_variant(label: str, work: str, faces: Dict[str, str], iters: int) -> Dict:
    """Train (the hack run: twice, the second resumed with FRM updates on); the timings."""
    opt = train_options(label, VARIANTS[label], faces['train'], iters)
    for folder in (osp.join(ROOT, 'experiments', opt['name']), osp.join(ROOT, 'results', f'{PREFIX}test_{label}'),
                   osp.join(ROOT, 'results', f'{PREFIX}restored', label)):
        shutil.rmtree(folder, ignore_errors=True)
    log = osp.join(work, f'{label}.log')
    open(log, 'w').close()
    seconds = {'train': run('train', write_yaml(opt, osp.join(work, f'{label}_train.yml')), log)}
    last = iters
    if label == 'hack':  # phase 2: the same run resumed with the FRM updates switched on
        last = 2 * iters
        seconds['train'] += run('train', osp.join(work, f'{label}_train.yml'), log, '--auto_resume', '--force_yml',
                                f'train:frm_update:every={EVERY}', f'train:total_iter={last}',
                                f'logger:save_checkpoint_freq={iters}')
    return {'label': label, 'seconds': seconds, 'opt': opt, 'last': last, 'log': log,
            'curves': osp.join(ROOT, 'experiments', opt['name'], 'training_curves.json'), 'switch_at': iters}


def test_variant(trained: Dict, work: str, faces: Dict[str, str], judge: str) -> Dict:
    """tools/test.py on the held-out faces; adds the results folder and the test time."""
    label = trained['label']
    test = test_options(label, trained['opt'], faces['test'], trained['last'], judge)
    trained['seconds']['test'] = run('test', write_yaml(test, osp.join(work, f'{label}_test.yml')), trained['log'])
    return {**trained, 'results': osp.join(ROOT, 'results', test['name'])}


def phase_table(curves_path: str, switch_at: int) -> str:
    """Mean of the hack monitor's values (training log steps) before and after the switch."""
    from drward.utils.curves import TrainingCurves
    with open(curves_path, encoding='utf-8') as handle:
        curves = TrainingCurves.from_json(json.load(handle))
    keys = ('hack_reward_gap', 'hack_hf_ratio', 'reward_restored', 'reward_gt', 'frm_acc')
    lines = [f'switches recorded: {curves.switches}', '',
             f'| value | before the switch (iter ≤ {switch_at}) | after (iter > {switch_at}) |', '|---|---:|---:|']
    for key in keys:
        series = curves.train.get(key, {})
        before = [v for i, v in series.items() if i <= switch_at]
        after = [v for i, v in series.items() if i > switch_at]
        cell = lambda values: f'{mean(values):.4f} ({len(values)} logs)' if values else 'n/a (not logged)'
        lines.append(f'| {key} | {cell(before)} | {cell(after)} |')
    return '\n'.join(lines)


def reward_terms(curves_path: str) -> str:
    from drward.utils.curves import TrainingCurves
    with open(curves_path, encoding='utf-8') as handle:
        curves = TrainingCurves.from_json(json.load(handle))
    keys = [k for k in curves.train if k.startswith('l_reward') or k.startswith('hack_reward_gap')]
    return '\n'.join(f'- {k}: ' + ', '.join(f'{i}: {v:.4g}' for i, v in sorted(curves.train[k].items()))
                     for k in keys)


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    from drward.metrics.compare import compare_runs, write_comparison
    os.makedirs(args.out, exist_ok=True)
    faces = make_faces(args.out, args.heldout)
    start = time.time()
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        trained = list(pool.map(lambda label: train_variant(label, args.out, faces, args.iters), args.variants))
        judge = osp.join(ROOT, 'experiments', PREFIX + JUDGE_RUN, 'models', f'net_frm_{args.iters}.pth')
        start_point = {**trained[0], 'label': 'untrained', 'last': None, 'seconds': {'train': 0.0}}  # the tiny start
        runs = list(pool.map(lambda t: test_variant(t, args.out, faces, judge), [start_point, *trained]))
    by_label = {r['label']: r for r in runs}
    note = 'TINY random models: mechanics only, not results'
    comparisons = compare_runs([r['results'] for r in runs], baseline='full')
    write_comparison(comparisons, osp.join(args.out, 'ablations_tiny.md'), note)
    timing = ', '.join(f"{r['label']} {r['seconds']['train']:.0f} s + {r['seconds']['test']:.0f} s" for r in runs)
    report = '\n'.join([
        f'# benchmarks/ablations_tiny.py: {args.iters} steps per run (hack: {args.iters} without FRM updates + '
        f'{args.iters} with), K = 4, batch 2, {args.heldout} held-out demo faces at 64²',
        '', *[c.to_markdown(note) for c in comparisons],
        *(['## Reward hacking induced, then repaired (run `hack`)', '',
           phase_table(by_label['hack']['curves'], by_label['hack']['switch_at']), '',
           f"curves: {osp.join(osp.dirname(by_label['hack']['curves']), 'training_curves.png')}", '']
          if 'hack' in by_label else []),
        *(['## Multi-reward run: each reward term as logged', '', reward_terms(by_label['multireward']['curves']), '']
          if 'multireward' in by_label else []),
        f'wall time {time.time() - start:.0f} s with {args.jobs} runs at a time (train + test per run: {timing})'])
    print(report, flush=True)
    with open(osp.join(args.out, 'report.md'), 'w', encoding='utf-8') as handle:
        handle.write(report + '\n')
    return report


if __name__ == '__main__':
    main()
