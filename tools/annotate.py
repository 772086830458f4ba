"""Hybrid preference labelling for FRM training: quality metrics → 12-D features → SVM on human pairs → labels.

    # a pairs file in which some rows carry human labels (source "human"), the rest unlabelled
    python tools/annotate.py --pairs pairs.jsonl --out labelled.jsonl
    # a folder with one sub-folder per face, plus a pairs file of human labels for some of its pairs
    python tools/annotate.py --images faces/ --human-labels human.jsonl --out labelled.jsonl
    # the tiny run: degraded demo faces, the less degraded one is the "human" choice for 40 % of the pairs
    python tools/annotate.py --demo experiments/annotate_demo

Writes the labelled pairs file (human rows as given, SVM rows with their confidence), a JSON report next to it
(``<out stem>.report.json``: held-out agreement, CV accuracy, chosen C/gamma, single-metric baselines) and keeps
metric values in ``<out stem>.metrics.sqlite`` so a rerun recomputes nothing. Formats and formulas:
``drward/annotate/`` (pairs.py, quality.py, svm.py).
"""
import argparse
import json
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.annotate import collect, quality  # noqa: E402
from drward.annotate.cache import MetricCache  # noqa: E402
from drward.annotate.pipeline import annotate_pairs  # noqa: E402
from drward.annotate.svm import CONFIDENCE_MODES, KERNELS, SVMOptions  # noqa: E402
from drward.data.pairs_file import read_pairs, write_pairs  # noqa: E402
from drward.utils.options import MissingWeightsError, OptionError  # noqa: E402


def _numbers_or_words(text: str) -> list:
    items = []
    for item in text.split(','):
        try:
            items.append(float(item))
        except ValueError:
            items.append(item.strip())
    return items


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--pairs', help='pairs file (JSONL) to annotate; human rows are kept, the rest labelled')
    source.add_argument('--images', help='folder with one sub-folder per face (see drward/annotate/collect.py)')
    source.add_argument('--demo', metavar='DIR', help='make the tiny demo task in DIR and annotate it')
    parser.add_argument('--human-labels', help='pairs file of human labels to put onto the pairs')
    parser.add_argument('--out', help='labelled pairs file to write (default: <input folder>/labelled.jsonl)')
    parser.add_argument('--metrics', default='default',
                        help=f'preset {sorted(quality.METRIC_SETS)} or a comma list of '
                             f'{quality.registered_metric_names()}'
                             ' [default]')
    parser.add_argument('--metric-weights', action='append', default=[], metavar='NAME=PATH',
                        help='local weight file of a learned metric, e.g. pyiqa:musiq=weights/musiq_koniq.pth')
    parser.add_argument('--face-backend', default='dlib', choices=('dlib', 'facexlib', 'auto'),
                        help='face models of identity_similarity / landmark_distance [dlib]')
    parser.add_argument('--face-box', default=None, choices=('detect', 'aligned', 'full', 'auto'),
                        help='where the face is: detect, FFHQ-aligned box, whole image, or detect else aligned '
                             '[detect; demo: full]')
    parser.add_argument('--face-weights-dir', help='folder of the facexlib weight files [weights/facexlib]')
    parser.add_argument('--cache', help='metric cache file (default: <out stem>.metrics.sqlite)')
    parser.add_argument('--kernel', default='rbf', choices=KERNELS, help='SVM kernel [rbf]')
    parser.add_argument('--C', default='0.1,1,10,100', help='SVM C values to cross-validate [0.1,1,10,100]')
    parser.add_argument('--gamma', default='scale', help='RBF gamma values to cross-validate [scale]')
    parser.add_argument('--cv-folds', type=int, default=5, help='cross-validation folds [5]')
    parser.add_argument('--held-out', type=float, default=None,
                        help='share of human pairs held out for the agreement report [0.1; demo 0.25]')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--confidence', default='probability', choices=CONFIDENCE_MODES)
    parser.add_argument('--soft-labels', action='store_true', help='write P(A preferred) instead of 0/1')
    parser.add_argument('--min-confidence', type=float, default=0.0, help='drop SVM labels less confident')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--demo-faces', type=int, default=12, help='demo: number of faces [12]')
    parser.add_argument('--demo-size', type=int, default=256, help='demo: face size [256]')
    parser.add_argument('--demo-variants', type=int, default=6, help='demo: degraded copies per face [6]')
    return parser.parse_args(argv)


def load_pairs(args: argparse.Namespace) -> tuple:
    """``(pairs with absolute paths, output file, demo truth or None)`` from the chosen input."""
    truth = None
    if args.demo:
        from drward.annotate.demo import make_demo_pairs
        demo = make_demo_pairs(args.demo, faces=args.demo_faces, size=args.demo_size, variants=args.demo_variants,
                               seed=args.seed)
        pairs, truth, default_out = demo.pairs, demo.truth, osp.join(args.demo, 'labelled.jsonl')
    elif args.pairs:
        pairs = collect.absolute_pairs(read_pairs(args.pairs), osp.dirname(osp.abspath(args.pairs)))
        default_out = osp.join(osp.dirname(osp.abspath(args.pairs)), 'labelled.jsonl')
    else:
        pairs, default_out = collect.pairs_from_folder(args.images), osp.join(args.images, 'labelled.jsonl')
    if args.human_labels:
        human = collect.absolute_pairs(read_pairs(args.human_labels), osp.dirname(osp.abspath(args.human_labels)))
        pairs, matched = collect.merge_human_labels(pairs, human)
        print(f'human labels: {matched} matched pairs, {sum(p.is_human for p in pairs) - matched} added')
    return pairs, args.out or default_out, truth


def svm_options(args: argparse.Namespace) -> SVMOptions:
    held_out = args.held_out if args.held_out is not None else (0.25 if args.demo else 0.1)
    return SVMOptions(kernel=args.kernel, C=[float(c) for c in args.C.split(',')],
                      gamma=_numbers_or_words(args.gamma), cv_folds=args.cv_folds, held_out_fraction=held_out,
                      seed=args.seed, confidence=args.confidence)


def run(args: argparse.Namespace) -> dict:
    weights = dict(item.split('=', 1) for item in args.metric_weights)
    face = quality.FaceModelOptions(args.face_backend, args.face_box or ('full' if args.demo else 'detect'),
                                    args.face_weights_dir)
    metrics = quality.build_metrics(args.metrics, weights, face)
    pairs, out, truth = load_pairs(args)
    stem = osp.splitext(out)[0]
    with MetricCache(args.cache or stem + '.metrics.sqlite') as cache:
        result = annotate_pairs(pairs, metrics, cache, options=svm_options(args), soft_labels=args.soft_labels,
                                min_confidence=args.min_confidence, progress=not args.no_progress)
        print(f'metric values: {cache.misses} computed, {cache.hits} from the cache')
    write_pairs(out, collect.relative_pairs(result.pairs, osp.dirname(osp.abspath(out))))
    summary = result.summary()
    if truth is not None:
        from drward.annotate.demo import svm_label_accuracy
        summary['demo_svm_label_accuracy'] = svm_label_accuracy(result.pairs, truth)
        summary['summary_lines'].append(f'demo: SVM labels match the known rule on '
                                        f'{summary["demo_svm_label_accuracy"]:.1%} of the pairs it labelled')
    with open(stem + '.report.json', 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    print('\n'.join(summary['summary_lines']))
    print(f'wrote {len(result.pairs)} pairs ({result.n_svm_labelled} labelled by the SVM, '
          f'{result.n_dropped_low_confidence} dropped) to {out}; report: {stem}.report.json')
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (MissingWeightsError, OptionError, ImportError) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
