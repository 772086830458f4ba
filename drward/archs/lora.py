"""LoRA adapters (peft) on SD's UNet and VAE encoder, placed where OSEDiff places them (docs/design.md §1, §4).

OSEDiff (``osediff.py``: ``initialize_unet``, ``initialize_vae``) adds, with ``LoraConfig(r, init_lora_weights=
"gaussian")`` (peft's default ``lora_alpha = 8``, so the update is ``W x + (8 / r)·B A x``, ``A ~ N(0, 1/r)``,
``B = 0`` at creation):

* three UNet adapters, over every weight (not a bias, not a norm) whose name contains ``to_q/k/v``, ``to_out.0``,
  ``conv`` (``conv1``, ``conv2``, ``conv_in``, ``conv_out``, ``conv_shortcut``, up/down-sampler convs), ``proj_in``,
  ``proj_out``, ``ff.net.0.proj`` or ``ff.net.2``, split by place: ``default_encoder`` (``down_blocks``, ``conv_in``),
  ``default_decoder`` (``up_blocks``, ``conv_out``), ``default_others`` (the middle block);
* one VAE adapter ``default_encoder`` over the encoder's convolutions and attention projections and ``quant_conv``
  (the decoder and ``post_quant_conv`` stay plain).

All adapters are active at once (OSEDiff's training and test scripts ``set_adapter`` all three). The module lists and
ranks are what ``osediff.pkl`` stores (:mod:`drward.weights.osediff`), so a file's layout rebuilds the same adapters.
"""
from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping

import torch
from torch import nn

UNET_ADAPTERS = ('default_encoder', 'default_decoder', 'default_others')
VAE_ADAPTER = 'default_encoder'
LORA_ALPHA = 8  # peft's default, which OSEDiff relies on (its checkpoints do not store alpha)
DEFAULT_RANK = 4
UNET_LORA_PATTERNS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'conv', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2')
VAE_LORA_PATTERNS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'conv')


@dataclass
class LoraLayout:
    """Where the adapters sit and their ranks. ``unet_modules``: adapter name → UNet module names;
    ``vae_modules``: VAE module names of the one VAE encoder adapter."""

    unet_modules: Dict[str, List[str]]
    vae_modules: List[str]
    rank_unet: int = DEFAULT_RANK
    rank_vae: int = DEFAULT_RANK
    alpha: int = field(default=LORA_ALPHA)

    def module_count(self) -> int:
        return sum(len(names) for names in self.unet_modules.values()) + len(self.vae_modules)


#: the ``.safetensors`` metadata key of a saved OSEDiff LoRA file that holds its :class:`LoraLayout` as JSON
LAYOUT_METADATA_KEY = 'drward_lora_layout'


def layout_metadata(layout: LoraLayout) -> Dict[str, str]:
    """The ``.safetensors`` metadata entry that lets :func:`drward.weights.osediff.read_lora_file` rebuild the
    adapters (what a restorer writes beside its trained LoRA factors)."""
    return {LAYOUT_METADATA_KEY: json.dumps({'unet_modules': layout.unet_modules, 'vae_modules': layout.vae_modules,
                                             'rank_unet': layout.rank_unet, 'rank_vae': layout.rank_vae,
                                             'alpha': layout.alpha})}


def layout_from_json(text: str) -> LoraLayout:
    """The layout :func:`layout_metadata` wrote."""
    return LoraLayout(**json.loads(text))


def _adaptable_modules(model: nn.Module, patterns) -> Iterator[str]:
    """Names of modules owning a weight that is neither a bias nor a norm parameter and whose name contains one of
    ``patterns`` (OSEDiff matches on parameter names, then drops ``.weight``)."""
    for name, _ in model.named_parameters():
        if 'bias' in name or 'norm' in name or not name.endswith('.weight'):
            continue
        if any(pattern in name for pattern in patterns):
            yield name[:-len('.weight')]


def adaptable_module_names(model: nn.Module, patterns) -> List[str]:
    """The module names :func:`_adaptable_modules` yields, in order, each once (the IRControlNet's LoRA targets)."""
    return list(dict.fromkeys(_adaptable_modules(model, patterns)))


def unet_lora_targets(unet: nn.Module) -> Dict[str, List[str]]:
    """OSEDiff's UNet split: ``{'default_encoder': [...], 'default_decoder': [...], 'default_others': [...]}``."""
    split: Dict[str, List[str]] = {adapter: [] for adapter in UNET_ADAPTERS}
    for name in _adaptable_modules(unet, UNET_LORA_PATTERNS):
        if 'down_blocks' in name or 'conv_in' in name:
            split['default_encoder'].append(name)
        elif 'up_blocks' in name or 'conv_out' in name:
            split['default_decoder'].append(name)
        else:
            split['default_others'].append(name)
    return split


def vae_encoder_lora_targets(vae: nn.Module) -> List[str]:
    """The VAE encoder's convolutions and attention projections, plus ``quant_conv`` (not ``post_quant_conv``)."""
    return [name for name in _adaptable_modules(vae, VAE_LORA_PATTERNS)
            if name.startswith('encoder.') or name == 'quant_conv']


def discover_layout(unet: nn.Module, vae: nn.Module, rank: int = DEFAULT_RANK) -> LoraLayout:
    """OSEDiff's placement on these models, one rank for all adapters."""
    return LoraLayout(unet_lora_targets(unet), vae_encoder_lora_targets(vae), rank, rank)


def _lora_config(rank: int, modules: List[str], alpha: int):
    from peft import LoraConfig
    return LoraConfig(r=int(rank), lora_alpha=alpha, init_lora_weights='gaussian',
                      target_modules=list(dict.fromkeys(modules)))


def add_lora(unet: nn.Module, vae: nn.Module, layout: LoraLayout) -> None:
    """Inject the layout's adapters (fresh: ``A`` Gaussian, ``B = 0``) and activate all of them."""
    active = []
    with warnings.catch_warnings():  # peft warns on every adapter after the first; three are OSEDiff's design
        warnings.filterwarnings('ignore', message='Already found a `peft_config` attribute')
        for adapter in UNET_ADAPTERS:
            modules = layout.unet_modules.get(adapter) or []
            if modules:
                unet.add_adapter(_lora_config(layout.rank_unet, modules, layout.alpha), adapter_name=adapter)
                active.append(adapter)
    unet.set_adapter(active)
    vae.add_adapter(_lora_config(layout.rank_vae, layout.vae_modules, layout.alpha), adapter_name=VAE_ADAPTER)
    vae.set_adapter([VAE_ADAPTER])


def is_lora_name(name: str) -> bool:
    """True for peft LoRA factor names (``….lora_A.<adapter>.weight``, ``….lora_B.<adapter>.weight``)."""
    return '.lora_A.' in name or '.lora_B.' in name


@torch.no_grad()
def randomize_lora_b_(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Give the ``B`` factors N(0, std²) values (fresh adapters have ``B = 0``: no effect, no gradient into ``A``)."""
    for name, parameter in model.named_parameters():
        if '.lora_B.' in name:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model (peft's disable/enable of every adapter layer). peft also flips the
    adapters' ``requires_grad`` when toggling; the flags are put back as they were on exit."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])


class TensorSnapshot(nn.Module):
    """Detached copies of named tensors, kept as non-persistent buffers: they follow ``.to()`` and are never saved
    (a frozen reference θ₀ of a few LoRA tensors, used through ``torch.func.functional_call``)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        super().__init__()
        self.names = list(tensors)
        for index, tensor in enumerate(tensors.values()):
            self.register_buffer(f'tensor_{index}', tensor.detach().clone(), persistent=False)

    def as_dict(self) -> Dict[str, torch.Tensor]:
        return {name: getattr(self, f'tensor_{index}') for index, name in enumerate(self.names)}
