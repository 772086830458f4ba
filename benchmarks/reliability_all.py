"""Every reliability benchmark in one process tree, and ONE table of their figures (docs/reliability.md).

    python benchmarks/reliability_all.py --out reliability_all.md     # the full runs (about an hour on 2 CPU cores)
    python benchmarks/reliability_all.py --smoke                       # each part's --smoke (minutes)

Each part runs through its own entry point (nothing is copied here), one after another, and a part that fails
becomes a row that says so (the others still run):

* the chaos soak, 1 process and 2 ranks under torchrun (``benchmarks/chaos_soak.py``'s ``main``);
* the storage faults: a full disk during a save, unwritable output folders (``benchmarks/storage_faults.py``);
* the labelling page under load with a kill -9 (``benchmarks/label_load.py``: >= 16 annotators; browser contexts
  when the system Chromium is there, else as many HTTP annotators);
* the restoration page under load and its hostile uploads (``benchmarks/page_load.py``);
* every image reader against hostile files (``benchmarks/hostile_readers.py``).

Each part prints its own table as it ends; then the summary table: faults injected / survived, load held (clients ×
labels, labels/s, p50 / p95) and bad inputs tried with nothing lost. Exit status 1 if any part failed a check.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from typing import Callable, Dict, List

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, osp.join(ROOT, 'tests'))  # browser_helpers, torchrun_helpers
sys.path.insert(0, ROOT)

from benchmarks import chaos_soak, hostile_readers, label_load, page_load, storage_faults  # noqa: E402

Row = Dict[str, object]  # part, tried (faults / load / bad inputs), held, figures, ok
#: The parts, in the order they run (the labelling page first: its server launcher is forked before this process
#: has run anything on a thread pool), and in the table's order (faults, then load, then bad inputs).
PARTS = ('label', 'page', 'hostile', 'storage', 'chaos1', 'chaos2')
TABLE_ORDER = ('chaos1', 'chaos2', 'storage', 'label', 'page', 'hostile')


def chaos(ranks: int, smoke: bool) -> Row:
    result = chaos_soak.main((['--smoke'] if smoke else []) + ['--ranks', str(ranks)])
    faults = result['faults']
    survived = sum(f['resumed_at'] is not None for f in faults) if result['max_abs_diff'] == 0.0 else 0
    lost = [f['lost'] for f in faults if f['lost'] is not None]
    waits = [f['to_resume_s'] for f in faults if 'to_resume_s' in f]
    return {'part': 'chaos soak, 1 process' if ranks == 1 else f'chaos soak, {ranks} ranks (torchrun)',
            'tried': f"{len(faults)} SIGKILLs ({sum('file' in f for f in faults)} mid-write, "
                     f"{sum('torn' in f for f in faults)} torn files)",
            'held': f"{survived} / {len(faults)} survived; final max abs diff {result['max_abs_diff']}",
            'figures': f"iterations lost per fault mean {statistics.mean(lost or [0]):.1f} max {max(lost or [0])}; "
                       f"to resume mean {statistics.mean(waits or [0]):.0f} s max {max(waits or [0]):.0f} s",
            'ok': survived == len(faults)}


def storage(smoke: bool) -> Row:
    result = storage_faults.main(['--smoke'] if smoke else [])
    return {'part': 'storage faults', 'tried': f"{result['faults']} (a full disk during a save; train.py, test.py "
            'and label_pairs.py writing under a regular file)',
            'held': f"{result['survived']} / {result['faults']} survived", 'ok': result['survived'] == result['faults'],
            'figures': 'disk full: one line, exit 74, previous state intact, resumed bit for bit; unwritable: one '
                       'line at start'}


def labelling(smoke: bool, port: int) -> Row:
    from browser_helpers import why_no_browser
    argv = ['--smoke'] if smoke else []
    if why_no_browser():  # no Chromium here: as many annotators, all over HTTP
        argv += ['--browsers', '0', '--http', '4' if smoke else '16']
    args = label_load.parse_args(argv + ['--port', str(port)])
    result = label_load.run(args)
    print(label_load.table(result))
    failed = {name: n for name, n in result['checks'].items() if n}
    return {'part': 'labelling page (kill -9 under load)',
            'tried': f"{result['annotators']} annotators ({result['browsers']} browser + {result['http']} HTTP) × "
                     f"{result['pairs']} pairs, {result['kills']} kill -9",
            'held': f"{result['recorded']} labels recorded, {result['checks']['acknowledged lost']} acknowledged "
                    f"lost, {sum(failed.values())} failed checks{' ' + str(failed) if failed else ''}",
            'figures': f"{result['labels/s']:.1f} labels/s, p50 {result['p50 s']:.2f} s, p95 {result['p95 s']:.2f} s; "
                       f"relaunch {result['restart s'] or 0:.1f} s",
            'ok': not failed and not result['errors']}


def restoration(smoke: bool, port: int) -> List[Row]:
    args = page_load.parse_args((['--smoke'] if smoke else []) + ['--port', str(port)])
    measured = page_load.measure(args)
    code = page_load.report(args, **measured)  # prints the page's own tables
    burst, hostile, rss = measured['burst'], measured['hostile'], measured['rss']
    answered = [t for o, _, t in burst if o in ('restored', 'busy')]
    tenth = max(1, len(rss) // 10)
    drift = statistics.median(rss[-tenth:]) - statistics.median(rss[:tenth])
    good = sum(page_load.hostile_ok(name, o, m) and after for name, o, m, after in hostile)
    return [{'part': 'restoration page (one worker)',
             'tried': f"{args.concurrent} concurrent clients (queue {args.max_queue}), {args.sequential} sequential",
             'held': f"{len(answered)} / {len(burst)} restored or told busy within "
                     f"{measured['bound']:.0f} s; RSS {drift:+.0f} MB over the sequential ones",
             'figures': f"p50 {label_load.percentile(answered, 0.5):.1f} s, p95 "
                        f"{label_load.percentile(answered, 0.95):.1f} s; one request alone {measured['one']:.1f} s",
             'ok': code == 0},
            {'part': 'restoration page, hostile uploads',
             'tried': f'{len(hostile)} ({"; ".join(h[0] for h in hostile)})',
             'held': f'{good} / {len(hostile)} answered with a message, the next good photo restored',
             'figures': 'server kept serving' if measured['alive'] else 'server DIED', 'ok': good == len(hostile)}]


def readers(smoke: bool) -> Row:
    rows = hostile_readers.readers(skip_tools=smoke)
    hostile_readers.print_rows(rows)
    tried = refused = 0
    for n, (_, _, said) in enumerate(rows):
        for name in hostile_readers.HOSTILE[:1] if n == 0 else hostile_readers.HOSTILE:  # row 0: the bomb alone
            tried += 1
            refused += name in said and f'{name}: (not named)' not in said
    kept = sum('astronaut' in did for _, did, _ in rows[1:])  # every reader after the header check served the photo
    return {'part': 'hostile image files', 'tried': f'{tried} bad files through {len(rows)} readers',
            'held': f'{refused} / {tried} refused with a message naming the file; the good photo kept by {kept} / '
                    f'{len(rows) - 1} readers',
            'figures': 'a bomb refused before decoding', 'ok': refused == tried and kept == len(rows) - 1}


def summary(rows: List[Row], wall_s: float, smoke: bool) -> str:
    import torch
    cpu = platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    lines = ['| part | faults injected / load / bad inputs tried | survived / held / nothing lost | figures | ok |',
             '|---|---|---|---|---|']
    for row in rows:
        cells = [str(row[key]).replace('|', '/') for key in ('part', 'tried', 'held', 'figures')]
        lines.append('| ' + ' | '.join(cells) + f" | {'yes' if row['ok'] else 'NO'} |")
    lines.append(f"\n{'--smoke: ' if smoke else ''}CPU {cpu} ({torch.backends.cpu.get_cpu_capability()}), "
                 f"{os.cpu_count()} cores; wall {wall_s / 60:.1f} min")
    return '\n'.join(lines)


def run_parts(parts: Dict[str, Callable[[], object]]) -> Dict[str, List[Row]]:
    """Each part in turn: ``{name: its rows}``; one that raises becomes a failed row (the others still run)."""
    rows: Dict[str, List[Row]] = {}
    for name, part in parts.items():
        print(f'\n## {name}\n', flush=True)
        try:
            got = part()
            rows[name] = got if isinstance(got, list) else [got]
        except (Exception, SystemExit) as error:  # noqa: BLE001  (a part's failure is a row of the table)
            traceback.print_exc()
            rows[name] = [{'part': name, 'tried': '-', 'held': f'FAILED: {type(error).__name__}: {error}'[:200],
                           'figures': '-', 'ok': False}]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--smoke', action='store_true', help="each part's --smoke mode (minutes, not seconds)")
    parser.add_argument('--label-port', type=int, default=7640, help='port of the labelling page [7640]')
    parser.add_argument('--page-port', type=int, default=7651, help='port of the restoration page [7651]')
    parser.add_argument('--only', nargs='+', choices=PARTS, help=f'run these parts only ({", ".join(PARTS)})')
    parser.add_argument('--out', help='also write the summary table (Markdown) here')
    args = parser.parse_args(argv)
    parts = {'label': lambda: labelling(args.smoke, args.label_port),
             'page': lambda: restoration(args.smoke, args.page_port),
             'hostile': lambda: readers(args.smoke),
             'storage': lambda: storage(args.smoke),
             'chaos1': lambda: chaos(1, args.smoke),
             'chaos2': lambda: chaos(2, args.smoke)}
    started = time.time()
    done = run_parts({name: parts[name] for name in PARTS if not args.only or name in args.only})
    rows = [row for name in TABLE_ORDER for row in done.get(name, [])]
    text = summary(rows, time.time() - started, args.smoke)
    print('\n## Reliability, all parts\n\n' + text, flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return 0 if all(row['ok'] for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
