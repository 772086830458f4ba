"""Reading checkpoint files and accounting for every key a converter consumes, ignores or misses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from drward.utils.safe_load import load_weights

StateDict = Dict[str, torch.Tensor]


class ConversionError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into (missing or left-over keys, wrong shapes)."""


@dataclass
class ConversionReport:
    """What one conversion did with the source keys.

    ``consumed``: source keys whose tensors ended up in the model; ``ignored``: source keys known to be unused
    (e.g. the text tower's last block, read at the penultimate layer; the noise-schedule buffers); ``unconsumed``:
    source keys nobody used (a layout mismatch); ``missing``: model keys no source key filled.
    """

    name: str
    consumed: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    unconsumed: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unconsumed and not self.missing

    def merge(self, other: 'ConversionReport') -> 'ConversionReport':
        """Reports of parts of one checkpoint (UNet, VAE, text): a key is unconsumed only if no part used it."""
        used = set(self.consumed) | set(other.consumed) | set(self.ignored) | set(other.ignored)
        left = sorted((set(self.unconsumed) | set(other.unconsumed)) - used)
        return ConversionReport(f'{self.name}+{other.name}', sorted(set(self.consumed) | set(other.consumed)),
                                sorted(set(self.ignored) | set(other.ignored)), left,
                                sorted(set(self.missing) | set(other.missing)))

    def summary(self, limit: int = 5) -> str:
        def head(keys: List[str]) -> str:
            return ', '.join(keys[:limit]) + (f', … (+{len(keys) - limit})' if len(keys) > limit else '')
        text = f'{self.name}: {len(self.consumed)} keys loaded, {len(self.ignored)} ignored'
        if self.unconsumed:
            text += f'; {len(self.unconsumed)} unused: {head(self.unconsumed)}'
        if self.missing:
            text += f'; {len(self.missing)} missing: {head(self.missing)}'
        return text

    def raise_if_incomplete(self) -> 'ConversionReport':
        if not self.complete:
            raise ConversionError(self.summary(limit=10))
        return self


def load_state_dict_file(path: str) -> StateDict:
    """Tensors of a ``.ckpt``/``.pth``/``.pt``/``.bin`` (unwrapping ``state_dict`` / ``params_ema`` / ``params`` and
    a ``module.`` prefix, as DiffBIR's and BasicSR's loaders do) or a ``.safetensors`` file, on the CPU, read by
    :func:`~drward.utils.safe_load.load_weights` (nothing from the file runs; pickled non-tensor objects are
    dropped)."""
    return state_dict_of(load_weights(path), path)


def state_dict_of(state: object, path: str) -> StateDict:
    """The tensors :func:`load_state_dict_file` takes from the object a file holds (``path`` names it in errors)."""
    for wrapper in ('state_dict', 'params_ema', 'params'):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise ConversionError(f'{path} does not hold a state dict')
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def _storage_key(tensor: torch.Tensor) -> Tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


def converted_sources(source: Mapping[str, torch.Tensor], converted: Mapping[str, Optional[torch.Tensor]],
                      ) -> List[str]:
    """Source keys whose tensor (or a view of it) appears among the converted values, matched by storage."""
    where = {_storage_key(t): k for k, t in source.items() if isinstance(t, torch.Tensor) and t.numel()}
    found = set()
    for tensor in converted.values():
        if isinstance(tensor, torch.Tensor) and tensor.numel():
            key = where.get(_storage_key(tensor))
            if key is not None:
                found.add(key)
    return sorted(found)


def load_converted(module: nn.Module, converted: Mapping[str, Optional[torch.Tensor]], source: Mapping,
                   name: str, ignored: Iterable[str] = (),
                   consumed: Optional[Callable[[], List[str]]] = None) -> ConversionReport:
    """Load ``converted`` into ``module`` (shapes must match) and report on the ``source`` keys.

    Model keys absent from ``converted`` (or mapped to ``None``) are reported missing and keep their values;
    converted keys the model lacks are an error (a converter bug). ``consumed`` overrides the storage matching. A
    module built on the meta device (:func:`drward.archs.materialize.empty_weights`) is materialised by assignment.
    """
    converted = {k: v for k, v in converted.items() if v is not None}
    model_state = module.state_dict()
    extra = sorted(set(converted) - set(model_state))
    if extra:
        raise ConversionError(f'{name}: converted keys the model lacks: {extra[:10]}')
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(model_state[key].shape):
            raise ConversionError(f'{name}: {key} has shape {tuple(tensor.shape)} in the checkpoint, '
                                  f'{tuple(model_state[key].shape)} in the model')
    if any(p.is_meta for p in module.parameters()):
        # built empty (drward.archs.materialize): take the checkpoint's tensors, cast to each parameter's declared
        # dtype, instead of copying them into a second, allocated set of weights
        module.load_state_dict({k: t.to(model_state[k].dtype) for k, t in converted.items()}, strict=False,
                               assign=True)
    else:
        module.load_state_dict(converted, strict=False)
    used = consumed() if consumed is not None else converted_sources(source, converted)
    ignored = sorted(set(ignored) & set(source))
    left = sorted(set(source) - set(used) - set(ignored))
    return ConversionReport(name, used, ignored, left, sorted(set(model_state) - set(converted)))
