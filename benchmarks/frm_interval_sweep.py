"""Reward feedback on a non-diffusion restorer, at tiny scale: with vs without the reward term, and the dynamic FRM
update interval ``every`` ∈ {never, 20, 10, 5, 1} vs reward hacking (the paper fixes n = 10 without an ablation).

Every run is ``options/reward_srmodel_tiny.yml`` (RewardSRModel: SRVGGNetCompact, L1 + DWT + reward, TINY random
FRM) with one setting changed, from the same seed: the same initial generator and FRM, the same training batches.
After training, on held-out faces (demo faces the training set does not contain, degraded with a fixed seed):

* ``PSNR`` (BasicSR's ``calculate_psnr`` on 8-bit images, as validation);
* under the run's own final FRM: mean reward ``r(Î)`` and ``r(I_GT)``, ``hack_reward_gap`` = their difference,
  and ``hack_hf_ratio`` (DT-CWT high-pass energy, restored / GT) — the monitor's values;
* ``r0(Î)``: the reward under the *initial* FRM, the same judge for every run;
* the iteration of the monitor's first training warning, if any.

A TINY random FRM scores nothing about faces: what these tables can show is the *mechanics* (does the generator
out-score the GT under a fixed FRM, does a moving FRM stop that, what it costs in PSNR), not image quality.

    python benchmarks/frm_interval_sweep.py                         # default sweep, tables on stdout
    python benchmarks/frm_interval_sweep.py --reward-weight 1.0 --out sweep.md
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch
import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402

OPTION_FILE = osp.join(ROOT, 'options', 'reward_srmodel_tiny.yml')
NEVER = 'never'
TRAIN_FACES = 16  # the option file's demo faces (DEFAULT_COUNT)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FRM update interval vs reward hacking (tiny RewardSRModel)')
    parser.add_argument('--every', nargs='+', default=[NEVER, '20', '10', '5', '1'],
                        help="FRM update intervals ('never' = no update)")
    parser.add_argument('--reward-weight', type=float, default=None, help='RewardLoss loss_weight (option file)')
    parser.add_argument('--frm-lr', type=float, default=None, help='FRM update lr (option file)')
    parser.add_argument('--iters', type=int, default=150, help='generator iterations per run')
    parser.add_argument('--heldout', type=int, default=32, help='held-out faces (demo faces after the first 16)')
    parser.add_argument('--no-reward-comparison', action='store_true',
                        help='skip table 1 (the same setting without the reward term)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--out', default=None, help='also write the Markdown report here')
    add_smoke_flag(parser, 'never and 1, 2 iterations, 2 held-out faces, no reward comparison',
                   every=['never', '1'], iters=2, heldout=2, no_reward_comparison=True)
    return apply_smoke(parser.parse_args(argv))


# ------------------------------------------------------------------------------------------------ options and data
def run_options(args: argparse.Namespace, workdir: str, every: str, reward_weight: Optional[float]) -> Dict:
    """The option file as BasicSR parses it for training, everything written under ``workdir``, one setting changed."""
    with open(OPTION_FILE) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, manual_seed=args.seed)
    opt['path'].update({key: osp.join(workdir, key) for key in ('models', 'training_states', 'visualization')},
                       log=workdir)
    train_set = opt['datasets']['train']
    train_set.update(phase='train', scale=1, dataroot_gt=osp.join(workdir, 'faces_train'))
    train = opt['train']
    train['total_iter'] = args.iters
    if reward_weight is not None:
        train['reward_opt']['loss_weight'] = reward_weight
    if args.frm_lr is not None:
        train['frm_update']['optim']['lr'] = args.frm_lr
    train['frm_update'].update(enabled=every != NEVER, every=int(every) if every != NEVER else 1)
    return opt


def heldout_set(args: argparse.Namespace, opt: Dict, workdir: str) -> Dict[str, object]:
    """Demo faces ``16 … 16 + heldout − 1`` (not in training), degraded as the option file's validation set."""
    from basicsr.data import build_dataset

    from drward.data.demo_faces import demo_face_name, make_demo_faces

    every_face, folder = osp.join(workdir, 'faces_all'), osp.join(workdir, 'faces_heldout')
    make_demo_faces(every_face, size=opt['datasets']['val']['gt_size'], count=TRAIN_FACES + args.heldout)
    os.makedirs(folder, exist_ok=True)
    for index in range(TRAIN_FACES, TRAIN_FACES + args.heldout):
        for ext in ('.png', '.txt'):
            shutil.copy(osp.join(every_face, demo_face_name(index) + ext), folder)
    val = dict(opt['datasets']['val'], phase='val', scale=1, dataroot_gt=folder, demo_faces=False, seed=args.seed)
    dataset = build_dataset(val)
    items = [dataset[i] for i in range(len(dataset))]
    return {'lq': torch.stack([it['lq'] for it in items]), 'gt': torch.stack([it['gt'] for it in items]),
            'caption': [it['caption'] for it in items]}


# ------------------------------------------------------------------------------------------------ one run
def train_run(opt: Dict):
    """Build the model from the seed and train it for ``total_iter`` iterations; returns it and its initial FRM."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model

    torch.manual_seed(opt['manual_seed'])
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None,
                              seed=opt['manual_seed'])
    model = build_model(copy.deepcopy(opt))
    initial_frm = copy.deepcopy(model.frm)
    it = 0
    while it < opt['train']['total_iter']:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            if it == opt['train']['total_iter']:
                break
    return model, initial_frm


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def evaluate(run, judge, heldout: Dict[str, object]) -> Dict[str, float]:
    """PSNR, the monitor's values under the model's final FRM, and the reward under ``judge`` (the initial FRM,
    which every run shares: checked)."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    from drward.models.hack_monitor import HackStats

    model, initial_frm = run
    if not same_weights(initial_frm, judge):
        raise RuntimeError('runs did not start from the same FRM: the seeding is broken')
    model.net_g.eval()
    with torch.no_grad():
        restored = model.net_g(heldout['lq']).clamp(0, 1)
        r0 = float(judge.similarity(restored, heldout['caption']).mean())
    psnr = sum(calculate_psnr(tensor2img(a), tensor2img(b), crop_border=0)
               for a, b in zip(restored, heldout['gt'])) / len(restored)
    stats = HackStats()
    stats.add(model.frm, model.hack_monitor.hf, restored, heldout['gt'], heldout['caption'])
    alarms = model.hack_monitor.alarms
    return {'psnr': psnr, **stats.result(), 'reward_initial_frm': r0, 'frm_updates': model.frm_update.updates,
            'first_alarm': alarms[0][0] if alarms else None}


def quiet_basicsr_logs() -> None:
    import logging
    logging.getLogger('basicsr').setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------------ tables
def _row(cells: List[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


def render_table(first: str, results: List[Dict[str, float]], labels: List[str]) -> str:
    header = [first, 'FRM updates', 'PSNR (dB)', 'r(Î)', 'r(GT)', 'hack_reward_gap', 'hack_hf_ratio', 'r0(Î)',
              'monitor warned at']
    lines = [_row(header), _row([':---'] + ['---:'] * (len(header) - 1))]
    for label, r in zip(labels, results):
        lines.append(_row([label, str(r['frm_updates']), f"{r['psnr']:.2f}", f"{r['reward_restored']:.4f}",
                           f"{r['reward_gt']:.4f}", f"{r['hack_reward_gap']:+.4f}", f"{r['hack_hf_ratio']:.3f}",
                           f"{r['reward_initial_frm']:.4f}",
                           '—' if r['first_alarm'] is None else f"iter {r['first_alarm']}"]))
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import drward  # noqa: F401  (registers the models, archs, losses)
    quiet_basicsr_logs()
    started = time.process_time()
    with tempfile.TemporaryDirectory(prefix='frm_sweep_') as workdir:
        base = run_options(args, workdir, NEVER, args.reward_weight)
        heldout = heldout_set(args, base, workdir)
        weight = base['train']['reward_opt']['loss_weight']
        yml_every = str(yaml.safe_load(open(OPTION_FILE))['train']['frm_update']['every'])
        runs = [train_run(run_options(args, workdir, every, args.reward_weight)) for every in args.every]
        judge = runs[0][1]  # the seed's FRM: every run starts from it
        sweep = [evaluate(run, judge, heldout) for run in runs]
        report = [f'Tiny RewardSRModel ({osp.relpath(OPTION_FILE, ROOT)}), {args.iters} iterations, seed {args.seed}, '
                  f'reward weight {weight:g}, FRM lr {base["train"]["frm_update"]["optim"]["lr"]:g}; '
                  f'{args.heldout} held-out demo faces. TINY random FRM: mechanics, not face quality.', '',
                  render_table('every', sweep, args.every)]
        if not args.no_reward_comparison:
            without = evaluate(train_run(run_options(args, workdir, yml_every, 0.0)), judge, heldout)
            with_reward = sweep[args.every.index(yml_every)] if yml_every in args.every else evaluate(
                train_run(run_options(args, workdir, yml_every, args.reward_weight)), judge, heldout)
            report += ['', f'With vs without the reward term (every = {yml_every}, the option file\'s):', '',
                       render_table('reward weight', [without, with_reward], ['0', f'{weight:g}'])]
    report += ['', f'CPU time: {time.process_time() - started:.0f} s ({args.threads} thread(s)).']
    text = '\n'.join(report) + '\n'
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    return text


if __name__ == '__main__':
    main()
