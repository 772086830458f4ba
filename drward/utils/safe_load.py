"""Reading every file drward loads, without running code from it (tensors, plain containers and numbers only).

Every reader in drward goes through this module; none calls ``pickle.load`` or ``torch.load(weights_only=False)``.

* ``.safetensors`` files: read by safetensors (no pickle at all).
* Weights (official checkpoints, drward's ``net_*`` files, LoRA files, the FRM, face and metric models):
  :func:`load_weights` — ``torch.load(weights_only=True)``, torch's restricted unpickler, which only builds tensors,
  containers and numbers. Official files that also pickle training objects (Lightning's callbacks and
  hyper-parameters in SD's or DiffBIR's ``.ckpt``) are scanned first; every global they name outside torch's
  allow-list becomes an :class:`InertObject` subclass of that name. The unpickler "calls" the placeholder, which only
  records its arguments, so the tensors come out and nothing from the file runs (a placeholder the file fills like a
  dict or a list, e.g. Lightning's ``AttributeDict``, becomes a plain ``OrderedDict`` / list). Callers keep only the
  tensors (:func:`split_tensors` lists what is dropped). The file name plays no part in any of this.
* BasicSR training states (``*.state``): :func:`load_training_state` — ``weights_only=True`` plus
  :data:`TRAINING_STATE_GLOBALS`, allow-listed by name; any other global fails, naming it (no placeholders: a resume
  needs every value of the optimiser and scheduler states).
* Third-party readers (pyiqa) run inside :func:`forced_weights_only`.
"""
from __future__ import annotations

import collections
import contextlib
import pickle
import re
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

#: Globals a BasicSR training state may hold beyond torch's own allow-list: ``MultiStepRestartLR`` keeps its
#: milestones in a ``collections.Counter`` (torch ≥ 2.4 allows it already; named here for older versions).
TRAINING_STATE_GLOBALS: Dict[str, Any] = {'collections.Counter': collections.Counter}

# torch's weights-only unpickler refuses these modules outright, even for allow-listed names
_BLOCKED_MODULES = frozenset({'os', 'posix', 'nt', 'sys'}
                             | set(getattr(torch._weights_only_unpickler, '_blocklisted_modules', ())))
_BOILERPLATE = ('Weights only load failed', 'Check the documentation', 'Please file an issue', 'WeightsUnpickler')

MapLocation = Union[str, torch.device, None]


class UnsafeFileError(RuntimeError):
    """A file that cannot be read with tensors, containers and numbers only (or not read at all)."""


class InertObject:
    """Stand-in for a global a file names and the loader does not trust (``qualified_name``).

    Built by the unpickler in place of the real class or function: it records the arguments and the state the file
    gives and never calls, imports or looks up anything.
    """

    qualified_name = ''

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__['inert_args'] = args
        obj.__dict__['inert_state'] = None
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__['inert_state'] = state

    def __repr__(self) -> str:
        return f'<inert {self.qualified_name}>'


class InertList(list):
    """Stand-in for a list subclass a file names (the unpickler appends its items; nothing else runs)."""

    qualified_name = ''

    def __setstate__(self, state: Any) -> None:
        self.inert_state = state


def _inert_dict(qualified_name: str) -> type:
    """Stand-in for a dict subclass (Lightning's ``AttributeDict``): builds a plain ``OrderedDict``, the one dict
    type torch's unpickler both fills and gives attribute state."""
    def build(*args, **kwargs):
        return collections.OrderedDict()
    return type(qualified_name, (InertObject,), {'qualified_name': qualified_name, '__module__': __name__,
                                                 '__new__': staticmethod(lambda cls, *a, **k: build())})


def inert_placeholders(names: Sequence[str], lists: Sequence[str] = (), dicts: Sequence[str] = ()
                       ) -> List[Tuple[type, str]]:
    """``(placeholder class, qualified name)`` pairs for ``torch.serialization.safe_globals``; ``lists`` / ``dicts``:
    names the file fills like a list / a dict. Each class is named after the global, so errors name it."""
    def placeholder(name: str) -> type:
        if name in dicts:
            return _inert_dict(name)
        base = InertList if name in lists else InertObject
        return type(name, (base,), {'qualified_name': name, '__module__': __name__})
    return [(placeholder(name), name) for name in sorted(set(names))]


def foreign_globals(path: str) -> Optional[List[str]]:
    """The globals a ``torch.save`` zip file names outside torch's allow-list, found without unpickling (torch's
    static scan of ``data.pkl``); ``None`` for files in another format (legacy ``torch.save``, plain pickle)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError):
        return None


def _reason(error: BaseException) -> str:
    """The informative line of a ``torch.load`` error (torch wraps it in a paragraph about ``weights_only``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return (useful or lines or [type(error).__name__])[0]


def _refuse_blocked(path: str, names: Sequence[str]) -> None:
    """Globals from modules no checkpoint needs (``os``, ``sys``: shell commands, interpreter state) — torch refuses
    them even by name; say so before unpickling anything."""
    blocked = [name for name in names if name.split('.', 1)[0] in _BLOCKED_MODULES]
    if blocked:
        raise UnsafeFileError(f'{path}: names {", ".join(blocked[:4])}, which no weights file needs (a code payload?); '
                              f'refusing to load it')


def _load(path: str, map_location: MapLocation, allowed: Sequence[Tuple[Any, str]], mmap: bool = False) -> Any:
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError, TypeError) as error:
        raise UnsafeFileError(f'{path}: cannot be read as tensors, containers and numbers only ({_reason(error)}); '
                              f'convert it with tools/convert_weights.py or re-save it as .safetensors') from error


# torch's message when the file fills a placeholder like a container: "Can only SETITEMS for dict, ... but got
# <class 'drward.utils.safe_load.<qualified name>'>" / "Can only append to lists, but got <class ...>"
_FILLED = re.compile(r"Can only (SETITEMS?|append)\b.*got <class '" + re.escape(__name__) + r"\.([^']+)'>")


def _load_with_placeholders(path: str, map_location: MapLocation, foreign: Sequence[str], mmap: bool) -> Any:
    """Load with inert placeholders; a placeholder the file fills like a list or a dict is made one, then retried
    (each retry turns one more name; the file is read again)."""
    lists, dicts = set(), set()
    for _ in range(len(foreign) + 1):
        try:
            return _load(path, map_location, inert_placeholders(foreign, lists, dicts), mmap)
        except UnsafeFileError as error:
            match = _FILLED.search(str(error.__cause__))
            if not match or match.group(2) in lists | dicts or match.group(2) not in foreign:
                raise
            (dicts if match.group(1).startswith('SETITEM') else lists).add(match.group(2))
    raise AssertionError('unreachable: every foreign name was turned')


def load_weights(path: str, map_location: MapLocation = 'cpu', mmap: bool = False) -> Any:
    """The object a weights file holds (a ``dict`` of tensors for ``.safetensors``), built without running code.

    Globals outside torch's allow-list become :class:`InertObject` instances (named in a warning); use
    :func:`split_tensors` or a state-dict reader to keep the tensors. ``mmap``: map a ``torch.save`` zip file's
    storages instead of reading them (``.safetensors`` files are always mapped).
    """
    path = str(path)
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return dict(load_file(path, device='cpu' if map_location is None else str(map_location)))
        except SafetensorError as error:
            raise UnsafeFileError(f'{path}: not a readable .safetensors file ({error})') from error
    foreign = foreign_globals(path) or []
    _refuse_blocked(path, foreign)
    if foreign:
        warnings.warn(f'{path}: pickles objects of {len(foreign)} type(s) besides tensors '
                      f'({", ".join(foreign[:4])}{", ..." if len(foreign) > 4 else ""}); they are read as inert '
                      f'placeholders, only the tensors are used')
    return _load_with_placeholders(path, map_location, foreign, mmap)


def load_training_state(path: str, map_location: MapLocation = 'cpu') -> Dict[str, Any]:
    """A BasicSR training state (``{'epoch', 'iter', 'optimizers', 'schedulers', ...}``), with ``weights_only=True``
    plus :data:`TRAINING_STATE_GLOBALS`; a file naming any other global fails before anything is unpickled."""
    path = str(path)
    foreign = [name for name in foreign_globals(path) or [] if name not in TRAINING_STATE_GLOBALS]
    if foreign:
        raise UnsafeFileError(f'{path}: a training state holds tensors, numbers and containers only, but this file '
                              f'names {", ".join(foreign[:6])}; refusing to load it')
    state = _load(path, map_location, [(obj, name) for name, obj in TRAINING_STATE_GLOBALS.items()])
    if not isinstance(state, Mapping) or 'iter' not in state:
        raise UnsafeFileError(f'{path}: not a BasicSR training state (no "iter" entry)')
    return state


def _key_text(key: Any) -> str:
    """A dict key as text; a placeholder class by the name the file gave."""
    return key.qualified_name if isinstance(key, type) and issubclass(key, InertObject) else str(key)


def _describe(leaf: Any) -> str:
    return repr(leaf) if isinstance(leaf, (InertObject, type)) else type(leaf).__name__


def split_tensors(obj: Any, prefix: str = '') -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Walk nested dicts / lists / tuples: ``(tensors by dotted key, "key (type)" of every non-tensor leaf)``."""
    tensors: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}, []
    if isinstance(obj, Mapping):
        items = [(_key_text(key), value) for key, value in obj.items()]
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, Mapping, list, tuple)) for v in obj):
        items = [(str(index), value) for index, value in enumerate(obj)]
    else:
        return {}, [f'{prefix or "<root>"} ({_describe(obj)})']
    for key, value in items:
        sub_tensors, sub_dropped = split_tensors(value, f'{prefix}.{key}' if prefix else key)
        tensors.update(sub_tensors)
        dropped.extend(sub_dropped)
    return tensors, dropped


@contextlib.contextmanager
def forced_weights_only() -> Iterator[None]:
    """Within the block every ``torch.load`` runs with ``weights_only=True``, whatever its caller passes: for
    third-party code that reads a user's file with ``weights_only=False`` (pyiqa's CLIP-IQA+ prompts, BRISQUE)."""
    original = torch.load

    def load(*args, **kwargs):
        kwargs['weights_only'] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
