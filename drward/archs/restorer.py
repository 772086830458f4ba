"""The one restorer interface ReFLModel drives (docs/design.md, "Interfaces").

A restorer turns LQ faces into restored faces through a latent diffusion chain and exposes:

* :meth:`Restorer.restore` — ``restore(lq, captions, grad_steps=N)`` returns a :class:`RestoreOutput`: the image
  ``Î`` in [-1, 1], with the autograd graph kept over the last ``N`` denoiser calls only, plus the pairs
  ``(c_k^θ, c_k^{θ₀})`` of trained-branch / frozen-reference outputs that the output-space ``L_reg`` needs;
* :meth:`Restorer.trainable_parameters` — exactly the parameters the generator optimiser steps;
* :meth:`Restorer.trained_state_dict` / :meth:`Restorer.load_trained_state_dict` — the trained part only (a
  ControlNet, LoRA adapters), so checkpoints are MBs, not GBs.

Adding a restorer is adding one ``*_arch.py`` file that subclasses :class:`Restorer` (or one of drward's
restorers) and declares the option keys it adds in ``options = {key: Option(spec, default, help)}``; the keys of
its bases are inherited (:func:`~drward.utils.option_schema.declared_options`) and the option file is checked
against all of them (docs/design.md §3).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from basicsr.utils import get_root_logger
from torch import nn

from drward.archs.precision import WEIGHT_DTYPES
from drward.diffusion import row_noise
from drward.utils.atomic_io import atomic_save, unshared
from drward.utils.option_schema import Bool, Choice, Int, Option, declared_options, resolve
from drward.utils.options import OptionError, require_file
from drward.utils.safe_load import load_weights


@dataclass
class RestoreOutput:
    """What one restoration returns.

    Attributes:
        image: ``Î`` (B, 3, H, W) in [-1, 1]; differentiable w.r.t. the trained parameters through the last
            ``grad_steps`` denoiser calls when restoring with gradient.
        reg_pairs: ``[(c_k^θ, c_k^{θ₀}), ...]``: outputs of the trained branch and of its frozen initial copy for
            the same inputs at the gradient step(s); ``RegLoss`` sums ``mean((c_k^θ − c_k^{θ₀})²)`` over them.
        latent: the predicted clean latent ``ẑ_0`` (B, 4, h, w) before decoding.
        stage1: an optional stage-1 (cleaned) image in [-1, 1], used for the wavelet colour fix and for logging.
        info: scalars for the log (stop timestep, η, ...).
    """

    image: torch.Tensor
    reg_pairs: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    latent: Optional[torch.Tensor] = None
    stage1: Optional[torch.Tensor] = None
    info: Dict[str, float] = field(default_factory=dict)


class Restorer(nn.Module):
    """Base class of the diffusion restorers (DiffBIR, OSEDiff). Subclasses implement the four methods."""

    #: human-readable name of the model family, used in logs
    family: str = 'restorer'
    #: True when the weights are tiny random ones (CPU demos and tests); logs say so
    is_tiny: bool = False
    #: True when :meth:`restore_prefixes` is implemented (a multi-step chain with a no-grad prefix)
    has_prefix: bool = False
    #: the option keys every restorer accepts (``network_g``); subclasses add theirs
    options = {
        'tiny': Option(Bool(), False, 'tiny random models (tests, CPU demos); tiny weight files may be given'),
        'random_weights': Option(Bool(), False, 'real sizes without the weight files: RANDOM weights (benchmarks)'),
        'weight_dtype': Option(Choice('auto', *WEIGHT_DTYPES), 'fp32', 'storage dtype of the frozen weights '
                               '(bf16 halves their memory; the trained part stays fp32)'),
        'gradient_checkpointing': Option(Bool(), False, 'activation checkpointing in the big modules'),
        'seed': Option(Int(0), 0, 'seed of the tiny weights and of the default noise generator'),
    }

    @classmethod
    def resolve_options(cls, opts: Mapping) -> Dict:
        """``opts`` (``network_g`` without ``type``) checked against the declared options, defaults filled in."""
        return resolve(cls.__name__, declared_options(cls), opts)

    def restore(self, lq: torch.Tensor, captions: Optional[Sequence[str]] = None, grad_steps: int = 0,
                generator: Optional[torch.Generator] = None, **sampling) -> RestoreOutput:
        """Restore ``lq`` (B, 3, H, W) in [0, 1]. ``grad_steps=0`` restores without gradient (inference)."""
        raise NotImplementedError

    def restore_prefixes(self, lq: torch.Tensor, chunks: Sequence[slice], grad_steps: int,
                         generator: Optional[torch.Generator] = None, max_batch: Optional[int] = None,
                         **sampling) -> List[Dict]:
        """The no-grad prefixes of several training restorations (the micro-batches ``lq[chunk]``) at once, each
        drawing from ``generator`` exactly what ``restore(lq[chunk], grad_steps=…)`` would, chunk after chunk.
        Returns one dict per chunk: the keyword arguments that make ``restore(lq[chunk], …, **kwargs)`` continue
        from there (only restorers with :attr:`has_prefix`)."""
        raise NotImplementedError(f'{type(self).__name__} has no no-grad prefix to batch')

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the generator step updates (and nothing else)."""
        raise NotImplementedError

    def trained_state_dict(self) -> Dict[str, torch.Tensor]:
        """State dict of the trained part only."""
        raise NotImplementedError

    def load_trained_state_dict(self, state: Dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load what :meth:`trained_state_dict` wrote."""
        raise NotImplementedError

    def trained_file_metadata(self) -> Dict[str, str]:
        """Strings stored beside the trained part in its ``.safetensors`` file (e.g. an adapter layout)."""
        return {}

    def prepare_for_trained_file(self, metadata: Dict[str, str]) -> None:
        """Called with a checkpoint's metadata before its tensors load (e.g. add the adapters it names)."""

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn activation checkpointing on/off in the big modules (UNet, control branch, VAE decoder)."""

    def release_compute_caches(self) -> None:
        """Free reduced-precision casts of the trained weights (stale once the optimiser stepped); the next
        ``restore`` recasts. Called after each generator step, so the FRM update never holds them."""

    def forward(self, lq: torch.Tensor, captions: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Inference: the restored image in [0, 1] (so BasicSR's test pipeline can call ``net_g(lq)``)."""
        with torch.no_grad():
            out = self.restore(lq, captions, grad_steps=0)
        return ((out.image + 1) / 2).clamp(0, 1)


def trained_part_file(path: str) -> str:
    """``path``, or its ``.safetensors`` sibling when only that exists (BasicSR's resume names ``net_g_<iter>.pth``;
    drward writes ``net_g_<iter>.safetensors``)."""
    sibling = os.path.splitext(str(path))[0] + '.safetensors'
    return sibling if not os.path.exists(path) and os.path.exists(sibling) else str(path)


def ema_file_for(path: str) -> str:
    """The EMA file beside a ``net_g_<iter>`` checkpoint (``net_g_ema_<iter>.safetensors``, or ``.pth`` when only
    that exists); a path that already names an EMA file is returned as it is."""
    folder, name = os.path.split(str(path))
    if name.startswith('net_g_ema_'):
        return trained_part_file(path)
    stem = os.path.splitext(name)[0]
    stem = 'net_g_ema_' + stem[len('net_g_'):] if stem.startswith('net_g_') else stem + '_ema'
    return trained_part_file(os.path.join(folder, stem + '.pth'))


def save_trained_part(net: Restorer, path: str) -> None:
    """Write the restorer's trained part as ``.safetensors``: tensors only, no pickle, memory-mapped on load, the
    format diffusers and peft read; the metadata names the family and adds :meth:`Restorer.trained_file_metadata`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tensors = unshared({k: v.detach().cpu() for k, v in net.trained_state_dict().items()})
    atomic_save(tensors, path, metadata={'drward_restorer': net.family, **net.trained_file_metadata()})


def load_restorer_weights(net: nn.Module, path: str, param_key: str = 'params', strict: bool = True) -> None:
    """Load a checkpoint: a ``.safetensors`` file, ``{param_key: state}`` or a bare state dict (old ``.pth`` files),
    read by :func:`~drward.utils.safe_load.load_weights`; a Restorer gets its trained part only (after
    :meth:`Restorer.prepare_for_trained_file` saw the file's metadata). ``param_key='params_ema'`` (BasicSR's EMA key)
    on a ``net_g_<iter>`` path without that entry reads the ``net_g_ema_<iter>`` file beside it."""
    path = trained_part_file(path)
    if param_key == 'params_ema' and path.endswith('.safetensors') and not os.path.basename(path).startswith(
            'net_g_ema_'):
        path = ema_file_for(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'param_key params_ema: no EMA file {path} (train with train.ema_decay > 0)')
    state = load_weights(path)
    if isinstance(state, Mapping) and isinstance(state.get(param_key), Mapping):
        state = state[param_key]
    if not isinstance(state, Mapping):
        raise ValueError(f'{path}: expected a state dict (optionally under {param_key!r}), got {type(state).__name__}')
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if isinstance(net, Restorer):
        net.prepare_for_trained_file(file_metadata(path))
        net.load_trained_state_dict(state, strict=strict)
    else:
        net.load_state_dict(state, strict=strict)


def file_metadata(path: str) -> Dict[str, str]:
    """The metadata of a ``.safetensors`` file (``{}`` for other files)."""
    if not str(path).endswith('.safetensors'):
        return {}
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as handle:
        return dict(handle.metadata() or {})


def restore_seeded(restorer: Restorer, lq: torch.Tensor, captions: Optional[Sequence[str]],
                   seed: Union[int, Sequence[int]], grad_steps: int = 0) -> torch.Tensor:
    """``restorer.restore`` without gradient, drawing from a generator seeded with ``seed`` (the noise, and with
    ``grad_steps`` ≥ 1 the stop step and η too); the image mapped to [0, 1], float32. A sequence of seeds (one per
    row, inference only) gives each row its own generator: a face restored in a batch draws the noise it would
    draw alone (:mod:`drward.diffusion.row_noise`)."""
    if not isinstance(seed, int) and len(seed) != lq.shape[0]:
        raise ValueError(f'restore_seeded: {len(seed)} seeds for {lq.shape[0]} images')
    with torch.no_grad():
        out = restorer.restore(lq, captions, grad_steps=grad_steps, generator=row_noise.seeded(seed))
    return ((out.image.float() + 1) / 2).clamp(0, 1)


def checked_weight_paths(owner: str, opt: Mapping, keys: Sequence[str], required: Sequence[str],
                         tiny: bool) -> Dict[str, str]:
    """The weight paths ``opt`` gives among ``keys``; a missing file raises the one-line message naming its key. A
    real (not tiny) build needs the ``required`` ones, unless ``opt['random_weights']``: then the parts without a
    file keep their RANDOM initialisation at real size (benchmarks only), logged as a warning."""
    missing = [key for key in required if not tiny and not opt[key]]
    if missing and not opt.get('random_weights'):
        raise OptionError(f'{owner}: option {missing[0]} is required unless tiny: true (or random_weights: true, '
                          f'for benchmarks)')
    if missing:
        get_root_logger().warning(f'{owner}: RANDOM weights at real size (random_weights: true) for '
                                  f'{", ".join(missing)}: for benchmarks only, the outputs are noise')
    return {key: require_file(opt[key], key) for key in keys if opt[key]}


def log_and_check(owner: str, report) -> None:
    """Log a weight :class:`~drward.weights.common.ConversionReport`, then raise if it is incomplete."""
    get_root_logger().info(f'{owner}: {report.summary()}')
    report.raise_if_incomplete()
