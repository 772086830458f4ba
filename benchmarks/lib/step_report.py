"""The Markdown report of benchmarks/refl_step.py: the parts table (N = 1 next to the full chain), the variants table,
the time shares next to docs/design.md §5's FLOP shares, and the construct-only parameter count.
"""
from __future__ import annotations

import argparse
import platform
from typing import Dict, List, Optional

import torch

from benchmarks.lib.bench_models import RestorerSpec, build_on_meta, chain_length, size_title
from benchmarks.lib.common import PartMeasure, fmt_mib, fmt_ms, fmt_ratio, markdown_table
from benchmarks.lib.step_parts import GENERATOR_FORWARD_PARTS, LOSS_PARTS, PARTS, VariantResult


def _variant_name(n: int, k: int) -> str:
    if n == k:
        return f'N = K = {k} (full chain)' if k > 1 else 'N = K = 1 (one step: the full chain)'
    return f'N = {n} (ReFL, paper)' if n == 1 else f'N = {n}'


def _graph_bytes(parts: Dict[str, PartMeasure]) -> int:
    """What the generator's forward saved for backward: every part before the backward (the FRM update's own
    graph comes later and is not alive at the same time)."""
    return sum(m.saved_bytes for key, m in parts.items() if key in GENERATOR_FORWARD_PARTS)


def _part_cells(measure_: Optional[PartMeasure], total: float) -> List[str]:
    """ms, share %, saved MiB, peak MiB of one part (n/a when the variant has no such part)."""
    if measure_ is None:
        return ['n/a'] * 4
    share = f'{100 * measure_.seconds / total:.1f}' if total > 0 else 'n/a'
    return [fmt_ms(measure_.seconds), share, fmt_mib(measure_.saved_bytes), fmt_mib(measure_.peak_bytes)]


def _parts_table(step: VariantResult, full: Optional[VariantResult], k: int) -> str:
    """Rows = parts; columns = the N = 1 step and the full-chain step (ms, share, saved, peak), their time ratio."""
    parts = step.parts
    full_parts = full.parts if full is not None else {}
    total = sum(m.seconds for m in parts.values())
    full_total = sum(m.seconds for m in full_parts.values())
    headers = ['part', 'N = 1 ms', 'share %', 'saved MiB', 'peak MiB',
               f'N = {k} ms', 'share %', 'saved MiB', 'peak MiB', 'time N = 1 / full']
    rows = []
    for key, label in PARTS:
        if key not in parts and key not in full_parts:
            continue
        mine, theirs = parts.get(key, PartMeasure()), full_parts.get(key)
        ratio = fmt_ratio(mine.seconds, theirs.seconds) if theirs is not None else 'n/a'
        rows.append([label, *_part_cells(mine, total), *_part_cells(theirs, full_total), ratio])
    summed = PartMeasure(total, step.peak_bytes, sum(m.saved_bytes for m in parts.values()))
    full_summed = (PartMeasure(full_total, full.peak_bytes, sum(m.saved_bytes for m in full_parts.values()))
                   if full is not None else None)
    rows.append(['**total** (sum of part medians)', *_part_cells(summed, total), *_part_cells(full_summed, full_total),
                 fmt_ratio(total, full_total) if full is not None else 'n/a'])
    return markdown_table(headers, rows)


def _variants_table(results: Dict[int, VariantResult], k: int) -> str:
    full = results.get(k)
    usable = full is not None and not full.failure
    full_graph = _graph_bytes(full.parts) if usable else 0
    headers = ['variant', 'grad calls', 'step ms', 'time / full chain', 'graph saved MiB', 'saved / full chain',
               'peak MiB', 'peak / full chain']
    rows = []
    for n, result in results.items():
        if result.failure:
            rows.append([_variant_name(n, k), str(n), result.failure] + ['n/a'] * 5)
            continue
        graph = _graph_bytes(result.parts)
        rows.append([_variant_name(n, k), str(result.grad_calls), fmt_ms(result.seconds),
                     fmt_ratio(result.seconds, full.seconds) if usable else 'n/a', fmt_mib(graph),
                     fmt_ratio(graph, full_graph) if usable else 'n/a', fmt_mib(result.peak_bytes),
                     fmt_ratio(result.peak_bytes, full.peak_bytes) if usable else 'n/a'])
    return markdown_table(headers, rows)


def _design_comparison(step: VariantResult, k: int) -> str:
    """The N = 1 step's grouped time shares; for a chain, next to docs/design.md §5's FLOP shares (DiffBIR, SD 2.1
    sizes, 512², K = 50)."""
    parts = step.parts
    total = sum(m.seconds for m in parts.values())

    def share(*keys: str) -> str:
        return f'{100 * sum(parts[key].seconds for key in keys if key in parts) / total:.1f} %'
    shares = (f'prefix {share("prefix")}, decode forward + backward {share("decode", "bwd_decode")}, grad step '
              f'forward + backward {share("grad_steps", "bwd_steps")}, conditioning forward + backward '
              f'{share("conditioning", "bwd_conditioning")}, loss terms forward + backward (FRM, LPIPS, DT-CWT, '
              f'L_reg) {share("reward", *LOSS_PARTS.values(), "losses", "bwd_losses")}, FRM update '
              f'{share("frm_update")}')
    if k == 1:
        return f'Time shares of the step: {shares}.'
    return (f'Against docs/design.md §5 (FLOPs of a DiffBIR step, SD 2.1 sizes, 512², K = 50: no-grad prefix ≈ 80 %, '
            f'VAE decode forward + backward ≈ 11 %, grad step forward + backward ≈ 5 %), this run\'s time shares '
            f'are: {shares}.')


def _checkpointing(args: argparse.Namespace) -> str:
    parts = [name for name, on in (('restorer', args.gradient_checkpointing), ('FRM', args.frm_checkpointing)) if on]
    return ' + '.join(parts) if parts else 'off'


def _setting(args: argparse.Namespace, spec: RestorerSpec, model, k: int) -> str:
    net = model.net_g
    trained = sum(p.numel() for p in net.trainable_parameters())
    restorer = sum(p.numel() for p in net.parameters())
    frm = sum(p.numel() for p in model.frm.parameters())
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
    else:
        device = f'CPU ({platform.machine()}, {torch.get_num_threads()} thread(s))'
    stored = {str(p.dtype).replace('torch.', '') for module in (net, model.frm) for p in module.parameters()}
    dtypes = ', '.join(sorted(stored))
    return (f'## ReFL step: {spec.title} ({size_title(args.size)}), {args.resolution}², batch {args.batch}, K = {k}, '
            f'{args.dtype}, gradient checkpointing: {_checkpointing(args)}'
            f'{f", LoRA rank {args.lora_rank} on the IRControlNet" if getattr(args, "lora_rank", None) else ""}\n\n'
            f'Device: {device}; torch {torch.__version__}. Parameters: restorer {restorer / 1e6:,.2f} M '
            f'(trained {trained / 1e6:,.2f} M), FRM {frm / 1e6:,.2f} M; stored as {dtypes}.')


def _chain_sentence(k: int) -> str:
    if k == 1:
        return 'One denoiser call (the grad step), no no-grad prefix.'
    return (f'The stop index is fixed at the last step (`stop_window: 1`), so N = 1 runs K − 1 = {k - 1} no-grad '
            f'calls.')


def _clock_name(args: argparse.Namespace) -> str:
    return 'CPU time of the main thread (`--clock thread`)' if args.clock == 'thread' else 'wall time'


def _caption(args: argparse.Namespace, k: int, step: VariantResult, memory: str) -> str:
    parts = step.parts
    total = sum(m.seconds for m in parts.values())
    frm = parts.get('frm_update', PartMeasure()).seconds
    amortised = frm / 10 / (total - frm + frm / 10) if total > 0 else 0.0
    return (f'One step = `ReFLModel.optimize_parameters` on one micro-batch (loss weights 1e-4 / 0.01 / 0.005 / '
            f'0.01, AdamW), median of {args.repeats} measured steps per variant after {args.warmup} warm-up '
            f'step(s) of N = 1, variants interleaved in one process. {_chain_sentence(k)} '
            'Parts are separated by hooks on the '
            f'running code (wrapped `restore`, sampler and backward call, loss-module hooks, gradient hooks on Î '
            f'and ẑ_0, optimiser step hooks; benchmarks/README.md) and sum to the step\'s {_clock_name(args)}; '
            f'CUDA is synchronised at every boundary. Shares are of the step total. Memory: *saved* = what autograd '
            f'kept for backward, counted by a saved-tensors hook (parameters excluded; "graph saved" = the '
            f'generator\'s forward parts); *peak* = {memory}. Weights are random '
            f'(the cost does not depend on them); LPIPS has a random VGG backbone. The dynamic FRM update runs at '
            f'every measured step here; at the official n = 10 it is {100 * amortised:.1f} % of a step.')


def render_report(args: argparse.Namespace, spec: RestorerSpec, model, k: int, results: Dict[int, VariantResult],
                  memory: str) -> str:
    step = results[1]
    if step.failure:
        return f'{_setting(args, spec, model, k)}\n\nThe N = 1 step failed: {step.failure}.\n'
    full = results.get(k)  # a one-step restorer (K = 1): the N = 1 step is the full chain
    full = full if full is not None and not full.failure else None
    blocks = [_setting(args, spec, model, k), _caption(args, k, step, memory),
              f'### Parts of one step (N = 1) and of the full-chain step (N = {k})', _parts_table(step, full, k),
              '### Variants', _variants_table(results, k), _design_comparison(step, k)]
    if k == 1:
        blocks.append('A one-step restorer: its only denoiser call is the grad step, so N = 1 is the full chain.')
    return '\n\n'.join(blocks) + '\n'



# ---------------------------------------------------------------------------------------------------- construct only
def construct_report(args: argparse.Namespace, spec: RestorerSpec) -> str:
    """Build the restorer and the FRM with meta-device parameters (no memory, no weights) and count them."""
    net, frm, _ = build_on_meta(args, spec)
    trained = {id(p) for p in net.trainable_parameters()} | {id(p) for p in frm.trainable_parameters()}
    modules = [(f'restorer.{name}', child) for name, child in net.named_children()] + [('FRM', frm)]
    rows, totals = [], [0, 0]
    for name, module in modules:
        count = sum(p.numel() for p in module.parameters())
        count_trained = sum(p.numel() for p in module.parameters() if id(p) in trained)
        totals = [totals[0] + count, totals[1] + count_trained]
        rows.append(_size_row(name, count, count_trained))
    rows.append(_size_row('**total**', *totals))
    header = (f'## {spec.title} ({size_title(args.size)}): built on the meta device, nothing run\n\n'
              f'K = {chain_length(net)}; parameter devices: {sorted({p.device.type for p in net.parameters()})}.')
    table = markdown_table(['module', 'parameters (M)', 'trained (M)', 'fp32 GiB', 'bf16 GiB',
                            'AdamW states GiB (fp32)'], rows)
    note = ('"trained": the restorer\'s trained part (generator step) and the FRM\'s unlocked groups (dynamic FRM '
            'update); AdamW keeps two fp32 states per trained parameter.')
    return f'{header}\n\n{table}\n\n{note}\n'


def _size_row(name: str, count: int, count_trained: int) -> List[str]:
    gib = 2 ** 30
    return [name, f'{count / 1e6:,.2f}', f'{count_trained / 1e6:,.2f}', f'{count * 4 / gib:,.2f}',
            f'{count * 2 / gib:,.2f}', f'{count_trained * 8 / gib:,.2f}']
