"""Benchmark: time and peak memory of one ReFL generator step, split into its parts, against full-chain backprop.

One step is ReFLModel's own ``optimize_parameters`` (one micro-batch): restore with gradient through the last N
denoiser calls, the four loss terms, backward, the generator's AdamW step, the GT reward for the log, and the dynamic
FRM update (run at every measured step here; every n = 10 in training). Nothing is re-implemented: the parts are
separated by instrumenting the real code while it runs —

* ``restorer.restore`` (wrapped): from its entry to the first denoiser call = *conditioning*;
* the restorer's ``TruncatedDDIMSampler.sample`` (wrapped on the instance): every denoiser call is attributed to the
  *no-grad prefix* or the *grad step(s)* by the sampler's own ``with_grad`` flag, and the DDIM update after a call to
  the same part; from the sampler's return to the end of ``restore`` = *decode*. A restorer without a sampler (one
  step) has its UNet's forward hooked instead: its calls are the grad step, what follows is decode;
* forward hooks on the loss modules: *FRM reward forward* (``RewardLoss``) and *other losses*;
* the generator's ``backward()`` call (``torch.autograd.backward``, wrapped) is split into three parts by gradient
  hooks on ``Î`` (the decoder's backward starts) and on ``ẑ_0`` (the grad steps' backward starts);
* step hooks on the generator optimiser, and a wrapper on ``update_frm``.

The pieces: :mod:`benchmarks.lib.bench_models` builds the models (tiny, or SD 2.1 sizes with random weights through the
restorers' ``random_weights`` option), :mod:`benchmarks.lib.step_parts` instruments and measures the step,
:mod:`benchmarks.lib.step_report` renders the tables; this file is the command line.

Each switch between parts synchronises CUDA before reading the clock, so the parts sum to the step's wall time.
Memory per part: the bytes autograd saved for backward (exact, any device) and the peak above the step's starting
level (CUDA: ``max_memory_allocated``; CPU: sampled RSS) — see ``benchmarks/lib/common.py``. The same process then
measures the full-chain baseline (N = K: the graph over every denoiser call) and optional N = 2, 4, ...; repeats
are interleaved across variants and medians are reported.

    python benchmarks/refl_step.py                                  # DiffBIR, tiny, 64², K = 50, CPU, 1 thread
    python benchmarks/refl_step.py --restorer osediff --clock thread # CPU time: steadier on a busy CPU
    python benchmarks/refl_step.py --size sd21 --device cuda --also-n 2 4 --out sd21.md
    python benchmarks/refl_step.py --size sd21 --construct-only     # build on the meta device, count, don't run
    python benchmarks/refl_step.py --grad-accum 4 --compare-batched-prefix --json out.json  # s / face, prefix on/off
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402

from benchmarks.lib.bench_models import SPECS, RestorerSpec, available, build_refl_model, chain_length, make_batch  # noqa: E402,F401
from benchmarks.lib.common import PartClock, SavedTensorMeter, emit_report, memory_probe  # noqa: E402
from benchmarks.lib.smoke import add_smoke_flag, apply_smoke  # noqa: E402
from benchmarks.lib.step_parts import (  # noqa: E402,F401
    PART_LABELS,
    PARTS,
    VariantResult,
    choose_variants,
    measure,
    model_tensors,
    run_step,
)
from benchmarks.lib.step_report import construct_report, render_report  # noqa: E402


# ---------------------------------------------------------------------------------------------------- options
# ---------------------------------------------------------------------------------------------------- options
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Time and peak memory of one ReFL step, by part, '
                                                 'against full-chain backprop (same process).')
    parser.add_argument('--restorer', choices=sorted(SPECS), default='diffbir')
    parser.add_argument('--size', choices=('tiny', 'sd21'), default='tiny',
                        help='tiny random models (CPU) or SD 2.1 sizes with random weights (GPU)')
    parser.add_argument('--resolution', type=int, default=None, help='image side (default: 64 tiny, 512 sd21)')
    parser.add_argument('--steps', type=int, default=50, help='K, DDIM steps of the chain (official: 50)')
    parser.add_argument('--also-n', type=int, nargs='*', default=[], metavar='N',
                        help='extra variants: gradient through the last N denoiser calls (e.g. 2 4)')
    parser.add_argument('--no-full-chain', action='store_true', help='skip the full-chain (N = K) baseline')
    parser.add_argument('--batch', type=int, default=1, help='images per step (authors: 1, accumulation 4)')
    parser.add_argument('--repeats', type=int, default=3, help='measured steps per variant (median reported)')
    parser.add_argument('--warmup', type=int, default=1, help='unmeasured steps first, of the cheapest variant (N = 1)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32',
                        help="bf16 = ReFLModel's mixed_precision: bf16 (autocast)")
    parser.add_argument('--weight-dtype', choices=('fp32', 'bf16'), default=None,
                        help="the restorers' and the FRM's weight_dtype option (storage of the frozen weights); "
                             "default: the models' own default")
    parser.add_argument('--gradient-checkpointing', action='store_true',
                        help="activation checkpointing in the restorer (UNet, control branch, VAE)")
    parser.add_argument('--frm-checkpointing', action='store_true',
                        help="also in the FRM (what ReFLModel's train.gradient_checkpointing turns on with the "
                             "restorer's)")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'thread'), default='wall',
                        help="wall time, or this thread's CPU time (CPU, --threads 1: steadier on a busy machine)")
    parser.add_argument('--rss-interval-ms', type=float, default=1.0, help='CPU memory sampling interval')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lora-rank', type=int, default=None, help='DiffBIR: network_g.lora rank (default: full)')
    parser.add_argument('--construct-only', action='store_true',
                        help='build the models on the meta device and report their sizes; run nothing')
    parser.add_argument('--out', default=None, help='also write the Markdown report to this file')
    whole = parser.add_argument_group('whole steps over micro-batches (benchmarks/lib/prefix_speed.py)')
    whole.add_argument('--grad-accum', type=int, default=None,
                       help='measure whole steps over this many micro-batches (seconds per face) instead of parts')
    whole.add_argument('--batched-prefix', choices=('on', 'off'), default='on', help="train.batched_prefix")
    whole.add_argument('--compare-batched-prefix', action='store_true', help='both prefix variants, one process')
    whole.add_argument('--compile', action='store_true', help="network_g.compile: true (the prefix's denoiser)")
    whole.add_argument('--frm-every', type=int, default=10, help='FRM update amortised over n steps (official 10)')
    whole.add_argument('--faces-per-microbatch', type=int, default=1, help='faces per micro-batch (official 1)')
    whole.add_argument('--json', default=None, help='write the variants as JSON to this file')
    add_smoke_flag(parser, 'tiny DiffBIR at 32², K = 2, one repeat, no full chain',
                   size='tiny', resolution=32, steps=2, repeats=1, warmup=0, no_full_chain=True)
    args = apply_smoke(parser.parse_args(argv))
    if args.grad_accum is None and (args.compare_batched_prefix or args.json or args.compile):
        args.grad_accum = 4
    if args.resolution is None:
        args.resolution = 512 if args.size == 'sd21' else 64
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device available')
    if args.clock == 'thread' and (args.device == 'cuda' or args.threads != 1):
        parser.error('--clock thread measures one CPU thread: use it with --device cpu --threads 1')
    return args


# ---------------------------------------------------------------------------------------------------- running
@dataclass
class BenchmarkRun:
    """A measured model: the ReFLModel, K, the variants' results and what the peak memory column means."""

    model: object
    k: int
    results: Dict[int, VariantResult]
    memory: str


def run_benchmark(args: argparse.Namespace, spec: RestorerSpec) -> BenchmarkRun:
    """Build the model and measure every variant (N = 1, the extra N, N = K) in this process."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as workdir:
        model = build_refl_model(args, spec, workdir)
    k = chain_length(model.net_g)
    variants = choose_variants(k, args.also_n, not args.no_full_chain)
    probe = memory_probe(device, args.rss_interval_ms / 1e3)
    timer = time.thread_time if args.clock == 'thread' else time.perf_counter
    clock = PartClock(probe, SavedTensorMeter(model_tensors(model)), timer)
    try:
        results = measure(model, make_batch(args, device), clock, variants, args.repeats, args.warmup, args.seed)
    finally:
        probe.close()
    return BenchmarkRun(model, k, results, probe.description)


def benchmark_report(args: argparse.Namespace, spec: RestorerSpec) -> str:
    run = run_benchmark(args, spec)
    return render_report(args, spec, run.model, run.k, run.results, run.memory)


# ---------------------------------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> str:
    """Run the benchmark (or the construct-only check); print the Markdown report, write it to ``--out``, return it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = SPECS[args.restorer]
    if not available(spec):
        report = (f'{spec.title}: `{spec.arch_type}` is not registered in this checkout '
                  f'(drward/archs/{args.restorer}_arch.py missing); skipped.\n')
    elif args.construct_only:
        report = construct_report(args, spec)
    elif args.grad_accum:
        from benchmarks.lib.prefix_speed import measure_prefix_variants, render_prefix_report, write_json
        variants = measure_prefix_variants(args, spec)
        report = render_prefix_report(args, spec, variants)
        if args.json:
            write_json(args.json, args, variants)
    else:
        if args.size == 'sd21' and args.device == 'cpu':
            print('refl_step: SD 2.1 sizes on the CPU take minutes per step and ~20 GiB; run it under '
                  '`flock /tmp/drward-bigmem.lock` on a shared machine', file=sys.stderr)
            if not args.no_full_chain:  # measured: saved ≈ 2.8 GiB + 0.45 GiB per extra grad call, checkpointed
                print('refl_step: the full chain (N = K = 50) saves ≈ 25 GiB of activations at SD 2.1 sizes even '
                      'with checkpointing: on a 24 GiB machine it is OOM-killed after about an hour; use '
                      '--no-full-chain --also-n 2 4 and extrapolate', file=sys.stderr)
        report = benchmark_report(args, spec)
    return emit_report(report, args.out)


if __name__ == '__main__':
    main()
