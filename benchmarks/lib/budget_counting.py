"""Counting the bytes a built model holds, per component (:mod:`benchmarks.memory_budget`'s weight rows): every tensor
reachable from a module — parameters, buffers, tensor attributes (a compute copy, a θ₀ snapshot) — each storage
once, split into frozen and trained by dtype."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn


# ---------------------------------------------------------------------------------------------------- weights
def _flatten(value, depth: int = 3) -> List:
    """``value``, or the items of a dict / list / tuple, nested up to ``depth`` levels (a cache ``(key, {name:
    tensor})``, a list of pairs)."""
    if depth and isinstance(value, dict):
        return [item for v in value.values() for item in _flatten(v, depth - 1)]
    if depth and isinstance(value, (list, tuple)):
        return [item for v in value for item in _flatten(v, depth - 1)]
    return [value]


def _attribute_values(obj) -> List:
    """An object's attribute values, containers flattened (module internals skipped)."""
    return [item for name, value in vars(obj).items() if name not in ('_parameters', '_buffers', '_modules')
            for item in _flatten(value)]


def reachable_tensors(module: nn.Module, depth: int = 2) -> Iterator[torch.Tensor]:
    """Parameters, buffers, tensors held as attributes of any submodule (directly or in a dict/list/tuple), and the
    same for modules held by a plain attribute object (a compute copy's parameter-less twin, whose cast weights
    are attributes), ``depth`` levels deep."""
    yield from module.parameters()
    yield from module.buffers()
    for sub in module.modules():
        for value in _attribute_values(sub):
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                yield value
            elif depth and not isinstance(value, nn.Module) and hasattr(value, '__dict__'):
                held = [v for v in _attribute_values(value) if isinstance(v, nn.Module)]
                for inner in held:
                    yield from reachable_tensors(inner, depth - 1)


@dataclass
class Component:
    """Bytes one module holds: ``frozen`` / ``trained`` by dtype name (trained = a parameter with ``requires_grad``;
    frozen = everything else: frozen parameters, buffers, compute copies and caches)."""

    name: str
    frozen: Dict[str, int] = field(default_factory=dict)
    trained: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.frozen.values()) + sum(self.trained.values())

    @property
    def trained_bytes(self) -> int:
        return sum(self.trained.values())


def count_components(named: Sequence[Tuple[str, nn.Module]]) -> List[Component]:
    """One :class:`Component` per module, each tensor (by storage, or identity on the meta device) counted once."""
    seen, components = set(), []
    for name, module in named:
        component = Component(name)
        for tensor in reachable_tensors(module):
            ptr = tensor.untyped_storage().data_ptr()
            key = ('ptr', ptr) if ptr else ('id', id(tensor))
            if key in seen:
                continue
            seen.add(key)
            trained = isinstance(tensor, nn.Parameter) and tensor.requires_grad  # a cast is never trained itself
            side = component.trained if trained else component.frozen
            dtype = str(tensor.dtype).replace('torch.', '')
            side[dtype] = side.get(dtype, 0) + tensor.numel() * tensor.element_size()
        if component.total:
            components.append(component)
    return components


HELD_OUTSIDE = 'restorer: held outside its submodules (compute copy, caches)'
FRM_CASTS = 'FRM: cached bf16 casts of its trained half'


def frm_cast_cache(frm: nn.Module) -> nn.Module:
    """A holder of the FRM's cached casts that are copies (a bf16-stored locked weight is its own cast)."""
    params = dict(frm.named_parameters(prefix='clip')) if hasattr(frm, 'clip') else {}
    cache = getattr(frm, '_frozen_casts', (None, {}))[1]
    holder = nn.Module()
    holder.casts = [t for name, t in cache.items() if t is not params.get(f'clip.{name}')]
    return holder


def named_components(net: nn.Module, frm: nn.Module, losses: Sequence[nn.Module]) -> List[Tuple[str, nn.Module]]:
    """The restorer's children (its SD parts one by one), the FRM, the other loss modules."""
    named = []
    for name, child in net.named_children():
        sd_parts = name == 'sd' and hasattr(child, 'unet')
        named += [(f'{name}.{sub}', module) for sub, module in child.named_children()] if sd_parts else [(name, child)]
    named.append((HELD_OUTSIDE, net))
    named.append((FRM_CASTS, frm_cast_cache(frm)))
    named.append(('FRM', frm))
    named += [(type(loss).__name__, loss) for loss in losses]
    return named
