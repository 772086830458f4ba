"""Is bf16 fast here? bf16 is drward's only reduced precision (``mixed_precision: bf16``, ``weight_dtype: bf16``);
on pre-Ampere GPUs (T4, V100, RTX 20xx: compute capability < 8.0) CUDA emulates it, correct but several times slower
than fp32 there. Checked once at the start of training (:func:`bf16_advice`), with what to set instead.

    python -m drward.utils.precision_check --device cuda     # one line: torch, the device, bf16 support
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch

FP32_ADVICE = ("set train.mixed_precision: 'no' and weight_dtype: fp32 (network_g and reward_opt.frm) — about 1.5× "
               "the memory of the bf16 recipe (benchmarks/memory_budget.py --weight-dtype fp32) — or use an Ampere or "
               "newer GPU (compute capability ≥ 8.0)")


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (CUDA: ``is_bf16_supported(including_emulation=False)``; the CPU: yes,
    fast with AMX / AVX-512 BF16 and correct everywhere)."""
    device = torch.device(device)
    if device.type != 'cuda':
        return True
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def bf16_advice(device: torch.device) -> Optional[str]:
    """None when bf16 is native on ``device``; else one line saying why it is slow there and what to set."""
    device = torch.device(device)
    if bf16_native(device):
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return (f'{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}) has no native bf16: CUDA '
            f'emulates it, several times slower than fp32; {FP32_ADVICE}')


def environment_line(device: torch.device) -> str:
    """torch version, the device, and its bf16 support, in one line."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device.index or 0) if device.type == 'cuda' else 'cpu'
    advice = bf16_advice(device)
    return f'torch {torch.__version__}, {name}: bf16 ' + ('native' if advice is None else f'EMULATED - {advice}')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='torch, the device and its bf16 support')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    print(environment_line(torch.device(parser.parse_args(argv).device)))


if __name__ == '__main__':
    main()
