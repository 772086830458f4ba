"""Label preference pairs by hand in the browser: the human half of FRM training data (docs/labelling.md).

    python tools/label_pairs.py --pairs TASK/pairs.jsonl --out TASK/human.jsonl --annotator ana
    python tools/label_pairs.py --demo experiments/label_demo --port 7860          # a tiny task, then serve it
    python tools/label_pairs.py --pairs TASK/pairs.jsonl --order uncertainty --refit-every 20   # SVM picks
    python tools/label_pairs.py --report TASK/human.jsonl          # per annotator: kappa, position bias, time, SVM

Every decision is one line appended to --out (fsync'ed): `label` 1 / 0 / 0.5 = P(the file's image_a preferred),
`source: "human"`, plus annotator, shown_left, seconds and time; skips and undos are lines too and never count as
labels. `tools/annotate.py --human-labels OUT` reads the labels in effect. The logic is in drward/annotate/
(label_log.py, label_store.py, label_page.py, active.py, label_report.py, label_studio.py).
"""
import argparse
import getpass
import os
import os.path as osp
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.annotate.label_store import ORDERS  # noqa: E402
from drward.utils.options import OptionError  # noqa: E402
from drward.utils.page_launch import add_launch_arguments  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--pairs', help='pairs file (JSONL) of the task, e.g. TASK/pairs.jsonl')
    source.add_argument('--demo', metavar='DIR', help='make the annotate demo task in DIR (unlabelled) and serve it')
    parser.add_argument('--out', help='label log to append to [<pairs folder>/human.jsonl]')
    parser.add_argument('--annotator', default=None, help='default annotator name on the page [$USER]')
    parser.add_argument('--require-annotator', action='store_true',
                        help='start with an empty Annotator box: each person types a name (or opens ?annotator=NAME)')
    parser.add_argument('--order', default='random', choices=ORDERS, help='which pair next [random]')
    parser.add_argument('--overlap', type=float, default=0.1, help='share of pairs every annotator labels [0.1]')
    parser.add_argument('--seed', type=int, default=0, help='seed of the order, the overlap and the sides [0]')
    parser.add_argument('--refit-every', type=int, default=20, help='uncertainty: refit the SVM every N labels [20]')
    parser.add_argument('--metrics', default='no_face',
                        help='uncertainty and --report: metric preset of the SVM (report: none = no SVM) [no_face]')
    add_launch_arguments(parser)  # --host, --port, --auth: the same on both pages
    tasks = parser.add_argument_group('instead of serving')
    tasks.add_argument('--report', metavar='HUMAN_JSONL', help='print the report of a label log and exit')
    tasks.add_argument('--export-label-studio', metavar='TASKS_JSON', help='write Label Studio tasks + config')
    tasks.add_argument('--import-label-studio', metavar='EXPORT_JSON', help='append a Label Studio export to --out')
    return parser.parse_args(argv)


def task_pairs(args: argparse.Namespace) -> tuple:
    """``(pairs with absolute paths, out file)`` of the task."""
    from drward.annotate.collect import absolute_pairs
    from drward.data.pairs_file import read_pairs
    if args.demo:
        from drward.annotate.demo import make_demo_pairs
        demo = make_demo_pairs(args.demo, faces=12, size=256, variants=6, human_fraction=0.0, seed=args.seed)
        return demo.pairs, args.out or osp.join(args.demo, 'human.jsonl')
    if not args.pairs:
        raise OptionError('give --pairs TASK/pairs.jsonl or --demo DIR')
    folder = osp.dirname(osp.abspath(args.pairs))
    return absolute_pairs(read_pairs(args.pairs), folder), args.out or osp.join(folder, 'human.jsonl')


def label_log_path(args: argparse.Namespace):
    """The label log the task appends to (None when neither --pairs nor --demo is given)."""
    if args.out or args.demo:
        return args.out or osp.join(args.demo, 'human.jsonl')
    return osp.join(osp.dirname(osp.abspath(args.pairs)), 'human.jsonl') if args.pairs else None


def build_store(args: argparse.Namespace, pairs, out: str):
    from drward.annotate.label_store import LabelStore
    ranker = on_label = None
    if args.order == 'uncertainty':
        from drward.annotate.active import UncertaintyRanker
        from drward.annotate.quality import build_metrics
        ranker = UncertaintyRanker(pairs, build_metrics(args.metrics), osp.splitext(out)[0] + '.metrics.sqlite',
                                   refit_every=args.refit_every, seed=args.seed)
        on_label = ranker.on_label
    store = LabelStore(pairs, out, order=args.order, overlap=args.overlap, seed=args.seed, ranker=ranker,
                       on_label=on_label)
    if ranker is not None:
        ranker.start(store)
    return store


def serve(args: argparse.Namespace) -> int:
    from drward.annotate.label_page import build_page, launch_page, parse_auth, report_malformed
    pairs, out = task_pairs(args)
    store = build_store(args, pairs, out)
    report_malformed(store)
    annotator = args.annotator or os.environ.get('USER') or getpass.getuser() or 'annotator'
    mine, everyone, total = store.progress(annotator)
    print(f'{total} pairs, {everyone} labelled so far ({mine} by {annotator}); decisions go to {store.out_path}')
    page = build_page(store, annotator, require_name=args.require_annotator)
    launch_page(page, store, args.host, args.port, parse_auth(args.auth), prevent_thread_lock=True)
    print(f'labelling page: http://{args.host}:{args.port}/  (Ctrl+C to stop; every decision the page '
          'answered "recorded" is already on disk)',
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        page.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.report:
            from drward.annotate.label_report import print_report
            return print_report(args.report, None if args.metrics == 'none' else args.metrics)
        if args.export_label_studio:
            from drward.annotate.label_studio import export_tasks
            pairs, _ = task_pairs(args)
            print(export_tasks(pairs, args.export_label_studio))
            return 0
        if args.import_label_studio:
            from drward.annotate.label_studio import import_export
            from drward.utils.storage_faults import check_appendable
            if label_log_path(args) is not None:
                check_appendable(label_log_path(args), 'label_pairs.py')
            pairs, out = task_pairs(args)
            print(import_export(args.import_label_studio, pairs, out))
            return 0
        out = label_log_path(args)
        if out is not None:  # before any work: a label log that cannot be written fails here, not at a click
            from drward.utils.storage_faults import check_appendable, check_writable
            check_appendable(out, 'label_pairs.py')
            if args.demo:
                check_writable([args.demo], 'label_pairs.py')
        return serve(args)
    except (OptionError, ValueError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
