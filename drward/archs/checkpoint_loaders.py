"""The official-checkpoint loaders, looked up by name: the restorers use them, :mod:`drward.weights` provides them.

The converters in ``drward/weights/`` read the published files (SD 2.1, DiffBIR, OSEDiff) into archs' building
blocks (``sd_parts``, ``ircontrolnet``, ``face_swinir``, ``lora``), so they sit one layer above archs
(docs/design.md, "Layers"). The restorers need them when BasicSR builds one. Instead of importing upward, a restorer
asks this table for its loader by name, and each ``drward/weights/`` module adds its loaders with
:func:`checkpoint_loader` when it is imported. ``import drward`` imports :mod:`drward.weights`, so the table is full
whenever a restorer is built (importing any ``drward.*`` module runs ``drward/__init__.py`` first).

Names and what they load (the signature is the loader's own):

* ``sd``: SD 2.1 single file or diffusers folder → ``SDParts`` (:func:`drward.weights.sd.load_sd_weights`);
* ``diffbir_controlnet``, ``face_swinir``: DiffBIR's IRControlNet and stage-1 SwinIR (:mod:`drward.weights.diffbir`);
* ``osediff_lora_file``, ``osediff_lora``: read an OSEDiff LoRA file, load its factors (:mod:`drward.weights.osediff`).
"""
from __future__ import annotations

from typing import Callable, Dict, TypeVar

Loader = TypeVar('Loader', bound=Callable)
_LOADERS: Dict[str, Callable] = {}


def _qualified(function: Callable) -> str:
    return f'{function.__module__}.{function.__qualname__}'


def checkpoint_loader(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``function`` as the loader called ``name`` (a second, different function of the same name
    is refused; the same function again, e.g. after a module reload, replaces it)."""
    def add(function: Loader) -> Loader:
        known = _LOADERS.get(name)
        if known is not None and _qualified(known) != _qualified(function):
            raise ValueError(f'checkpoint loader {name!r} is already {_qualified(known)}; '
                             f'{_qualified(function)} cannot take its name')
        _LOADERS[name] = function
        return function
    return add


def loader(name: str) -> Callable:
    """The loader registered as ``name``; one clear error when none is (drward.weights was not imported)."""
    try:
        return _LOADERS[name]
    except KeyError:
        raise LookupError(f'no checkpoint loader {name!r} is registered (registered: {sorted(_LOADERS)}); '
                          f'`import drward` (or drward.weights) registers the official-checkpoint loaders') from None
