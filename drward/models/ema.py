"""An exponential moving average of the restorer's trained part (BasicSR's ``train.ema_decay``, diffusers' EMAModel).

After every optimiser step of the generator (a skipped step changes nothing):

    ``θ_ema ← d·θ_ema + (1 − d)·θ``,   ``d`` = ``train.ema_decay`` (BasicSR's key; 0 or absent: no EMA),

over the tensors of :meth:`~drward.archs.restorer.Restorer.trained_state_dict` only: the IRControlNet or its LoRA
factors, OSEDiff's LoRA; never the frozen models, never the FRM (the reward model is trained to judge, not to be
averaged). At the start ``θ_ema = θ`` (BasicSR's ``model_ema(0)``), or the EMA the loaded checkpoint has beside it.

Files: ``net_g_ema_<iter>.safetensors`` beside ``net_g_<iter>.safetensors``, the same layout and metadata (a LoRA
EMA names its adapters), so it loads like any checkpoint; a loader asked for BasicSR's ``param_key: params_ema``
on a ``net_g_<iter>`` path reads the ``net_g_ema_<iter>`` file (:func:`~drward.archs.restorer.ema_file_for`). On
resume BasicSR points ``pretrain_network_g`` at ``net_g_<iter>.pth``; the EMA comes from the file beside it, so a
resumed run continues the same average bit for bit. In DDP every rank averages the same (all-reduced, identically
stepped) weights: the EMAs are equal on every rank with no communication.

Validation runs with the EMA weights swapped into the restorer (as BasicSR validates ``net_g_ema``); the training
weights are put back exactly afterwards.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import torch
from basicsr.utils import get_root_logger

from drward.archs.restorer import Restorer, ema_file_for, trained_part_file
from drward.utils.atomic_io import atomic_save, unshared
from drward.utils.options import OptionError
from drward.utils.safe_load import load_weights


class TrainedPartEMA:
    """``θ_ema`` of ``net``'s trained part (see the module docstring); tensors on the weights' device and dtype."""

    def __init__(self, net: Restorer, decay: float):
        if not 0 < decay < 1:
            raise OptionError(f'train.ema_decay must be in (0, 1) (0: no EMA), got {decay!r}')
        self.net, self.decay = net, float(decay)
        self.shadow: Dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in net.trained_state_dict().items()}

    @classmethod
    def from_options(cls, net: Restorer, decay, load_path: Optional[str]) -> Optional['TrainedPartEMA']:
        """None when ``decay`` is 0 / absent; else the EMA, read from ``load_path``'s EMA file when there is one."""
        if not decay:
            return None
        ema = cls(net, float(decay))
        source = ema_file_for(load_path) if load_path else None
        if source and os.path.isfile(source):
            ema.load(source)
            get_root_logger().info(f'ReFLModel: EMA (decay {ema.decay:g}) loaded from {source}')
        else:
            get_root_logger().info(f'ReFLModel: EMA (decay {ema.decay:g}) starts from the current weights')
        return ema

    @torch.no_grad()
    def update(self) -> None:
        """``θ_ema ← d·θ_ema + (1 − d)·θ`` (non-float entries copied)."""
        for key, value in self.net.trained_state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.mul_(self.decay).add_(value.detach().to(shadow.dtype), alpha=1 - self.decay)
            else:
                shadow.copy_(value)

    def save(self, path: str) -> None:
        """``path`` (``.safetensors``): the EMA in the layout and metadata of the restorer's own checkpoint."""
        tensors = unshared({k: v.detach().cpu() for k, v in self.shadow.items()})
        atomic_save(tensors, path, metadata={'drward_restorer': self.net.family, 'drward_ema_decay': str(self.decay),
                                             **self.net.trained_file_metadata()})

    def load(self, path: str) -> None:
        """Copy the tensors of an EMA file into the shadow (the same keys, or a one-line error)."""
        state = load_weights(trained_part_file(path))
        if set(state) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(state)), sorted(set(state) - set(self.shadow))
            raise KeyError(f'{path}: EMA keys differ from the trained part (missing {missing[:3]}, '
                           f'unexpected {extra[:3]})')
        for key, tensor in state.items():
            self.shadow[key].copy_(tensor)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run the restorer with the EMA weights; the training weights come back bit for bit on exit."""
        kept = {k: v.detach().clone() for k, v in self.net.trained_state_dict().items()}
        self.net.load_trained_state_dict(self.shadow, strict=True)
        self.net.release_compute_caches()
        try:
            yield
        finally:
            self.net.load_trained_state_dict(kept, strict=True)
            self.net.release_compute_caches()
