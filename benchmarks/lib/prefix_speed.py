"""Benchmark: seconds per face of whole ReFL generator steps over ``grad_accum`` micro-batches, with the no-grad prefix
batched or not (``train.batched_prefix``), optionally with the prefix's denoiser compiled (``network_g.compile``).

Reached through ``benchmarks/refl_step.py --grad-accum 4 --batched-prefix on|off | --compare-batched-prefix
[--compile] [--json FILE]`` (the other flags of refl_step.py apply: size, device, dtype, weight dtype, checkpointing).
One ReFLModel (:mod:`benchmarks.lib.bench_models`; one model, so that SD 2.1 sizes fit a 24 GiB machine) on a batch of
``grad_accum`` faces; the variants switch its ``batched_prefix`` between steps, their steps interleaved, each step
drawing the same random stream, medians reported (the cost does not depend on the weights' values, which the
optimiser steps change):

* *seconds per face*: ``(step − FRM update + FRM update / every) / faces``: the FRM update runs at every measured
  step (so that its time is measured) and is amortised over ``--frm-every`` steps (official n = 10), as in training;
* *prefix share*: the time inside the sampler's no-grad prefix (:meth:`TruncatedDDIMSampler.run_prefix`, which
  both paths run through) over the step time without the FRM update;
* *peak memory*: the process's peak RSS during the variant's steps (CPU, sampled every 5 ms), or on CUDA
  ``max_memory_allocated`` and ``max_memory_reserved`` (reset before each step).

The first step of each variant is a warm-up (and, with ``--compile``, the compilation, reported separately).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch

from benchmarks.lib.bench_models import RestorerSpec, build_refl_model, make_batch, size_title
from benchmarks.lib.common import markdown_table, memory_probe

GIB = 2 ** 30


@dataclass
class PrefixVariant:
    """One variant's medians; ``batched_prefix`` and ``compile`` say which."""

    batched_prefix: bool
    compile: bool
    seconds_per_face: float
    prefix_share: float
    frm_update_seconds: float
    peak_rss_gib: Optional[float] = None
    cuda_peak_allocated_gib: Optional[float] = None
    cuda_peak_reserved_gib: Optional[float] = None
    compile_seconds: Optional[float] = None
    steps: List[float] = field(default_factory=list)


class _PrefixTimer:
    """Wraps the restorer's sampler ``run_prefix`` and the model's ``update_frm`` to time them."""

    def __init__(self, model, sync):
        self.prefix = self.frm = 0.0
        self.sync = sync
        sampler = model.net_g.sampler
        run_prefix, update_frm = sampler.run_prefix, model.update_frm

        def timed_prefix(*args, **kwargs):
            return self._timed('prefix', run_prefix, *args, **kwargs)

        def timed_frm(*args, **kwargs):
            return self._timed('frm', update_frm, *args, **kwargs)
        sampler.run_prefix, model.update_frm = timed_prefix, timed_frm

    def _timed(self, name, fn, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        setattr(self, name, getattr(self, name) + time.perf_counter() - start)
        return out


def _variants(args: argparse.Namespace) -> List[bool]:
    if args.compare_batched_prefix:
        return [False, True]
    return [args.batched_prefix == 'on']


def _build(args: argparse.Namespace, spec: RestorerSpec, batched: bool):
    args.train_overrides = {'grad_accum': args.grad_accum, 'batched_prefix': batched, 'prefix_batch_size':
                            getattr(args, 'prefix_batch_size', None)}
    args.network_overrides = {'compile': True} if args.compile else {}
    with tempfile.TemporaryDirectory() as workdir:
        return build_refl_model(args, spec, workdir)


def measure_prefix_variants(args: argparse.Namespace, spec: RestorerSpec) -> List[PrefixVariant]:
    """Build one model per variant, warm each up, then interleave ``repeats`` measured steps."""
    device = torch.device(args.device)
    args.batch = args.grad_accum * args.faces_per_microbatch
    batch = make_batch(args, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    variants = _variants(args)
    model = _build(args, spec, True)
    if variants[-1] and not model.batched_prefix.enabled:
        raise SystemExit(f'{spec.title} has no no-grad prefix to batch (one-step restorer): nothing to compare')
    timer = _PrefixTimer(model, sync)
    probe = memory_probe(device, 0.005)
    records: Dict[bool, Dict[str, list]] = {b: {'step': [], 'prefix': [], 'frm': [], 'peak': [], 'reserved': []}
                                            for b in variants}
    compile_seconds: Dict[bool, float] = {}
    try:
        for repeat in range(args.warmup + args.repeats):
            for batched in variants:
                model.batched_prefix.enabled = batched
                torch.manual_seed(args.seed + repeat)
                model.generator.manual_seed(args.seed + repeat)  # the same draws for every variant
                model.feed_data(batch)
                timer.prefix = timer.frm = 0.0
                if device.type == 'cuda':
                    torch.cuda.reset_peak_memory_stats(device)
                probe.take_peak()
                sync()
                start = time.perf_counter()
                model.optimize_parameters(repeat + 1)
                sync()
                seconds = time.perf_counter() - start
                if repeat == 0:
                    compile_seconds[batched] = seconds  # the first step of each batch size compiles
                if repeat < args.warmup:
                    continue
                rec = records[batched]
                rec['step'].append(seconds)
                rec['prefix'].append(timer.prefix)
                rec['frm'].append(timer.frm)
                rec['peak'].append(probe.take_peak())
                if device.type == 'cuda':
                    rec['reserved'].append(torch.cuda.max_memory_reserved(device))
    finally:
        probe.close()
    return [_summarise(args, batched, records[batched], compile_seconds.get(batched)) for batched in variants]


def _summarise(args: argparse.Namespace, batched: bool, rec: Dict[str, list], first: Optional[float]) -> PrefixVariant:
    step, prefix, frm = (statistics.median(rec[k]) for k in ('step', 'prefix', 'frm'))
    faces = args.batch
    per_face = (step - frm + frm / args.frm_every) / faces
    variant = PrefixVariant(batched, bool(args.compile), per_face, prefix / max(step - frm, 1e-12), frm,
                            steps=[round(s, 4) for s in rec['step']])
    peak = max(rec['peak']) / GIB
    if args.device == 'cuda':
        variant.cuda_peak_allocated_gib, variant.cuda_peak_reserved_gib = peak, max(rec['reserved']) / GIB
    else:
        variant.peak_rss_gib = peak
    if args.compile and first is not None:
        variant.compile_seconds = max(first - step, 0.0)  # the first step's extra time: compilation (+ warm-up)
    return variant


def render_prefix_report(args: argparse.Namespace, spec: RestorerSpec, variants: List[PrefixVariant]) -> str:
    cuda = args.device == 'cuda'
    headers = ['batched prefix', 'compile', 's / face (amortised)', 'prefix share', 'FRM update s',
               *(['CUDA peak allocated GiB', 'reserved GiB'] if cuda else ['peak RSS GiB']), 'ratio']
    base = variants[0].seconds_per_face
    rows = []
    for v in variants:
        memory = ([f'{v.cuda_peak_allocated_gib:.2f}', f'{v.cuda_peak_reserved_gib:.2f}'] if cuda
                  else [f'{v.peak_rss_gib:.2f}'])
        rows.append(['on' if v.batched_prefix else 'off', 'yes' if v.compile else 'no', f'{v.seconds_per_face:.3f}',
                     f'{100 * v.prefix_share:.1f} %', f'{v.frm_update_seconds:.2f}', *memory,
                     f'{v.seconds_per_face / base:.3f}'])
    header = (f'## {spec.title} ReFL step, {size_title(args.size)}, {args.resolution}², K = {args.steps}, '
              f'{args.grad_accum} micro-batches × {args.faces_per_microbatch} face(s), FRM update amortised over '
              f'{args.frm_every} steps, {args.device}, autocast {args.dtype}, weight_dtype '
              f'{args.weight_dtype or "default"}, checkpointing {"on" if args.gradient_checkpointing else "off"}, '
              f'{args.threads} thread(s); medians of {args.repeats} steps after {args.warmup} warm-up')
    notes = []
    if args.compile:
        notes.append('compile: first step minus the median step, per variant: ' + ', '.join(
            f'{"on" if v.batched_prefix else "off"} {v.compile_seconds:.1f} s' for v in variants))
    return '\n\n'.join([header, markdown_table(headers, rows), *notes]) + '\n'


def write_json(path: str, args: argparse.Namespace, variants: List[PrefixVariant]) -> None:
    payload = {'size': args.size, 'device': args.device, 'steps': args.steps, 'grad_accum': args.grad_accum,
               'frm_every': args.frm_every, 'variants': [asdict(v) for v in variants]}
    with open(path, 'w') as handle:
        json.dump(payload, handle, indent=2)
