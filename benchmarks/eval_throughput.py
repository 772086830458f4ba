"""Benchmark: evaluation throughput of a restorer at batch sizes B = 1, 2, 4, 8: faces per second, peak memory, and
how far a batched face is from the same face restored alone.

    python benchmarks/eval_throughput.py                           # tiny random DiffBIR, CPU
    python benchmarks/eval_throughput.py --size sd21 --device cuda # SD 2.1 sizes, random weights, 512² faces, K = 50
    python benchmarks/eval_throughput.py --smoke                   # seconds: the plumbing (tests)

Each B restores the same ``--faces`` faces (random content: it does not change the cost) in batches of B through
:func:`drward.archs.restorer.restore_seeded`, each face seeded by its index (its noise is the same at every B), after
one warm-up batch. Reported per B: seconds per face and faces per second (wall time of all the batches over the
faces), the peak memory (CUDA: ``max_memory_allocated``, reset before the B; CPU: peak RSS above the level before
it, sampled every 5 ms), and the largest difference of any pixel from the B = 1 output on the 8-bit scale.

The last lines predict a CelebA-Test evaluation (3,000 faces, two rows: the base restorer and the ReFL one, so
6,000 restorations) on P processes, from the measured seconds per face of the fastest B: each process restores
``ceil(3000 / P)`` faces per row, so ``T(P) = 2 · ceil(3000 / P) · t_face``; scoring and FID are not included.
"""
from __future__ import annotations

import argparse
import json
import math
import os.path as osp
import sys
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.lib.common import emit_report, markdown_table, memory_probe  # noqa: E402

CELEBA_TEST_FACES = 3000
ROWS = 2  # the paper's table: DiffBIR, then DiffBIR + DiffusionReward
ARCHS = {'diffbir': 'DiffBIRRestorer', 'osediff': 'OSEDiffRestorer'}


@dataclass
class BatchResult:
    batch: int
    faces: int
    seconds_per_face: float
    faces_per_second: float
    peak_mib: float
    max_dn_vs_b1: Optional[int]


def build(args: argparse.Namespace, device: torch.device):
    from basicsr.archs import build_network

    import drward  # noqa: F401  (registers the restorers)
    opt = {'type': ARCHS[args.restorer], **({'tiny': True} if args.size == 'tiny' else {'random_weights': True})}
    if args.restorer == 'diffbir':
        opt['num_steps'] = args.steps
    if args.weight_dtype:
        opt['weight_dtype'] = args.weight_dtype
    return build_network(opt).to(device).eval()


def restore_all(net, faces: torch.Tensor, batch: int, device: torch.device) -> np.ndarray:
    """Every face in batches of ``batch``, face i seeded with i; the 8-bit outputs."""
    from drward.archs.restorer import restore_seeded
    out = []
    for start in range(0, len(faces), batch):
        seeds = list(range(start, min(start + batch, len(faces))))
        lq = faces[start:start + batch].to(device)
        images = restore_seeded(net, lq, None, seeds[0] if len(seeds) == 1 else seeds)
        out.append((images.clamp(0, 1) * 255).round().to(torch.int16).cpu().numpy())
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return np.concatenate(out)


def measure(net, args: argparse.Namespace, device: torch.device) -> List[BatchResult]:
    faces = torch.rand(args.faces, 3, args.face_size, args.face_size, generator=torch.Generator().manual_seed(0))
    probe = memory_probe(device, rss_interval_s=0.005)
    results, reference = [], None
    try:
        for batch in args.batches:
            restore_all(net, faces[:batch], batch, device)  # warm-up (kernels, caches, allocator)
            probe.synchronize()
            level = probe.level()
            probe.take_peak()
            start = time.perf_counter()
            outputs = restore_all(net, faces, batch, device)
            seconds = time.perf_counter() - start
            peak = max(0, probe.take_peak() - (level if device.type != 'cuda' else 0))
            if reference is None and batch == 1:
                reference = outputs
            diff = None if reference is None else int(np.abs(outputs - reference).max())
            results.append(BatchResult(batch, args.faces, seconds / args.faces, args.faces / seconds,
                                       peak / 2 ** 20, diff))
    finally:
        probe.close()
    return results


def prediction_lines(seconds_per_face: float, processes: Sequence[int] = (1, 8)) -> List[str]:
    lines = []
    for p in processes:
        total = ROWS * math.ceil(CELEBA_TEST_FACES / p) * seconds_per_face
        lines.append(f'- CelebA-Test, two rows ({ROWS} x {CELEBA_TEST_FACES} faces) on {p} process'
                     f'{"es" if p > 1 else ""}: {ROWS} x {math.ceil(CELEBA_TEST_FACES / p)} x '
                     f'{seconds_per_face:.3g} s = {total / 3600:.2f} h (restoration only)')
    return lines


def report(args: argparse.Namespace, results: List[BatchResult], device_name: str) -> str:
    title = 'tiny random models' if args.size == 'tiny' else 'SD 2.1 sizes, random weights'
    rows = [[str(r.batch), f'{r.seconds_per_face:.3f}', f'{r.faces_per_second:.2f}', f'{r.peak_mib:.0f}',
             '-' if r.max_dn_vs_b1 is None else str(r.max_dn_vs_b1)] for r in results]
    best = min(results, key=lambda r: r.seconds_per_face)
    lines = [f'## Evaluation throughput: {args.restorer}, {title}, {args.face_size}² faces'
             f'{f", K = {args.steps}" if args.restorer == "diffbir" else ""}, {device_name}', '',
             markdown_table(['B', 's / face', 'faces / s', 'peak MiB', 'max Δ vs B=1 (DN)'], rows, 'rrrrr'), '',
             f'{args.faces} faces per B after one warm-up batch; peak: '
             f'{"CUDA max_memory_allocated" if args.device == "cuda" else "RSS above the level before the B"}.',
             f'Fastest: B = {best.batch} ({best.seconds_per_face:.3g} s per face, '
             f'{results[0].seconds_per_face / best.seconds_per_face:.2f}x B = {results[0].batch}).', '',
             *prediction_lines(best.seconds_per_face)]
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', choices=('tiny', 'sd21'), default='tiny')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--restorer', choices=tuple(ARCHS), default='diffbir')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 2, 4, 8])
    parser.add_argument('--faces', type=int, help='faces per B (default 8)')
    parser.add_argument('--face-size', type=int, help='default 64 (tiny), 512 (sd21)')
    parser.add_argument('--steps', type=int, help='DDIM steps K (default 10 tiny, 50 sd21)')
    parser.add_argument('--weight-dtype', choices=('fp32', 'bf16'), help='default: fp32 (tiny), bf16 (sd21 cuda)')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--smoke', action='store_true', help='2 faces of 32², K = 2, B = 1 and 2: seconds')
    parser.add_argument('--out', help='also write the report (Markdown) here')
    parser.add_argument('--json', help='also write the measurements here')
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.faces, args.face_size, args.steps, args.batches = 'tiny', 2, 32, 2, [1, 2]
    real = args.size == 'sd21'
    args.faces = args.faces or 8
    args.face_size = args.face_size or (512 if real else 64)
    args.steps = args.steps or (50 if real else 10)
    if args.weight_dtype is None and real and args.device == 'cuda':
        args.weight_dtype = 'bf16'
    args.batches = sorted(set(args.batches))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device here')
    net = build(args, device)
    results = measure(net, args, device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})'
    emit_report(report(args, results, name), args.out)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'args': vars(args), 'device': name, 'results': [asdict(r) for r in results]}, handle,
                      indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
