"""The paper's comparison table from several ``tools/test.py`` result folders.

    python tools/compare_runs.py results/test_diffbir results/test_diffbir_ours [--baseline test_diffbir]
        [--out table.md]

One row per method (the folder's name), each metric with its direction (↑/↓), the relative change against the
baseline (default: the first folder), the best value in bold; a metric a run could not measure reads ``n/a`` with
the reason ``tools/test.py`` recorded. Prints the Markdown; ``--out`` writes it and a CSV beside it
(:mod:`drward.metrics.compare`).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.metrics.compare import compare_runs, write_comparison  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='One comparison table from tools/test.py result folders.')
    parser.add_argument('results', nargs='+', help='results/<name>/ folders written by tools/test.py')
    parser.add_argument('--baseline', help='the method the relative changes are against (a folder name; '
                                           'default: the first folder)')
    parser.add_argument('--out', help='write the Markdown here and the CSV beside it (same name, .csv)')
    parser.add_argument('--note', default='', help='a note for each table title (e.g. "tiny random models")')
    args = parser.parse_args(argv)
    try:
        comparisons = compare_runs(args.results, args.baseline)
    except (FileNotFoundError, ValueError) as error:
        print(f'compare_runs: {error}', file=sys.stderr)
        return 2
    print('\n'.join(c.to_markdown(args.note) for c in comparisons))
    if args.out:
        paths = write_comparison(comparisons, args.out, args.note)
        print(f'written: {paths["md"]}, {paths["csv"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
