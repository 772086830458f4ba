"""Noise for a batch of restorations where each row has its own generator.

A restoration draws ``z_T ~ N(0, I)`` and, where ``σ_t(η) > 0``, one DDIM noise ``n`` per update. Restored alone,
a face draws them from its own generator ``g`` (seeded from the face: its index in the sorted test set, or the
tool's seed). Restored in a batch of B faces, row ``r`` draws the same tensors from generator ``g_r``:

    noise[r] = randn((1, C, h, w), generator=g_r)        (r = 0 … B − 1)

so a face's noise does not depend on the batch size, the batch's other faces, the rank or the order. A single
generator (today's calls) draws the whole ``(B, C, h, w)`` tensor at once, unchanged; a list of one generator
draws exactly what that one generator would. diffusers' ``randn_tensor`` (the VAE posterior sample of OSEDiff)
follows the same rule for a list of generators.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch

#: One generator for the whole batch, or one per row.
Generators = Union[torch.Generator, Sequence[torch.Generator]]


def is_per_row(generator: Optional[Generators]) -> bool:
    """True for a sequence of generators (one per row)."""
    return generator is not None and not isinstance(generator, torch.Generator)


def generator_device(generator: Optional[Generators], default: Union[str, torch.device] = 'cpu') -> torch.device:
    """Where ``generator`` draws (the first one's device for a sequence), else ``default``."""
    if generator is None:
        return torch.device(default)
    return (generator[0] if is_per_row(generator) else generator).device


def randn(shape: Sequence[int], generator: Optional[Generators], dtype: torch.dtype = torch.float32,
          device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """``N(0, I)`` of ``shape``, on the generator's device (``device`` when there is none): one draw from one
    generator, or row ``r`` drawn from ``generator[r]``."""
    shape = tuple(shape)
    if not is_per_row(generator):
        where = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=where, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f'{len(generator)} generators for a batch of {shape[0]} rows')
    return torch.cat([torch.randn((1,) + shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator])


def seeded(seeds: Union[int, Sequence[int]], device: Union[str, torch.device] = 'cpu') -> Generators:
    """``torch.Generator(device).manual_seed(seed)`` for one seed, a list of them for a sequence of seeds."""
    if isinstance(seeds, int):
        return torch.Generator(device).manual_seed(seeds)
    generators: List[torch.Generator] = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
    return generators
