"""Can the on-the-fly face degradation keep a GPU busy? Per-image cost of each stage, loader throughput, and the
GPU's appetite, measured in one process.

    python benchmarks/data_pipeline.py                       # 512² (paper's ranges) and 64² (the tiny demo's)
    python benchmarks/data_pipeline.py --images 48 --workers 0 1 2 4 --out data_pipeline.md

1. **Stages** (per size): the mean milliseconds one item spends in each stage of ``FaceDegradationDataset.__getitem__``
   over ``--images`` seeded draws (a mean, not a median: the cost depends on the draw — noise and JPEG run after the
   ×r downsampling — and the mean is what a loader pays per image): reading the PNG (from an lmdb made by
   ``tools/make_lmdb.py``, and from files), the kernel draw, the blur (OpenCV's ``filter2D`` as the pipeline used
   to, and :func:`drward.data.degrade.blur`), downsampling, noise, JPEG, the resize back, the tensors, and the whole
   item both ways. Ratios are against the item with ``filter2D``, measured in the same process (the machine is
   shared: read the ratios).
2. **Loader**: images per second through a BasicSR-style ``DataLoader`` (batch ``--batch``) with 0, 1, 2, ...
   workers, reading the lmdb; the first batch (worker start-up) is not counted.
3. **Demand**: seconds of training per image and the images per second it asks for — the real-size OSEDiff step on
   this CPU (docs/real_size.md) and the GPU floor of a DiffBIR step from docs/design.md §5 (66 TFLOP per image at the
   bf16 dense peak of an A100 / H100; OSEDiff's ≈ 15 TFLOP derived from §5's module counts), and how many workers
   at the measured one-worker rate that needs.

Faces are the bundled demo faces (``drward/data/demo_faces.py``) rendered at each size, in a temporary folder.
Threads: OpenCV and torch run single-threaded (``cv2.setNumThreads(1)``), as one DataLoader worker does.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np
import torch
import yaml
from basicsr.data.degradations import add_gaussian_noise

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.lib.common import emit_report, markdown_table  # noqa: E402
from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402
from drward.data import degrade as degrade_module  # noqa: E402
from drward.data import image_io  # noqa: E402
from drward.data.demo_faces import make_demo_faces  # noqa: E402
from drward.data.face_degradation_dataset import FaceDegradationDataset, _bgr_to_tensor  # noqa: E402
from drward.data.image_source import ImageSource  # noqa: E402
from drward.data.lmdb_pack import pack_folder  # noqa: E402

#: Where each size's degradation ranges come from: the paper's (real run) and the tiny demo's option file.
SIZE_OPTIONS = {512: 'refl_diffbir.yml', 64: 'refl_diffbir_tiny.yml'}
#: docs/real_size.md: the OSEDiff + FRM rehearsal step (4 micro-batches of one 512² face) on this CPU.
CPU_STEP_S, CPU_STEP_IMAGES = 479.0, 4
#: docs/design.md §5: one DiffBIR ReFL micro-batch (one 512² face, K = 50, N = 1) ≈ 66 TFLOP.
DIFFBIR_TFLOP_PER_IMAGE = 66.0
#: One OSEDiff ReFL micro-batch from docs/design.md §5's per-module GFLOPs: forward VAE encode 1,117 + UNet 804 +
#: VAE decode 2,515 + FRM 335, backward ≈ 2 × that forward (the gradient passes all four), plus the frozen reference
#: UNet's forward for L_reg (804): ≈ 15 TFLOP. Derived here; §5 counts DiffBIR only.
OSEDIFF_TFLOP_PER_IMAGE = (3 * (1117 + 804 + 2515 + 335) + 804) / 1000
#: bf16 dense tensor-core peaks (vendor data sheets), TFLOP/s.
GPU_PEAKS = {'A100': 312.0, 'H100 SXM': 989.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 64], choices=sorted(SIZE_OPTIONS))
    parser.add_argument('--images', type=int, default=32, help='items (seeded draws) per measurement [32]')
    parser.add_argument('--faces', type=int, default=16, help='distinct demo faces the items cycle over [16]')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2], help='DataLoader workers [0 1 2]')
    parser.add_argument('--batch', type=int, default=4, help='DataLoader batch size [4]')
    parser.add_argument('--workdir', help='folder for the faces and the lmdb (default: a temporary one)')
    parser.add_argument('--out', help='also write the report to this Markdown file')
    add_smoke_flag(parser, '4 items of 64², 2 faces, no workers', sizes=[64], images=4, faces=2, workers=[0], batch=2)
    return apply_smoke(parser.parse_args(argv))


def dataset_options(size: int, root: str) -> dict:
    """The train dataset options of the option file for ``size``, reading ``root`` (an lmdb) at that size."""
    with open(os.path.join(ROOT, 'options', SIZE_OPTIONS[size])) as handle:
        opt = dict(yaml.safe_load(handle)['datasets']['train'])
    opt.update(dataroot_gt=root, io_backend={'type': 'lmdb'}, gt_size=size, demo_faces=False, phase='train')
    return opt


def mean_ms(run: Callable[[int], object], count: int) -> float:
    """Mean wall milliseconds of ``run(i)`` over ``i = 0 .. count − 1`` (after one untimed ``run(0)``)."""
    run(0)
    total = 0.0
    for i in range(count):
        start = time.perf_counter()
        run(i)
        total += time.perf_counter() - start
    return total / count * 1e3


def draw(settings: degrade_module.DegradationSettings, seed: int) -> degrade_module.Degradation:
    """The degradation drawn from ``seed``."""
    with degrade_module.seeded_global_rng(seed):
        return degrade_module.sample_degradation(settings)


def stage_times(dataset: FaceDegradationDataset, files: Sequence[str], stored: ImageSource,
                count: int) -> Dict[str, float]:
    """Mean ms per item of each stage; see the module docstring."""
    size, settings = dataset.gt_size, dataset.settings
    names, source = dataset.gt_paths, dataset.source
    draws = [draw(settings, i) for i in range(count)]
    gt = [image_io.fit_square(source.read(names[i % len(names)]), size) for i in range(count)]
    blurred = [degrade_module.blur(gt[i], draws[i].kernel) for i in range(count)]
    small = [cv2.resize(blurred[i], (max(1, int(size // draws[i].scale)),) * 2, interpolation=cv2.INTER_LINEAR)
             for i in range(count)]
    times = {
        'read PNG (lmdb)': mean_ms(lambda i: source.read(names[i % len(names)]), count),
        'read PNG (lmdb, --compress-level 0)': mean_ms(lambda i: stored.read(names[i % len(names)]), count),
        'read PNG (file)': mean_ms(lambda i: image_io.read_image(files[i % len(files)]), count),
        'draw kernel, r, δ, q': mean_ms(lambda i: draw(settings, i), count),
        'blur: cv2.filter2D (before)': mean_ms(lambda i: cv2.filter2D(gt[i], -1, draws[i].kernel), count),
        'blur: degrade.blur (now)': mean_ms(lambda i: degrade_module.blur(gt[i], draws[i].kernel), count),
        'downsample ×1/r': mean_ms(lambda i: cv2.resize(blurred[i], small[i].shape[1::-1],
                                                         interpolation=cv2.INTER_LINEAR), count),
        'noise δ': mean_ms(lambda i: draws[i].noise_sigma > 0 and add_gaussian_noise(
            small[i], sigma=draws[i].noise_sigma, clip=True, rounds=False), count),
        'JPEG q': mean_ms(lambda i: draws[i].jpeg_quality is not None and degrade_module.jpeg_compress(
            small[i], draws[i].jpeg_quality), count),
        'resize back': mean_ms(lambda i: cv2.resize(small[i], (size, size), interpolation=cv2.INTER_LINEAR), count),
        'to tensors (lq, gt)': mean_ms(lambda i: (_bgr_to_tensor(gt[i]), _bgr_to_tensor(blurred[i])), count),
    }
    times['item: __getitem__ (now)'] = mean_ms(lambda i: dataset[i % len(dataset)], count)
    with filter2d_blur():
        times['item: __getitem__ with filter2D (before)'] = mean_ms(lambda i: dataset[i % len(dataset)], count)
    return times


class filter2d_blur:
    """Within the block, the pipeline blurs with plain ``cv2.filter2D``, as before :func:`degrade.blur`."""

    def __enter__(self) -> None:
        self.saved = degrade_module.blur
        degrade_module.blur = lambda img, kernel: cv2.filter2D(img, -1, np.asarray(kernel, np.float32))

    def __exit__(self, *exc) -> None:
        degrade_module.blur = self.saved


def loader_rate(dataset, workers: int, batch: int, count: int) -> float:
    """Images per second through a DataLoader with ``workers`` workers, the first batch not counted."""
    sampler = [i % len(dataset) for i in range(count + batch)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         worker_init_fn=_one_thread)
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for data in iterator:
        seen += data['gt'].shape[0]
    return seen / (time.perf_counter() - start)


def _one_thread(_worker_id: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def stage_table(times_by_size: Dict[int, Dict[str, float]]) -> str:
    sizes = sorted(times_by_size, reverse=True)
    headers = ['stage'] + [f'{s}²: ms / image' for s in sizes] + [f'{s}²: × item before' for s in sizes]
    rows = []
    for stage in times_by_size[sizes[0]]:
        cells = [f'{times_by_size[s][stage]:.2f}' for s in sizes]
        base = [times_by_size[s]['item: __getitem__ with filter2D (before)'] for s in sizes]
        rows.append([stage] + cells + [f'{times_by_size[s][stage] / b:.3f}' for s, b in zip(sizes, base)])
    return markdown_table(headers, rows)


def demand_rows(one_worker_rate: float) -> List[List[str]]:
    """Demand rows: seconds per image, images/s needed, workers needed at ``one_worker_rate`` images/s each."""
    demands = [(f'OSEDiff ReFL step on this CPU (docs/real_size.md: {CPU_STEP_S:.0f} s / {CPU_STEP_IMAGES} faces)',
                CPU_STEP_S / CPU_STEP_IMAGES)]
    for name, tflop, source in (('DiffBIR', DIFFBIR_TFLOP_PER_IMAGE, 'docs/design.md §5'),
                                ('OSEDiff', OSEDIFF_TFLOP_PER_IMAGE, 'from §5\'s module counts')):
        demands += [(f'{name} step, GPU floor: {tflop:.0f} TFLOP/face ({source}) at {gpu} bf16 peak {peak:.0f} '
                     'TFLOP/s', tflop / peak) for gpu, peak in GPU_PEAKS.items()]
    return [[what, f'{seconds:.3f}', f'{1 / seconds:.2f}', str(max(1, math.ceil(1 / seconds / one_worker_rate)))]
            for what, seconds in demands]


def run_benchmark(args: argparse.Namespace) -> str:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    workdir = args.workdir or tempfile.mkdtemp(prefix='data_pipeline_')
    times, rates, sections = {}, {}, []
    for size in args.sizes:
        folder = os.path.join(workdir, f'faces_{size}')
        files = make_demo_faces(folder, size, args.faces)
        report = pack_folder(folder, os.path.join(workdir, f'faces_{size}.lmdb'))
        stored = pack_folder(folder, os.path.join(workdir, f'faces_{size}_level0.lmdb'), compress_level=0)
        dataset = FaceDegradationDataset(dataset_options(size, report.lmdb_path))
        times[size] = stage_times(dataset, files, ImageSource('level 0', {'type': 'lmdb'}, stored.lmdb_path),
                                  args.images)
        rates[size] = {w: loader_rate(dataset, w, args.batch, args.images) for w in args.workers}
    sections.append('## Per-image cost of each stage (mean over the draws)\n\n' + stage_table(times))
    loader_headers = ['workers'] + [f'{s}²: images/s' for s in args.sizes] + \
                     [f'{s}²: × 0 workers' for s in args.sizes]
    loader_rows = [[str(w)] + [f'{rates[s][w]:.1f}' for s in args.sizes] +
                   [f'{rates[s][w] / rates[s][args.workers[0]]:.2f}' for s in args.sizes] for w in args.workers]
    sections.append(f'## DataLoader throughput (lmdb, batch {args.batch}, {os.cpu_count()} CPUs here)\n\n' +
                    markdown_table(loader_headers, loader_rows))
    largest = max(args.sizes)
    one_worker = rates[largest].get(1) or 1e3 / times[largest]['item: __getitem__ (now)']
    sections.append(f'## What training asks for ({largest}², one worker here: {one_worker:.1f} images/s)\n\n' +
                    markdown_table(['consumer', 's / image', 'images/s needed', 'workers needed'],
                                   demand_rows(one_worker)))
    sections.append(conclusion(one_worker))
    return '\n\n'.join(['# Data pipeline benchmark'] + sections) + '\n'


def conclusion(one_worker: float) -> str:
    """Whether 4 and 8 workers at ``one_worker`` images/s each feed the hungriest GPU floor above."""
    needed = max(GPU_PEAKS.values()) / min(DIFFBIR_TFLOP_PER_IMAGE, OSEDIFF_TFLOP_PER_IMAGE)
    verdict = {w: 'enough' if w * one_worker >= needed else 'not enough' for w in (4, 8)}
    return (f'Conclusion: the hungriest consumer above (OSEDiff at the H100 floor) takes {needed:.0f} faces/s; at '
            f'this CPU\'s one-worker rate 4 workers give {4 * one_worker:.0f} faces/s ({verdict[4]}) and 8 give '
            f'{8 * one_worker:.0f} ({verdict[8]}), each worker on a core of its own. A real step runs below peak '
            'FLOP/s, so it asks for fewer.')


def main(argv=None) -> str:
    args = parse_args(argv)
    return emit_report(run_benchmark(args), args.out)


if __name__ == '__main__':
    main()
