"""The restoration page under load (issue 32 §3), driven over loopback only, bounded in count and time.

Starts ``tools/app.py --tiny`` on 127.0.0.1 (one worker, ``--max-queue Q``) and, through ``gradio_client``:

1. **hostile uploads**: a decompression bomb (0.57 MB PNG declaring 24,000²), a truncated JPEG, a text file named
   .png, a photo without a face and an upload over ``--max-file-mb``; each must get a message, and a good photo sent
   right after each must still be restored (the server keeps serving). The oversized file is also sent as a raw
   HTTP multipart POST to Gradio's upload route (``/gradio_api/upload``), bypassing gradio_client's own size check:
   it must be refused by the server (HTTP 413, a message naming the limit), leave no file over the limit in the
   server's upload folder, and a good photo must still be restored after it;
2. **concurrency**: ``--concurrent`` clients send one photo each at the same moment; each must be answered
   (``Restored …``) or told at once that the page is busy (Gradio's "Queue is full", HTTP 503) within the stated
   bound ``(Q + 2) × the measured time of one request × 2 + 30 s``;
3. **memory**: ``--sequential`` requests one after another; the server's RSS (``/proc/<pid>/status``) after the
   first tenth and after the last tenth (medians) must differ by less than ``--rss-slack-mb``.

    python benchmarks/page_load.py                 # 24 concurrent, 100 sequential (minutes on 2 CPU cores)
    python benchmarks/page_load.py --smoke         # 4 concurrent with --max-queue 1, 6 sequential (the test)

Exit status 0 when every check holds; a markdown table of the figures either way.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import os
import os.path as osp
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.lib.hostile_files import astronaut_jpeg, bomb_png, no_face_png, not_an_image, truncated_jpeg  # noqa: E402

BUSY_WORDS = ('queue is full', 'busy')


def rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status', encoding='utf-8') as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def start_server(port: int, max_queue: int, max_file_mb: float, steps: int, log_path: str,
                 timeout_s: float = 600) -> subprocess.Popen:
    """``tools/app.py --tiny`` on 127.0.0.1:``port``; returns once it answers HTTP (or raises with the log's tail)."""
    command = [sys.executable, osp.join(ROOT, 'tools', 'app.py'), '--tiny', '--port', str(port), '--steps', str(steps),
               '--max-queue', str(max_queue), '--max-file-mb', f'{max_file_mb:g}', '--device', 'cpu']
    log = open(log_path, 'w')
    env = {**os.environ, 'PYTHONPATH': ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
           'GRADIO_TEMP_DIR': upload_folder(log_path)}  # where Gradio keeps uploads: looked at after the raw upload
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            break
        try:
            urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=5).read(1)
            return server
        except OSError:
            time.sleep(1)
    stop_server(server)
    with open(log_path, encoding='utf-8', errors='replace') as handle:
        tail = handle.read()[-2000:]
    raise RuntimeError(f'the page did not start on port {port} within {timeout_s:.0f} s:\n{tail}')


def upload_folder(log_path: str) -> str:
    """The server's Gradio upload folder (``GRADIO_TEMP_DIR``), next to its log."""
    return osp.join(osp.dirname(log_path), 'gradio_uploads')


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def client(port: int):
    from gradio_client import Client
    return Client(f'http://127.0.0.1:{port}/', verbose=False, httpx_kwargs={'timeout': 600})


def ask(api, path: str, steps: int) -> Tuple[str, str, float]:
    """``(outcome, message, seconds)``: outcome ``restored`` / ``message`` (answered without a restoration) /
    ``busy`` (told the queue is full) / ``error`` (anything else: a failure of the check)."""
    from gradio_client import handle_file
    start = time.perf_counter()
    try:
        message = str(api.predict([handle_file(path)], False, steps, 0, api_name='/run')[0])
    except Exception as error:  # noqa: BLE001  (the client's error is the outcome being measured)
        text = f'{type(error).__name__}: {error}'.splitlines()[0]
        busy = any(word in text.lower() for word in BUSY_WORDS)
        return ('busy' if busy else 'error'), text, time.perf_counter() - start
    outcome = 'restored' if re.match(r'Restored [1-9]', message) else 'message'  # 'Restored 0 of 1': a message
    return outcome, message, time.perf_counter() - start


def write_inputs(folder: str, max_file_mb: float) -> Dict[str, str]:
    files = {'photo.jpg': astronaut_jpeg(), 'bomb.png': bomb_png(), 'truncated.jpg': truncated_jpeg(),
             'not_an_image.png': not_an_image(), 'no_face.png': no_face_png(),
             'oversized.jpg': astronaut_jpeg() + os.urandom(int((max_file_mb + 0.5) * 2 ** 20))}
    paths = {}
    for name, data in files.items():
        paths[name] = osp.join(folder, name)
        with open(paths[name], 'wb') as handle:
            handle.write(data)
    return paths


def hostile_round(api, paths: Dict[str, str], steps: int) -> List[Tuple[str, str, str, bool]]:
    """``(file, outcome, message, the next good photo restored)`` for each hostile upload."""
    rows = []
    for name in ('bomb.png', 'truncated.jpg', 'not_an_image.png', 'no_face.png', 'oversized.jpg'):
        outcome, message, _ = ask(api, paths[name], steps)
        after = ask(api, paths['photo.jpg'], steps)[0] == 'restored'
        notes = ' '.join(line[2:] for line in message.splitlines() if line.startswith('- ')) or message
        rows.append((name, outcome, ' '.join(notes.split())[:150], after))  # the page's line about this file
    return rows


def raw_upload(port: int, path: str, max_file_mb: float, folder: str) -> Tuple[str, str, float]:
    """POST ``path`` to Gradio's upload route as a plain multipart form (no gradio_client, so none of its checks):
    ``(outcome, message, seconds)``; outcome ``refused 413`` when the server refused it and kept no file over the
    limit in its upload ``folder``, else what happened."""
    import httpx
    start = time.perf_counter()
    with open(path, 'rb') as handle:
        files = {'files': (osp.basename(path), handle, 'image/jpeg')}
        answer = httpx.post(f'http://127.0.0.1:{port}/gradio_api/upload', files=files, timeout=120)
    kept = [osp.join(top, name) for top, _, names in os.walk(folder) for name in names
            if osp.getsize(osp.join(top, name)) > max_file_mb * 2 ** 20]
    message = (answer.text.strip().splitlines() or [''])[0][:150]
    if answer.status_code == 413 and not kept:
        return 'refused 413', message, time.perf_counter() - start
    return f'HTTP {answer.status_code}, {len(kept)} file(s) over the limit kept', message, time.perf_counter() - start


def concurrent_round(port: int, path: str, steps: int, count: int) -> List[Tuple[str, str, float]]:
    apis = [client(port) for _ in range(count)]  # connected first: the burst is the requests themselves
    with futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda api: ask(api, path, steps), apis))


def sequential_round(api, path: str, steps: int, count: int, pid: int) -> Tuple[List[float], List[float]]:
    rss, seconds = [], []
    for _ in range(count):
        outcome, message, took = ask(api, path, steps)
        if outcome != 'restored':
            raise RuntimeError(f'a sequential request was not restored: {outcome}: {message}')
        seconds.append(took)
        rss.append(rss_mb(pid))
    return rss, seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--smoke', action='store_true', help='4 concurrent (--max-queue 1), 6 sequential')
    parser.add_argument('--port', type=int, default=7651)
    parser.add_argument('--concurrent', type=int, default=24)
    parser.add_argument('--sequential', type=int, default=100)
    parser.add_argument('--max-queue', type=int, default=8)
    parser.add_argument('--max-file-mb', type=float, default=2.0)
    parser.add_argument('--steps', type=int, default=2)
    parser.add_argument('--rss-slack-mb', type=float, default=64.0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrent, args.sequential, args.max_queue = 4, 6, 1
    return args


def measure(args: argparse.Namespace) -> dict:
    """Every round against one server: the keyword arguments of :func:`report`."""
    work = tempfile.mkdtemp(prefix='drward_page_load_')
    paths = write_inputs(work, args.max_file_mb)
    server = start_server(args.port, args.max_queue, args.max_file_mb, args.steps, osp.join(work, 'server.log'))
    try:
        api = client(args.port)
        warm = [ask(api, paths['photo.jpg'], args.steps) for _ in range(2)]
        one = warm[-1][2]
        hostile = hostile_round(api, paths, args.steps)
        outcome, message, _ = raw_upload(args.port, paths['oversized.jpg'], args.max_file_mb,
                                         upload_folder(osp.join(work, 'server.log')))
        hostile.append(('oversized.jpg, raw HTTP upload', outcome, message,
                        ask(api, paths['photo.jpg'], args.steps)[0] == 'restored'))
        bound = (args.max_queue + 2) * one * 2 + 30
        burst = concurrent_round(args.port, paths['photo.jpg'], args.steps, args.concurrent)
        rss, seconds = sequential_round(api, paths['photo.jpg'], args.steps, args.sequential, server.pid)
        alive = server.poll() is None
    finally:
        stop_server(server)
    return dict(one=one, hostile=hostile, burst=burst, bound=bound, rss=rss, seconds=seconds, alive=alive)


def main(argv=None) -> int:
    args = parse_args(argv)
    return report(args, **measure(args))


def hostile_ok(name: str, outcome: str, message: str) -> bool:
    """A page message for each file; the oversized upload may instead be refused by the upload itself (Gradio's
    ``max_file_size``), with an error that says so."""
    if name == 'oversized.jpg' and outcome == 'error':
        return any(word in message.lower() for word in ('size', 'large', 'mb'))
    if name == 'oversized.jpg, raw HTTP upload':  # the server's own limit, without the client's check
        return outcome == 'refused 413' and 'maximum allowed size' in message
    return outcome == 'message' and bool(message)


def report(args, one: float, hostile, burst, bound: float, rss: List[float], seconds: List[float],
           alive: bool) -> int:
    tenth = max(1, len(rss) // 10)
    rss_first, rss_last = statistics.median(rss[:tenth]), statistics.median(rss[-tenth:])
    counts = {k: sum(1 for o, _, _ in burst if o == k) for k in ('restored', 'busy', 'message', 'error')}
    slowest = max(t for _, _, t in burst)
    checks = {
        'every hostile upload got a message': all(hostile_ok(name, o, m) for name, o, m, _ in hostile),
        'a good photo restored after each hostile upload': all(after for *_, after in hostile),
        'every concurrent request answered or told busy': counts['error'] == 0 and counts['message'] == 0,
        f'every concurrent request within {bound:.0f} s': slowest <= bound,
        f'RSS flat within {args.rss_slack_mb:g} MB': abs(rss_last - rss_first) < args.rss_slack_mb,
        'the server still running': alive,
    }
    print(f'\nRestoration page under load (tools/app.py --tiny, {args.steps} DDIM steps, one worker, max queue '
          f'{args.max_queue}); one request alone: {one:.2f} s\n')
    print('| hostile upload | outcome | message | next good photo restored |\n|---|---|---|---|')
    for name, outcome, message, after in hostile:
        print(f'| {name} | {outcome} | {message.replace("|", "/")} | {"yes" if after else "NO"} |')
    print(f'\n| load | figure |\n|---|--:|\n| concurrent requests | {args.concurrent} |')
    print(f'| restored / told busy / other | {counts["restored"]} / {counts["busy"]} / '
          f'{counts["error"] + counts["message"]} |')
    print(f'| slowest answer (s) / stated bound (s) | {slowest:.1f} / {bound:.0f} |')
    print(f'| busy answers, slowest (s) | {max([t for o, _, t in burst if o == "busy"], default=0):.2f} |')
    print(f'| sequential requests | {len(rss)} (median {statistics.median(seconds):.2f} s each) |')
    print(f'| server RSS, first / last tenth (MB) | {rss_first:.0f} / {rss_last:.0f} '
          f'({rss_last - rss_first:+.0f}) |')
    print(f'| server RSS, max (MB) | {max(rss):.0f} |')
    for line, ok in checks.items():
        print(f'{"PASS" if ok else "FAIL"}: {line}')
    for outcome, message, _ in burst:
        if outcome in ('error', 'message'):
            print(f'  concurrent request: {outcome}: {message[:200]}')
    return 0 if all(checks.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
