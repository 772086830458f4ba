"""Every image reader of drward against hostile files (issue 32 §4): one table of what each did.

A folder holds the astronaut (a real 512² photo with a face), a decompression bomb (0.57 MB PNG declaring
24,000² pixels), a truncated JPEG and a text file named .png. Each reader is run on it as a user would:

* ``tools/restore.py -i folder --tiny`` and ``tools/make_lmdb.py``, ``tools/make_candidates.py --tiny`` as
  subprocesses (wall time, peak RSS of the process; restore.py also on the astronaut alone, for the RSS baseline);
* ``FaceDegradationDataset`` (every item read) and the page's upload check (``prepare_uploads``) in this process;
* the header check alone on the bomb (median time of 20 calls).

    python benchmarks/hostile_readers.py [--skip-tools]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.lib.hostile_files import astronaut_jpeg, bomb_png, not_an_image, truncated_jpeg  # noqa: E402
from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402

HOSTILE = ('bomb.png', 'truncated.jpg', 'notes.png')


def hostile_folder(path: str, with_hostile: bool = True) -> str:
    os.makedirs(path, exist_ok=True)
    files = {'astronaut.jpg': astronaut_jpeg()}
    if with_hostile:
        files.update({'bomb.png': bomb_png(), 'truncated.jpg': truncated_jpeg(), 'notes.png': not_an_image()})
    for name, data in files.items():
        with open(osp.join(path, name), 'wb') as handle:
            handle.write(data)
    return path


def run_tool(args: List[str]) -> Tuple[int, float, float, str]:
    """``(exit status, wall s, peak RSS MB of this child, output)``: each call in its own helper process so that
    ``RUSAGE_CHILDREN`` holds this tool's peak only."""
    probe = ('import resource, subprocess, sys, time; t = time.time(); '
             'p = subprocess.run(sys.argv[1:], capture_output=True, text=True); '
             'print(p.returncode, time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); '
             'print(p.stdout + p.stderr)')
    env = {**os.environ, 'PYTHONPATH': ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')}
    out = subprocess.run([sys.executable, '-c', probe, sys.executable] + args, capture_output=True, text=True,
                         env=env).stdout
    head, _, rest = out.partition('\n')
    code, wall, rss = head.split()
    return int(code), float(wall), float(rss), rest


def said(output: str, name: str) -> str:
    lines = [line.strip() for line in output.splitlines() if name in line]
    return ' '.join(lines[-1].split())[:140] if lines else '(not named)'


def tool_rows(work: str) -> List[Tuple[str, str, str]]:
    folder, alone = hostile_folder(osp.join(work, 'in')), hostile_folder(osp.join(work, 'alone'), False)
    rows = []
    code0, wall0, rss0, _ = run_tool([osp.join(ROOT, 'tools', 'restore.py'), '-i', alone, '-o',
                                      osp.join(work, 'out0'), '--tiny', '--no-progress', '--steps', '2'])
    code, wall, rss, out = run_tool([osp.join(ROOT, 'tools', 'restore.py'), '-i', folder, '-o',
                                     osp.join(work, 'out1'), '--tiny', '--no-progress', '--steps', '2'])
    restored = sorted(os.listdir(osp.join(work, 'out1', 'restored_imgs')))
    rows.append(('tools/restore.py --tiny', f'exit {code}, {wall:.0f} s, peak RSS {rss:.0f} MB (astronaut alone: '
                 f'{rss0:.0f} MB, {wall0:.0f} s); restored_imgs: {", ".join(restored)}',
                 '; '.join(f'{n}: {said(out, n)}' for n in HOSTILE)))
    code, wall, rss, out = run_tool([osp.join(ROOT, 'tools', 'make_lmdb.py'), '--images', folder, '--out',
                                     osp.join(work, 'faces.lmdb')])
    rows.append(('tools/make_lmdb.py', f'exit {code}, {wall:.0f} s, peak RSS {rss:.0f} MB; {said(out, "built")}; '
                 f'kept {kept_names(osp.join(work, "faces.lmdb", "meta_info.txt"))}',
                 '; '.join(f'{n}: {said(out, n)}' for n in HOSTILE)))
    code, wall, rss, out = run_tool([osp.join(ROOT, 'tools', 'make_candidates.py'), '-i', folder, '-o',
                                     osp.join(work, 'task'), '--tiny', '--steps', '2', '--no-progress'])
    rows.append(('tools/make_candidates.py --tiny', f'exit {code}, {wall:.0f} s, peak RSS {rss:.0f} MB; '
                 f'{said(out, "faces:")}; kept {kept_names(osp.join(work, "task", "pairs.jsonl"))}',
                 '; '.join(f'{n}: {said(out, n)}' for n in HOSTILE)))
    return rows


def kept_names(listing: str) -> str:
    """Which of the folder's images a tool's own listing (the LMDB's ``meta_info.txt``, the task's
    ``pairs.jsonl``) names: the good photo should be there, no hostile file."""
    try:
        with open(listing, encoding='utf-8', errors='replace') as handle:
            text = handle.read()
    except OSError:
        return '(nothing listed)'
    return ', '.join(n for n in ('astronaut', *(osp.splitext(h)[0] for h in HOSTILE)) if n in text) or '(none)'


def in_process_rows(work: str) -> List[Tuple[str, str, str]]:
    from drward.data.face_degradation_dataset import FaceDegradationDataset
    from drward.inference.page import PageLimits, prepare_uploads
    from drward.utils.image_header import UnsafeImageError, check_image_bytes
    folder = hostile_folder(osp.join(work, 'in_process'))
    bomb = bomb_png()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        try:
            check_image_bytes(bomb, 'bomb.png')
        except UnsafeImageError as error:
            message = str(error)
        times.append(time.perf_counter() - start)
    rows = [('header check alone (drward/utils/image_header.py)', f'{statistics.median(times) * 1e3:.2f} ms per '
             f'bomb, max RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB',
             message[:140])]
    start = time.perf_counter()
    dataset = FaceDegradationDataset({'name': 'x', 'type': 'FaceDegradationDataset', 'phase': 'val',
                                      'dataroot_gt': folder, 'gt_size': 64, 'seed': 0, 'max_bad_fraction': 1.0})
    names = sorted({osp.basename(dataset[i]['gt_path']) for i in range(len(dataset))})
    rows.append(('FaceDegradationDataset (PreferencePairDataset reads through the same ImageSource.read)',
                 f'{len(dataset)} items read in {time.perf_counter() - start:.1f} s, all served by {names}',
                 '; '.join(f'{name}: {reason.split(": ", 1)[-1][:60]}' for name, reason in
                           ((osp.basename(p), r) for p, r in dataset.guard.bad.items()))))
    kept, notes = prepare_uploads([osp.join(folder, n) for n in sorted(os.listdir(folder))],
                                  osp.join(work, 'uploads'), PageLimits())
    rows.append(('the page: prepare_uploads (drward/inference/page.py)',
                 f'kept {[osp.basename(k) for k in kept]}', '; '.join(n[:90] for n in notes)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--skip-tools', action='store_true', help='only the in-process readers (seconds)')
    add_smoke_flag(parser, 'the in-process readers only', skip_tools=True)
    args = apply_smoke(parser.parse_args(argv))
    print_rows(readers(args.skip_tools))
    return 0


def readers(skip_tools: bool = False) -> List[Tuple[str, str, str]]:
    """``(reader, what it did, what it said)`` for every reader (the in-process ones only with ``skip_tools``)."""
    work = tempfile.mkdtemp(prefix='drward_hostile_')
    try:
        return in_process_rows(work) + ([] if skip_tools else tool_rows(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_rows(rows: List[Tuple[str, str, str]]) -> None:
    print('| reader | what it did | what it said about bomb.png; truncated.jpg; notes.png |\n|---|---|---|')
    for reader, did, said_ in rows:
        print(f'| {reader} | {did} | {said_.replace("|", "/")} |')


if __name__ == '__main__':
    sys.exit(main())
