"""The labelling page under load, with a kill -9 in the middle (docs/labelling.md, "Under load").

    python benchmarks/label_load.py              # 4 browser contexts + 12 gradio_client annotators, 20 pairs each
    python benchmarks/label_load.py --smoke      # 1 browser + 3 HTTP annotators, 4 pairs each (the test's run)
    python benchmarks/label_load.py --browsers 0 --http 16 --out label_load.md

It serves a task of tiny images with ``tools/label_pairs.py`` (no overlap: each pair is one annotator's), starts
the annotators at once — real Chromium contexts (Playwright, the system's browser) and HTTP clients
(``gradio_client``, each its own session) — each deciding ``--pairs`` pairs with undo and skip mixed in
(:func:`benchmarks.lib.label_load_clients.plan_actions`), and SIGKILLs the server once ``--kill-at`` of the planned
actions have been answered (or earlier, once an annotator has only two actions left, so that everyone has work left
for the relaunched server), relaunches it on the same port and lets everyone carry on. Then it checks the log:

* **nothing acknowledged lost**: every answer "Recorded" is a line of the log (annotator, pair, event);
* **nothing extra**: a line nobody saw acknowledged belongs to a request in flight at the kill;
* **no duplicates**: no annotator has two decisions in effect on one pair, no pair has labels from two annotators;
* **no pair twice**: no annotator decided a pair it had already decided (undoing it first is the one way);
* **every line valid**, and every annotator recorded decisions after the relaunch (the page resumed).

The server runs in a child forked from a single-threaded launcher made at start (so a relaunch costs no second
import of torch and Gradio); the kill hits the server only. It prints a table (labels/s, p50 / p95 of click →
answer) and exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import multiprocessing
import os
import os.path as osp
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Dict, List

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tests'))  # browser_helpers: the system Chromium

from benchmarks.lib.label_load_clients import EVENT_OF, Annotator, BrowserAnnotator, ServerWatch, plan_actions, run_http  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--browsers', type=int, default=4, help='annotators in Chromium contexts [4]')
    parser.add_argument('--http', type=int, default=12, help='annotators through gradio_client [12]')
    parser.add_argument('--pairs', type=int, default=20, help='pairs each annotator decides [20]')
    parser.add_argument('--kill-at', type=float, default=0.4,
                        help='kill -9 after this share of answers (or once an annotator has 2 actions left); 0: none')
    parser.add_argument('--port', type=int, default=7640)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workdir', help='task and log folder [a temporary one]')
    parser.add_argument('--out', help='also write the table (Markdown) here')
    parser.add_argument('--deadline-s', type=float, default=1200, help='give up (and fail) after this long [1200]')
    parser.add_argument('--smoke', action='store_true', help='1 browser + 3 HTTP annotators x 4 pairs')
    args = parser.parse_args(argv)
    if args.smoke:
        args.browsers, args.http, args.pairs = min(args.browsers, 1), min(args.http, 3), min(args.pairs, 4)
    return args


def make_task(folder: str, annotators: int, pairs: int, seed: int) -> str:
    """Tiny textured PNGs and every pair of them (enough for everyone, with room): the pairs file's path."""
    import cv2
    import numpy as np
    count = 4
    while count * (count - 1) // 2 < 1.5 * annotators * (pairs + 2):
        count += 1
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        path = osp.join(folder, 'images', f'face_{i:03d}.png')
        os.makedirs(osp.dirname(path), exist_ok=True)
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        cv2.imwrite(path, cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC).astype(np.uint8))
        images.append(path)
    pairs_file = osp.join(folder, 'pairs.jsonl')
    with open(pairs_file, 'w') as f:
        for a, b in itertools.combinations(images, 2):
            f.write(json.dumps({'image_a': a, 'image_b': b, 'caption': 'a face'}) + '\n')
    return pairs_file


# -- the server: forked from a single-threaded launcher -------------------------------------------------------------
def _launcher(conn) -> None:
    """Fork one server per request (tools/label_pairs.py's main with the argv sent); send back its pid."""
    import importlib.util
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed servers are reaped by the kernel
    spec = importlib.util.spec_from_file_location('label_pairs_tool', osp.join(ROOT, 'tools', 'label_pairs.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    import drward.annotate.label_page  # noqa: F401  (Gradio imported once, here)
    while True:
        argv, log = conn.recv()
        if argv is None:
            return
        pid = os.fork()
        if pid == 0:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os._exit(tool.main(argv) or 0)
        conn.send(pid)


class Server:
    def __init__(self, argv: List[str], port: int, log: str) -> None:
        self.argv, self.url, self.log, self.pid = argv, f'http://127.0.0.1:{port}/', log, None
        self.watch = ServerWatch()
        self._conn, child = multiprocessing.Pipe()
        self._launcher = multiprocessing.get_context('fork').Process(target=_launcher, args=(child,), daemon=True)
        self._launcher.start()

    def start(self) -> float:
        """Launch (or relaunch) and wait until it answers; seconds it took."""
        from browser_helpers import wait_for_http
        started = time.monotonic()
        self._conn.send((self.argv, self.log))
        self.pid = self._conn.recv()
        wait_for_http(self.url, timeout_s=120)
        self.watch.up.set()
        return time.monotonic() - started

    def kill9(self) -> None:
        self.watch.up.clear()
        self.watch.generation += 1
        os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._conn.send((None, None))
        self._launcher.join(timeout=10)


# -- the checks -----------------------------------------------------------------------------------------------------
def check_log(out: str, pairs_file: str, annotators: List[Annotator]) -> Dict[str, int]:
    """Compare the log with what the page acknowledged (see the module docstring); counts of each failure."""
    from drward.annotate.collect import absolute_pairs
    from drward.annotate.label_log import read_label_log, replay
    from drward.data.pairs_file import read_pairs
    task = [(p.image_a, p.image_b) for p in read_pairs(pairs_file)]
    index = {key: i for i, key in enumerate(task)}
    decisions, malformed = read_label_log(out)
    logged = Counter()
    for d in decisions:
        pair = absolute_pairs([d.pair], osp.dirname(osp.abspath(out)))[0]
        logged[(d.annotator, index[(pair.image_a, pair.image_b)], d.event)] += 1
    acked, in_flight = Counter(), set()
    for a in annotators:
        acked.update((a.name, pair, EVENT_OF[action]) for pair, action in a.recorded)
        # a request with no answer: its line may be there; an undo's line names the pair it undid
        in_flight.update((a.name, None if action == 'undo' else pair, EVENT_OF[action]) for pair, action in a.failed)
    lost = sum((acked - logged).values())
    unexplained = sum(n for (name, pair, event), n in (logged - acked).items()
                      if (name, None if event == 'undo' else pair, event) not in in_flight)
    in_effect = {k: s for k, s in replay(decisions).items() if s}
    stacked = sum(len(s) > 1 for s in in_effect.values())
    labelled_by = Counter(key for (_, key), s in in_effect.items() if s[-1].event == 'label')
    return {'acknowledged lost': lost, 'logged, never acknowledged, not in flight': unexplained,
            'duplicate decisions in effect': stacked,
            'pairs labelled by two annotators': sum(n > 1 for n in labelled_by.values()),
            'pairs decided twice by one annotator': sum(redecided(a) for a in annotators),
            'invalid log lines': len(malformed),
            'annotators with an error': sum(a.error is not None for a in annotators),
            'annotators not resumed after the kill': 0}


def redecided(annotator: Annotator) -> int:
    """Decisions the page let ``annotator`` make on a pair it had already decided (an undo of it in between is
    the one way to decide a pair again)."""
    decided, again = set(), 0
    for pair, action in annotator.recorded:
        if action == 'undo':
            decided.discard(pair)
        else:
            again += pair in decided
            decided.add(pair)
    return again


def kill_due(kill_at: float, answers: int, planned: int, annotator: Annotator) -> bool:
    """Whether the answer just given to ``annotator`` is the moment of the kill: ``kill_at`` of the planned answers,
    or earlier when ``annotator`` has only 2 actions left. Every annotator then has one action (maybe in flight,
    lost) and one more for the relaunched server, so "resumed" holds for everyone: an annotator that ran ahead (it
    connected while the others were still connecting) used to finish its plan before the kill, never talk to the
    relaunched server, and count as not resumed (a plan never ends with an undo, so that last action records)."""
    return bool(kill_at) and (answers >= kill_at * planned or annotator.left() <= 2)


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float('nan')


def run(args: argparse.Namespace, browser=None) -> dict:
    """The whole benchmark; ``browser``: a launched Playwright Chromium (else one is launched if browsers > 0)."""
    workdir = args.workdir or tempfile.mkdtemp(prefix='label_load_')
    n = args.browsers + args.http
    pairs_file = make_task(workdir, n, args.pairs, args.seed)
    out = osp.join(workdir, 'human.jsonl')
    argv = ['--pairs', pairs_file, '--out', out, '--port', str(args.port), '--overlap', '0', '--order', 'random',
            '--seed', str(args.seed), '--annotator', 'seed']
    server = Server(argv, args.port, osp.join(workdir, 'server.log'))
    annotators = [Annotator(f'{kind}{i}', plan_actions(args.pairs, args.seed * 1000 + k))
                  for k, (kind, i) in enumerate([('browser', i) for i in range(args.browsers)]
                                                + [('http', i) for i in range(args.http)])]
    planned = sum(len(a.plan) for a in annotators)
    answers, lock, kills, restart_s = [0], threading.Lock(), [], []

    def on_ack(annotator: Annotator) -> None:
        with lock:
            answers[0] += 1
            if not kills and kill_due(args.kill_at, answers[0], planned, annotator):
                kills.append(time.monotonic())
                for each in annotators:
                    each.left_at_kill = each.left()
                server.kill9()
                threading.Thread(target=lambda: restart_s.append(server.start()), daemon=True).start()

    playwright = None
    try:
        server.start()
        if args.browsers and browser is None:
            from browser_helpers import chromium_executable
            from playwright.sync_api import sync_playwright
            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=chromium_executable(), args=['--no-sandbox'])
        drivers = [BrowserAnnotator(browser, server.url, a) for a in annotators[:args.browsers]]
        started = time.monotonic()
        threads = [threading.Thread(target=run_http, args=(a, server.url, server.watch, on_ack), daemon=True)
                   for a in annotators[args.browsers:]]
        for thread in threads:
            thread.start()
        while not all(d.done for d in drivers):
            if time.monotonic() - started > args.deadline_s:
                raise TimeoutError(f'the browser annotators did not finish within {args.deadline_s:.0f} s')
            for driver in drivers:
                driver.poll(server.watch, on_ack)
            time.sleep(0.02)
        for thread in threads:
            thread.join(timeout=max(1.0, args.deadline_s - (time.monotonic() - started)))
            if thread.is_alive():
                raise TimeoutError(f'the HTTP annotators did not finish within {args.deadline_s:.0f} s')
        wall = time.monotonic() - started
        for driver in drivers:
            driver.close()
    finally:
        server.stop()
        if playwright is not None:
            browser.close()
            playwright.stop()
    checks = check_log(out, pairs_file, annotators)
    if kills:
        checks['annotators not resumed after the kill'] = sum(a.recorded_after_restart == 0 for a in annotators)
    not_resumed = [f'{a.name}: not resumed after the kill ({a.left_at_kill} of {len(a.plan)} actions left at the '
                   f'kill; after it: {a.plan[len(a.plan) - (a.left_at_kill or 0):]})'
                   for a in annotators if kills and a.recorded_after_restart == 0]
    latencies = [s for a in annotators for s in a.latencies]
    recorded = sum(len(a.recorded) for a in annotators)
    return {'annotators': n, 'browsers': args.browsers, 'http': args.http, 'pairs': args.pairs,
            'planned': planned, 'recorded': recorded, 'not recorded': sum(len(a.not_recorded) for a in annotators),
            'failed in flight': sum(len(a.failed) for a in annotators), 'kills': len(kills),
            'restart s': restart_s[0] if restart_s else None, 'wall s': wall, 'labels/s': recorded / wall,
            'p50 s': percentile(latencies, 0.5), 'p95 s': percentile(latencies, 0.95), 'checks': checks,
            'errors': [f'{a.name}: {a.error}' for a in annotators if a.error] + not_resumed, 'workdir': workdir}


def table(result: dict) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    restart = f"{result['restart s']:.1f}" if result['restart s'] is not None else '-'
    rows = ['| annotators (browser + HTTP) | pairs each | clicks answered (recorded / not recorded) | in flight at '
            'kill | kills | relaunch s | recorded/s | p50 s | p95 s |',
            '|---|---|---|---|---|---|---|---|---|',
            f"| {result['annotators']} ({result['browsers']} + {result['http']}) | {result['pairs']} | "
            f"{result['recorded'] + result['not recorded']} ({result['recorded']} / {result['not recorded']}) | "
            f"{result['failed in flight']} | {result['kills']} | {restart} | {result['labels/s']:.1f} | "
            f"{result['p50 s']:.2f} | {result['p95 s']:.2f} |", '', '| check | count |', '|---|---|']
    rows += [f'| {name} | {count} |' for name, count in result['checks'].items()]
    import torch
    cpu += f' ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores'
    return '\n'.join(rows + ['', f'CPU: {cpu}; wall {result["wall s"]:.0f} s'])


def main(argv=None) -> int:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(args.deadline_s + 120, exit=True)  # a hang shows where, then exits
    result = run(args)
    text = table(result)
    print(text)
    for error in result['errors']:
        print(error, file=sys.stderr)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    failed = {name: count for name, count in result['checks'].items() if count}
    if failed:
        print(f'FAILED: {failed} (log and server output in {result["workdir"]})', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
