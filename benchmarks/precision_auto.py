"""Benchmark: what ``weight_dtype: auto`` buys on this machine — bf16 against fp32 against ``auto``, in one process.

Rows (median of ``--repeats`` after one warm-up, seconds of process CPU time unless ``--clock wall``):

* kernels: a 512³ matmul and a 64-channel 3×3 convolution on 64² (issue 30's two figures), an SD-sized 320-channel
  3×3 convolution on a 64² latent and an SD-sized linear layer (1024 tokens, 1280 → 5120);
* **bf16 stored, fp32 compute**: the same two SD-sized layers with their weights stored in bf16 and cast up to fp32
  at every call (what "cast up layer by layer" costs: half the weight memory, one cast per layer per call);
* restorers: the tiny DiffBIR (4 DDIM steps) and the tiny OSEDiff restoring a 64² face with ``weight_dtype`` fp32,
  bf16 and auto.

The CPU is named and the choice ``auto`` made here is printed with its reason.

    python benchmarks/precision_auto.py [--threads 2] [--repeats 3] [--clock cpu|wall] [--skip-restorers]
    python benchmarks/precision_auto.py --skip-kernels --threads 1 --repeats 5   # the restorer rows only

On a contended machine use ``--threads 1`` for the restorer rows: idle OpenMP threads spin and count as CPU time.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, clock: str) -> float:
    now = time.process_time if clock == 'cpu' else time.perf_counter
    fn()
    samples = []
    for _ in range(repeats):
        start = now()
        fn()
        samples.append(now() - start)
    return statistics.median(samples)


def kernel_rows(repeats: int, clock: str) -> Iterator[Tuple[str, float, float, float]]:
    """``(name, fp32 s, bf16 s, bf16-stored-fp32-compute s or nan)``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=g)
    x64 = torch.randn(1, 64, 64, 64, generator=g)
    w64 = torch.randn(64, 64, 3, 3, generator=g)
    x320 = torch.randn(1, 320, 64, 64, generator=g)
    w320 = torch.randn(320, 320, 3, 3, generator=g)
    tokens = torch.randn(1024, 1280, generator=g)
    w_lin = torch.randn(5120, 1280, generator=g)
    with torch.no_grad():
        for name, fn, args in [('matmul 512³', torch.mm, (a, a)),
                               ('conv 64→64 3×3, 64²', lambda x, w: F.conv2d(x, w, padding=1), (x64, w64)),
                               ('conv 320→320 3×3, 64² (SD UNet level 1)', lambda x, w: F.conv2d(x, w, padding=1),
                                (x320, w320)),
                               ('linear 1024×1280 → 5120 (SD feed-forward)', F.linear, (tokens, w_lin))]:
            fp32 = timed(lambda: fn(*args), repeats, clock)
            low = tuple(t.bfloat16() for t in args)
            bf16 = timed(lambda: fn(*low), repeats, clock)
            stored = float('nan')
            if name.startswith(('conv 320', 'linear')):
                weight_bf16 = args[1].bfloat16()
                stored = timed(lambda: fn(args[0], weight_bf16.float()), repeats, clock)
            yield name, fp32, bf16, stored


def restorer_rows(repeats: int, clock: str, steps: int = 4) -> List[Tuple[str, Dict[str, float]]]:
    from drward.archs.diffbir_arch import DiffBIRRestorer
    from drward.archs.osediff_arch import OSEDiffRestorer
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    rows = []
    for name, cls, kw in [(f'tiny DiffBIR, {steps} DDIM steps, 64²', DiffBIRRestorer,
                           dict(num_steps=steps, stop_window=min(2, steps))),
                          ('tiny OSEDiff, 1 step, 64²', OSEDiffRestorer, {})]:
        times = {}
        for dtype in ('fp32', 'bf16', 'auto'):
            net = cls(tiny=True, weight_dtype=dtype, **kw).eval()
            with torch.no_grad():
                times[dtype] = timed(lambda: net.restore(lq, generator=torch.Generator().manual_seed(1)), repeats,
                                     clock)
        rows.append((name, times))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--clock', choices=('cpu', 'wall'), default='cpu')
    parser.add_argument('--skip-restorers', action='store_true')
    parser.add_argument('--skip-kernels', action='store_true')
    parser.add_argument('--steps', type=int, default=4, help='DDIM steps of the tiny DiffBIR')
    add_smoke_flag(parser, 'the tiny restorers once (1 DDIM step), no kernels', repeats=1, skip_kernels=True, steps=1)
    args = apply_smoke(parser.parse_args(argv))
    from drward.utils.precision_check import choose_precision, cpu_model_name
    torch.set_num_threads(args.threads)
    choice = choose_precision('auto', torch.device('cpu'))
    unit = 'CPU s (process)' if args.clock == 'cpu' else 'wall s'
    print(f'{cpu_model_name()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, '
          f'{args.threads} threads, median of {args.repeats}, {unit}')
    print(f'auto chooses {choice.name}: {choice.reason}\n')
    if not args.skip_kernels:
        print('| kernel | fp32 | bf16 | bf16 / fp32 | bf16 stored, fp32 compute | / fp32 |\n|---|--:|--:|--:|--:|--:|')
    for name, fp32, bf16, stored in ([] if args.skip_kernels else kernel_rows(args.repeats, args.clock)):
        extra = '| – | – |' if stored != stored else f'| {stored:.4f} | {stored / fp32:.2f} |'
        print(f'| {name} | {fp32:.4f} | {bf16:.4f} | {bf16 / fp32:.1f} {extra}', flush=True)
    if not args.skip_restorers:
        print('\n| restorer (no grad) | fp32 | bf16 | auto | bf16 / fp32 | auto / fp32 |\n|---|--:|--:|--:|--:|--:|')
        for name, t in restorer_rows(args.repeats, args.clock, args.steps):
            print(f'| {name} | {t["fp32"]:.3f} | {t["bf16"]:.3f} | {t["auto"]:.3f} | {t["bf16"] / t["fp32"]:.1f} | '
                  f'{t["auto"] / t["fp32"]:.2f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
