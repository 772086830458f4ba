"""Is bf16 fast here, and which precision does ``auto`` choose? bf16 is drward's only reduced precision
(``mixed_precision: bf16``, ``weight_dtype: bf16``). It is native on CUDA from compute capability 8.0 (Ampere) and on
CPUs with AMX or AVX-512 BF16 (``amx_bf16`` / ``avx512_bf16`` in ``/proc/cpuinfo``; without that file, one short
matmul measurement decides). Elsewhere it is emulated: pre-Ampere GPUs (T4, V100) several times slower than fp32,
AVX2-only CPUs 24-30x slower (docs/speed.md). ``weight_dtype: auto`` and ``mixed_precision: auto`` pick bf16 only
where it is native (:func:`choose_precision`), and one start-up line says what was chosen and why
(:func:`log_choice`). An explicit ``bf16`` on an emulating device gets :func:`bf16_advice` at the start of training.

    python -m drward.utils.precision_check --device cuda     # one line: torch, the device, bf16 support
"""
from __future__ import annotations

import argparse
import functools
import platform
import time
from dataclasses import dataclass
from typing import Optional, Set, Tuple

import torch

FP32_ADVICE = ("set train.mixed_precision: 'no' and weight_dtype: fp32 (network_g and reward_opt.frm) — about 1.5× "
               "the memory of the bf16 recipe (benchmarks/memory_budget.py --weight-dtype fp32) — or use an Ampere or "
               "newer GPU (compute capability ≥ 8.0)")


CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')  # /proc/cpuinfo flags of CPUs with bf16 instructions
MEASURE_NATIVE_RATIO = 2.0  # bf16 matmul at most this many times slower than fp32: native (emulated is ~24x)


def cpu_flags(path: str = '/proc/cpuinfo') -> Optional[Set[str]]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where that file cannot be read."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                if line.startswith('flags'):
                    return set(line.partition(':')[2].split())
    except OSError:
        return None
    return None


def cpu_model_name(path: str = '/proc/cpuinfo') -> str:
    """``model name`` from ``/proc/cpuinfo``, else :func:`platform.processor`, else ``'cpu'``."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                if line.startswith('model name'):
                    return line.partition(':')[2].strip()
    except OSError:
        pass
    return platform.processor() or 'cpu'


def measured_bf16_ratio(size: int = 256, repeats: int = 3) -> float:
    """Seconds of a ``size``³ bf16 matmul over the same fp32 matmul (best of ``repeats``): ~1 where bf16 is native,
    ~24 where it is emulated (AVX2 only)."""
    a = torch.randn(size, size)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        torch.mm(x, x)  # warm-up
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(x, x)
            best = min(best, time.perf_counter() - start)
        times[dtype] = best
    return times[torch.bfloat16] / max(times[torch.float32], 1e-9)


@functools.lru_cache(maxsize=None)
def cpu_bf16_support() -> Tuple[bool, str]:
    """(native, why) for this CPU. From the ``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16`` (the bf16
    instructions oneDNN uses); where that file is missing (macOS, Windows) one short measurement decides
    (:func:`measured_bf16_ratio` at most :data:`MEASURE_NATIVE_RATIO`). Decided once per process."""
    name, capability = cpu_model_name(), torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if flags is not None:
        found = [f for f in CPU_BF16_FLAGS if f in flags]
        if found:
            return True, f'{name} ({capability}) has {"/".join(found)}: bf16 native'
        return False, f'{name} ({capability}) has no amx_bf16/avx512_bf16: bf16 would be emulated, many times slower'
    ratio = measured_bf16_ratio()
    native = ratio <= MEASURE_NATIVE_RATIO
    return native, (f'{name} ({capability}): a bf16 matmul took {ratio:.1f}x the fp32 time: bf16 '
                    f'{"native" if native else "emulated"}')


def cuda_bf16_support(device: torch.device) -> Tuple[bool, str]:
    """(native, why) for a CUDA device: native from compute capability 8.0 (Ampere) on."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    native = (major, minor) >= (8, 0)
    return native, (f'{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}): bf16 '
                    f'{"native" if native else "emulated by CUDA, several times slower than fp32"}')


def bf16_support(device: torch.device) -> Tuple[bool, str]:
    """(native, why) for ``device``: CUDA by compute capability, the CPU by its bf16 instructions; any other device
    kind (mps, xpu, ...) is not assumed native."""
    device = torch.device(device)
    if device.type == 'cuda':
        return cuda_bf16_support(device)
    if device.type == 'cpu':
        return cpu_bf16_support()
    return False, f'{device.type}: bf16 not known to be native here'


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (:func:`bf16_support`)."""
    return bf16_support(device)[0]


def bf16_advice(device: torch.device) -> Optional[str]:
    """None when bf16 is native on ``device``; else one line saying why it is slow there and what to set."""
    native, why = bf16_support(device)
    return None if native else f'{why}; {FP32_ADVICE}'


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` (or an explicit value) resolved to on a device: ``name`` is ``'bf16'`` or ``'fp32'``."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == 'bf16' else torch.float32


def default_device() -> torch.device:
    """The device a model built now will most likely run on: CUDA when visible (BasicSR's ``num_gpu: auto``)."""
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def choose_precision(requested: Optional[str], device: Optional[torch.device] = None) -> PrecisionChoice:
    """Resolve ``weight_dtype`` / ``mixed_precision``: ``auto`` is bf16 where ``device`` runs it natively (CUDA
    compute capability ≥ 8.0; a CPU with AMX or AVX-512 BF16), fp32 everywhere else. ``bf16`` / ``fp32`` (and
    ``'no'`` for mixed precision) are kept as set."""
    device = torch.device(device) if device is not None else default_device()
    if requested in (None, 'fp32', 'no'):
        return PrecisionChoice('fp32', 'set to fp32')
    if requested == 'bf16':
        return PrecisionChoice('bf16', 'set to bf16')
    if requested != 'auto':
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {requested!r}")
    native, why = bf16_support(device)
    return PrecisionChoice('bf16' if native else 'fp32', f'auto on {device}: {why}')


_LOGGED: Set[Tuple[str, str, str]] = set()


def log_choice(owner: str, choice: PrecisionChoice) -> None:
    """One start-up line per (owner, choice): ``<owner>: precision bf16 (auto on cpu: ... bf16 native)``."""
    key = (owner, choice.name, choice.reason)
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    from basicsr.utils import get_root_logger
    get_root_logger().info(f'{owner}: precision {choice.name} ({choice.reason})')


def mixed_precision_dtype(requested: Optional[str], device: torch.device, owner: str) -> Optional[torch.dtype]:
    """``train.mixed_precision`` (``'no'`` | ``'bf16'`` | ``'auto'``) → the autocast dtype (None: fp32). ``auto`` is
    resolved for ``device`` and logged once; other values raise ``ValueError`` naming the accepted ones."""
    requested = 'no' if requested is None else requested
    if requested not in ('no', 'bf16', 'auto'):
        raise ValueError(f"{owner}: train.mixed_precision must be one of ['auto', 'bf16', 'no'], got {requested!r}")
    choice = choose_precision(requested, device)
    if requested == 'auto':
        log_choice(f'{owner} mixed_precision', choice)
    return torch.bfloat16 if choice.name == 'bf16' else None


def environment_line(device: torch.device) -> str:
    """torch version, the device, and its bf16 support, in one line."""
    device = torch.device(device)
    native, why = bf16_support(device)
    return f'torch {torch.__version__}, {device}: ' + (why if native else f'EMULATED - {why}; {FP32_ADVICE}')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='torch, the device and its bf16 support')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    print(environment_line(torch.device(parser.parse_args(argv).device)))


if __name__ == '__main__':
    main()
