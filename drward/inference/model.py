"""The restorer behind ``tools/restore.py``: ``network_g`` of an option file, an optional trained checkpoint, the
sampling and precision choices of the command line.

* ``--opt options/refl_diffbir.yml [--checkpoint experiments/refl_diffbir/models/net_g_3500.safetensors]``: the real
  restorer (its weight files must exist; each missing one is named, with its option key, before any image is read);
* ``--tiny``: ``network_g`` of ``options/refl_<restorer>_tiny.yml``, tiny random models (CPU demos and tests).

Faces are restored with :func:`drward.archs.restorer.restore_seeded` (no gradient), one at a time or
``--batch-size`` at once, each face's noise drawn from its own generator seeded with ``seed``, so a face's result
does not depend on the other faces of the photo or of the batch.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from drward.archs.restorer import Restorer, load_restorer_weights, restore_seeded, trained_part_file
from drward.inference.photos import resize_to
from drward.utils.option_schema import declared_options
from drward.utils.options import MissingWeightsError, OptionError, find_missing_weights, missing_weight_message
from drward.utils.precision_check import PrecisionChoice, choose_precision
from drward.utils.user_modules import import_user_module

TINY_OPTION_FILES = {'diffbir': 'options/refl_diffbir_tiny.yml', 'osediff': 'options/refl_osediff_tiny.yml'}
WEIGHT_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def add_restorer_arguments(group: argparse._ActionsContainer, steps_help: str) -> None:
    """The command-line options that choose and configure the restorer, shared by ``tools/restore.py`` and
    ``tools/app.py``: ``--opt``, ``--checkpoint``, ``--tiny``, ``--restorer``, ``--steps``, ``--seed``,
    ``--weight-dtype``, ``--device``, ``--batch-size``."""
    group.add_argument('--opt', help='option file whose network_g is the restorer (e.g. options/refl_diffbir.yml)')
    group.add_argument('--checkpoint', help='trained part of the restorer (net_g_<iter>.safetensors of a ReFL run)')
    group.add_argument('--tiny', action='store_true', help='tiny random models, no weight files (demo, tests)')
    group.add_argument('--restorer', choices=('diffbir', 'osediff'), default='diffbir', help='which tiny restorer')
    group.add_argument('--steps', type=int, help=steps_help)
    group.add_argument('--seed', type=int, default=0, help='seed of the sampling noise (same for every face)')
    group.add_argument('--weight-dtype', choices=('auto', 'fp32', 'bf16'), default='auto',
                       help='auto (default): bf16 where the device runs it natively (CUDA compute capability >= 8.0, '
                            'a CPU with AMX or AVX-512 BF16), fp32 elsewhere')
    group.add_argument('--device', default='auto', help='auto (cuda if available), cpu, cuda, cuda:1, ...')
    group.add_argument('--batch-size', type=int, default=1,
                       help='aligned faces restored in one network call, across the faces of a photo and across '
                            'photos (default 1; each face keeps its own noise, the result within 1 DN of batch 1)')


def arch_option_keys(arch_type: str) -> List[str]:
    """The option keys a registered restorer accepts: the options it declares (drward's restorers,
    :func:`~drward.utils.option_schema.declared_options`) when its constructor takes ``**opts``, else its named
    arguments."""
    cls = ARCH_REGISTRY.get(arch_type)
    params = inspect.signature(cls.__init__).parameters
    named = [name for name, p in params.items() if name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    declared = list(declared_options(cls))
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return declared or named
    return named  # a subclass with its own named arguments takes those (it inherits the base's declarations only)


def resolve_weight_dtype(network_opt: Dict, name: Optional[str], device: torch.device) -> PrecisionChoice:
    """``--weight-dtype`` (``auto`` | ``fp32`` | ``bf16``; None keeps the option file's ``network_g.weight_dtype``,
    else fp32) resolved for ``device``: ``auto`` is bf16 only where ``device`` runs it natively."""
    name = name if name is not None else network_opt.get('weight_dtype', 'fp32')
    if name not in (*WEIGHT_DTYPES, 'auto'):
        raise OptionError(f'--weight-dtype must be one of {sorted(WEIGHT_DTYPES) + ["auto"]}, got {name!r}')
    return choose_precision(name, device)


def weight_dtype_choice(network_opt: Dict, accepted: List[str], name: Optional[str]) -> Optional[torch.dtype]:
    """Apply a resolved ``--weight-dtype`` (``fp32`` | ``bf16``; None keeps the option file's): the restorer's own
    ``weight_dtype`` option where it has one (set in ``network_opt``); otherwise the dtype to autocast the
    restoration to (None for fp32). Casting the whole module is no substitute: BasicSR's SwinIR (DiffBIR's stage 1)
    builds float32 attention masks."""
    if name is None:
        return None
    if name not in WEIGHT_DTYPES:
        raise OptionError(f'--weight-dtype must be one of {sorted(WEIGHT_DTYPES)}, got {name!r}')
    if 'weight_dtype' in accepted:
        network_opt['weight_dtype'] = name
        return None
    return None if name == 'fp32' else WEIGHT_DTYPES[name]


def read_network_options(opt_path: str) -> Dict:
    """``network_g`` of an option file; :class:`OptionError` names a file without one."""
    with open(opt_path, encoding='utf-8') as handle:
        opt = yaml.safe_load(handle) or {}
    if not isinstance(opt.get('network_g'), Mapping):
        raise OptionError(f'option file {opt_path} has no network_g section (the restorer to build)')
    for name in opt.get('host_packages') or []:  # a user's restorer module registers itself when imported
        import_user_module(name, f'{opt_path}: host_packages')
    return copy.deepcopy(dict(opt['network_g']))


def check_weight_files(network_opt: Mapping, checkpoint: Optional[str], opt_path: Optional[str] = None) -> None:
    """Raise :class:`MissingWeightsError` with one line per absent weight file (``network_g`` keys, checkpoint),
    each naming the command that fetches the option file's weights."""
    option_file = os.path.relpath(opt_path) if opt_path else None
    lines = [missing_weight_message(path, f'network_g.{key}', option_file)
             for key, path in find_missing_weights(network_opt)]
    if checkpoint and not os.path.isfile(trained_part_file(checkpoint)):
        lines.append(f'missing checkpoint file {checkpoint} (--checkpoint; a net_g_<iter>.safetensors written by '
                     'ReFL training)')
    if lines:
        raise MissingWeightsError('\n'.join(lines))


@dataclass
class FaceRestorer:
    """A built restorer and how to call it on aligned faces."""

    net: Restorer
    device: torch.device
    autocast: Optional[torch.dtype]
    description: str
    seed: int = 0

    def restore_face(self, face_rgb: np.ndarray) -> np.ndarray:
        """One aligned face ``(S, S, 3)`` RGB uint8 → the restored face, same shape."""
        return self.restore_faces(face_rgb[None])[0]

    def restore_faces(self, faces_rgb: np.ndarray) -> np.ndarray:
        """Aligned faces ``(N, S, S, 3)`` RGB uint8 → the restored faces, in one network call; each face draws its
        noise from its own generator seeded with ``seed`` (:mod:`drward.diffusion.row_noise`), so its result does
        not depend on the other faces of the batch (up to the network's batch-size kernels: ±1 DN measured)."""
        size = faces_rgb.shape[1]
        lq = torch.from_numpy(faces_rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(self.device)
        context = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                   else nullcontext())
        with context:
            out = restore_seeded(self.net, lq, None, self.seed if len(lq) == 1 else [self.seed] * len(lq))
        imgs = (out.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
        return np.stack([resize_to(img, size, size) for img in imgs])


def pick_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def build_face_restorer(opt_path: Optional[str] = None, tiny: bool = False, restorer: str = 'diffbir',
                        checkpoint: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
                        weight_dtype: Optional[str] = 'auto', device: str = 'auto') -> FaceRestorer:
    """Build the restorer of ``opt_path`` (or the tiny one of ``restorer``), load ``checkpoint`` (its trained part),
    set ``steps`` (DDIM steps, restorers that sample) and the weight dtype. Missing weight files raise
    :class:`MissingWeightsError` (all of them, one line each) before anything is built."""
    if not opt_path and not tiny:
        raise OptionError('give the restorer: --opt <option file with network_g> (real weights) or --tiny')
    if tiny and not opt_path:
        opt_path = TINY_OPTION_FILES[restorer]
    network_opt = read_network_options(opt_path)
    check_weight_files(network_opt, checkpoint, opt_path)
    accepted = arch_option_keys(network_opt.get('type', ''))
    notes = []
    if steps is not None:
        if 'num_steps' in accepted:
            network_opt['num_steps'] = int(steps)
        else:
            notes.append(f'--steps {steps} ignored: {network_opt["type"]} restores in one step')
    target = pick_device(device)
    precision = resolve_weight_dtype(network_opt, weight_dtype, target)
    autocast = weight_dtype_choice(network_opt, accepted, precision.name)
    net = build_network(network_opt)
    if not isinstance(net, Restorer):
        raise OptionError(f'{opt_path}: network_g type {network_opt.get("type")} is not a drward Restorer')
    if checkpoint:
        try:
            load_restorer_weights(net, checkpoint)
        except (RuntimeError, KeyError) as error:
            raise OptionError(f'checkpoint {checkpoint} does not fit network_g of {opt_path}: '
                              f'{str(error).splitlines()[0]}') from error
    net = net.to(target).eval()
    tiny_note = ('TINY random weights (a plumbing demo: faces come out as noise, not restorations)'
                 if getattr(net, 'is_tiny', False) else 'real weights')
    parts = [f'{network_opt["type"]} from {opt_path}', tiny_note,
             f'checkpoint {checkpoint}' if checkpoint else 'no checkpoint (the option file\'s weights)',
             f'{network_opt["num_steps"]} DDIM steps' if 'num_steps' in network_opt else None,
             f'seed {seed}', f'{precision.name} weights{" (autocast)" if autocast is not None else ""} '
             f'({precision.reason})', str(target)]
    description = ', '.join(p for p in parts if p) + ''.join(f'\n  note: {n}' for n in notes)
    return FaceRestorer(net, target, autocast, description, seed)
