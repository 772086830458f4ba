"""Redraw a run's training curves from its BasicSR log: reward of restored vs GT, FRM pair accuracy, loss terms,
validation metrics, FRM update marks.

    python tools/plot_curves.py experiments/<name> [-o picture.png]

Reads every ``train_*.log`` of the folder (or one log file), for finished runs, older runs or someone else's; writes
``<folder>/training_curves.png`` unless ``-o`` says otherwise. Training runs draw the same picture themselves.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.utils.curves import CURVES_FILE, draw_curves, read_run_logs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run', help='experiment folder (experiments/<name>) or one train_*.log file')
    parser.add_argument('-o', '--output', help=f'picture to write (default: <folder>/{CURVES_FILE})')
    args = parser.parse_args()
    try:
        curves = read_run_logs(args.run)
    except FileNotFoundError as error:
        sys.exit(f'plot_curves: {error}')
    folder = osp.dirname(args.run) if osp.isfile(args.run) else args.run
    path = draw_curves(curves, args.output or osp.join(folder, CURVES_FILE))
    iters = sorted({i for series in curves.train.values() for i in series})
    span = f'iterations {iters[0]}-{iters[-1]}' if iters else 'no training lines'
    print(f'{path}: {len(curves.train)} logged series over {span}, {len(curves.val)} validation series, '
          f'FRM updates at iterations {sorted(curves.frm_updates)}')


if __name__ == '__main__':
    main()
