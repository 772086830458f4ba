"""The README's main job: DiffusionReward ReFL on a TINY DiffBIR, on the CPU, with no downloads.

    python tools/demo.py [-opt options/refl_diffbir_tiny.yml]

Trains with BasicSR's own pipeline (``tools/train.py``), then scores the restorer before and after ReFL with the final
FRM on the validation faces and prints where the images, logs and checkpoints are. Every model is tiny and random:
the run shows the method's mechanics (reward up, FRM preferring GT), not restoration quality.
"""
import argparse
import glob
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('-opt', default='options/refl_diffbir_tiny.yml')
    args = parser.parse_args()
    opt_path = osp.abspath(args.opt)
    start = time.time()
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), '-opt', opt_path], check=True, env=env)
    train_seconds = time.time() - start

    import torch
    import yaml

    from drward.models.reward_report import format_report, score_experiment
    with open(opt_path) as f:
        opt = yaml.safe_load(f)
    exp = osp.join(ROOT, 'experiments', opt['name'])
    torch.set_num_threads(1)
    report = score_experiment(opt, exp)
    print('\n' + format_report(report, f"## {opt['name']}: before vs after ReFL, scored by the final FRM "
                                       '(validation faces, same noise)'))
    print(f'\nTraining took {train_seconds:.0f} s.')
    print(f'Experiment folder : {exp}')
    print(f'  restored grids  : {osp.join(exp, "visualization")}  (LQ | restored | GT)')
    print(f'  training log    : {sorted(glob.glob(osp.join(exp, "train_*.log")))[-1]}')
    print(f'  training curves : {osp.join(exp, "training_curves.png")}  (reward restored vs GT, FRM accuracy, '
          f'losses; redraw: python tools/plot_curves.py {osp.relpath(exp, ROOT)})')
    print(f'  checkpoints     : {osp.join(exp, "models")}  (net_g_*: trained IRControlNet, net_frm_*: FRM)')
    print(f'  resume states   : {osp.join(exp, "training_states")}  (tools/train.py -opt ... --auto_resume)')


if __name__ == '__main__':
    main()
