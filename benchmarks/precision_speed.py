"""Benchmark: one DiffBIR denoiser call (SD 2.1 UNet + IRControlNet, 512², batch 1) under each weight precision.

Why ``weight_dtype: bf16`` stores frozen weights in bf16 and runs the trained IRControlNet through a bf16
:class:`~drward.archs.precision.ComputeCopy` instead of under autocast. Variants, measured in one process, in the
no-grad DDIM prefix (49 of 50 calls per ReFL step) and at the gradient step (forward + backward into the trained
weights):

* ``fp32``: everything fp32;
* ``autocast``: fp32 weights under ``torch.autocast(bfloat16)`` (the previous ``mixed_precision: bf16``);
* ``bf16 UNet + autocast ControlNet``: the frozen UNet stored in bf16, the fp32 ControlNet under autocast;
* ``bf16 (ComputeCopy)``: what ``weight_dtype: bf16`` does: bf16 UNet, the ControlNet's bf16 compute copy.

    python benchmarks/precision_speed.py [--device cpu|cuda] [--threads 2] [--repeats 2] [--skip-fp32]

Random weights at the real sizes (no files needed). Times are medians of ``--repeats`` after one warm-up; the
ratio column is against ``fp32`` (or ``autocast`` with ``--skip-fp32``). With ``--clock cpu`` the process CPU time
is reported (steadier than wall time on a shared machine).
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402


def build(device: str):
    from diffusers import UNet2DConditionModel

    from drward.archs.ircontrolnet import IRControlNet, ircontrolnet_config
    from drward.archs.sd_parts import SD21_BASE
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD21_BASE.unet_diffusers_config()).to(device).requires_grad_(False).eval()
    controlnet = IRControlNet(**ircontrolnet_config(unet.config)).to(device).train()
    return unet, controlnet


def denoise(unet, controlnet, z, c, t, ctx, dtype):
    residuals = controlnet(z.to(dtype), c.to(dtype), t, ctx.to(dtype))
    return unet(z.to(dtype), t, encoder_hidden_states=ctx.to(dtype),
                down_block_additional_residuals=[r.to(dtype) for r in residuals[:-1]],
                mid_block_additional_residual=residuals[-1].to(dtype)).sample


def effective_clock(clock: str, device: str) -> str:
    """On CUDA always wall time (with synchronisation): the process CPU clock would count the kernel launches and
    the host's waits, not the GPU's work."""
    return 'wall' if device == 'cuda' else clock


def timed(fn: Callable[[], None], repeats: int, clock: str, device: str) -> float:
    now = time.process_time if effective_clock(clock, device) == 'cpu' else time.perf_counter
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    fn()
    samples = []
    for _ in range(repeats):
        sync()
        start = now()
        fn()
        sync()
        samples.append(now() - start)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='cpu')
    parser.add_argument('--skip-fp32', action='store_true', help='leave out the (slow) plain fp32 variant')
    args = parser.parse_args(argv)
    from drward.archs.precision import ComputeCopy
    torch.set_num_threads(args.threads)
    dev = args.device
    unet, controlnet = build(dev)
    generator = torch.Generator().manual_seed(0)
    z, c = (torch.randn(1, 4, 64, 64, generator=generator).to(dev) for _ in range(2))
    ctx = torch.randn(1, 77, 1024, generator=generator).to(dev)
    t = torch.tensor([501], device=dev)
    autocast = lambda: torch.autocast(device_type=dev, dtype=torch.bfloat16)  # noqa: E731
    unet_bf16 = None
    rows: Dict[str, Dict[str, float]] = {}

    def measure(name: str, net_u, net_c, dtype, context, grad_net=None) -> None:
        def prefix():
            with torch.no_grad(), context():
                denoise(net_u, net_c(False) if not isinstance(net_c, torch.nn.Module) else net_c, z, c, t, ctx, dtype)

        def grad_step():
            with context():
                eps = denoise(net_u, net_c(True) if not isinstance(net_c, torch.nn.Module) else net_c,
                              z, c, t, ctx, dtype)
            eps.float().square().mean().backward()
            controlnet.zero_grad(set_to_none=True)
        rows[name] = {'prefix': timed(prefix, args.repeats, args.clock, dev),
                      'grad': timed(grad_step, args.repeats, args.clock, dev)}
        print(f'{name}: {rows[name]}', flush=True)

    if not args.skip_fp32:
        measure('fp32', unet, controlnet, torch.float32, nullcontext)
    measure('autocast (fp32 weights)', unet, controlnet, torch.float32, autocast)
    unet_bf16 = unet.to(torch.bfloat16)
    measure('bf16 UNet + autocast ControlNet', unet_bf16, controlnet, torch.bfloat16, autocast)
    copy = ComputeCopy(controlnet, torch.bfloat16)
    measure('bf16 (ComputeCopy)', unet_bf16, lambda with_grad: copy.refresh(with_grad), torch.bfloat16, nullcontext)
    base = next(iter(rows.values()))
    clock = 'CPU s (process)' if effective_clock(args.clock, args.device) == 'cpu' else 'wall s'
    print(f'\nOne denoiser call (UNet + IRControlNet), SD 2.1 sizes, 512², batch 1, {dev}, {args.threads} threads; '
          f'median of {args.repeats}, {clock}\n')
    print(f'| variant | no-grad call | × vs {next(iter(rows))} | grad call (fwd+bwd) | × |')
    print('|---|--:|--:|--:|--:|')
    for name, r in rows.items():
        print(f'| {name} | {r["prefix"]:.2f} | {r["prefix"] / base["prefix"]:.2f} | {r["grad"]:.2f} | '
              f'{r["grad"] / base["grad"]:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
