"""OSEDiff's checkpoints (``osediff.pkl``, ``osediff_face.pkl``) and the LoRA files our restorer writes.

``osediff.pkl`` is a ``torch.save`` of a plain dict (OSEDiff's ``OSEDiff_gen.save_model``):

* ``unet_lora_encoder_modules`` / ``unet_lora_decoder_modules`` / ``unet_lora_others_modules``: UNet module names of
  the adapters ``default_encoder`` / ``default_decoder`` / ``default_others``; ``vae_lora_encoder_modules``: the VAE's
  (adapter ``default_encoder``; OSEDiff's list repeats names, peft treats it as a set);
* ``rank_unet``, ``rank_vae``: the LoRA ranks (4); ``lora_alpha`` is peft's default 8, not stored;
* ``state_dict_unet``: the UNet state entries whose name contains ``lora`` or ``conv_in`` (peft names:
  ``….lora_A.<adapter>.weight``, ``….lora_B.<adapter>.weight``, and ``conv_in.base_layer.{weight,bias}`` — OSEDiff
  trains ``conv_in`` itself too); ``state_dict_vae``: the VAE entries whose name contains ``lora``.

Our LoRA file (``.safetensors``): the same tensors under ``unet.`` / ``vae.`` prefixes (the restorer's
``trained_state_dict`` names), the layout (module lists, ranks) as JSON in the metadata. :func:`read_lora_file`
reads both kinds; :func:`osediff_checkpoint_dict` writes the official layout back (for OSEDiff's own scripts).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

from drward.archs.checkpoint_loaders import checkpoint_loader
from drward.archs.lora import LAYOUT_METADATA_KEY, LoraLayout, is_lora_name, layout_from_json, layout_metadata
from drward.utils.atomic_io import atomic_save
from drward.utils.safe_load import load_weights
from drward.weights.common import ConversionError, ConversionReport, StateDict

UNET_MODULE_KEYS = {'default_encoder': 'unet_lora_encoder_modules', 'default_decoder': 'unet_lora_decoder_modules',
                    'default_others': 'unet_lora_others_modules'}
VAE_MODULE_KEY = 'vae_lora_encoder_modules'
CHECKPOINT_KEYS = (*UNET_MODULE_KEYS.values(), VAE_MODULE_KEY, 'rank_unet', 'rank_vae', 'state_dict_unet',
                   'state_dict_vae')


def layout_from_checkpoint(checkpoint: Mapping) -> LoraLayout:
    """The adapter layout an ``osediff.pkl`` dict describes (duplicate module names dropped, order kept)."""
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ConversionError(f'not an OSEDiff checkpoint: keys {missing} are missing '
                              f'(expected {list(CHECKPOINT_KEYS)})')
    unet = {adapter: list(dict.fromkeys(checkpoint[key])) for adapter, key in UNET_MODULE_KEYS.items()}
    return LoraLayout(unet, list(dict.fromkeys(checkpoint[VAE_MODULE_KEY])), int(checkpoint['rank_unet']),
                      int(checkpoint['rank_vae']))


def split_prefixed(state: Mapping[str, torch.Tensor]) -> Tuple[StateDict, StateDict]:
    """``{'unet.x': …, 'vae.y': …}`` → ``({'x': …}, {'y': …})``; any other prefix is an error."""
    unet, vae = {}, {}
    for key, tensor in state.items():
        side, _, name = key.partition('.')
        if side not in ('unet', 'vae') or not name:
            raise ConversionError(f'LoRA state key {key!r} is neither unet.* nor vae.*')
        (unet if side == 'unet' else vae)[name] = tensor
    return unet, vae


@checkpoint_loader('osediff_lora_file')
def read_lora_file(path: str) -> Tuple[LoraLayout, StateDict, StateDict]:
    """``(layout, unet_state, vae_state)`` from an ``osediff.pkl`` or from one of our ``.safetensors`` files."""
    if str(path).endswith('.safetensors'):
        from safetensors import safe_open
        with safe_open(path, framework='pt') as handle:
            metadata = handle.metadata() or {}
        if LAYOUT_METADATA_KEY not in metadata:
            raise ConversionError(f'{path}: no {LAYOUT_METADATA_KEY} metadata; not a drward OSEDiff LoRA file')
        unet, vae = split_prefixed(load_weights(path))
        return layout_from_json(metadata[LAYOUT_METADATA_KEY]), unet, vae
    checkpoint = load_weights(path)
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f'{path} does not hold a dict')
    layout = layout_from_checkpoint(checkpoint)
    return layout, dict(checkpoint['state_dict_unet']), dict(checkpoint['state_dict_vae'])


def _prefixed(prefix: str, keys) -> List[str]:
    return sorted(f'{prefix}.{key}' for key in keys)


def _load_by_name(module: nn.Module, source: Mapping[str, torch.Tensor], expected: List[str],
                  name: str) -> ConversionReport:
    """Copy ``source`` into ``module`` by name (shapes must match); report keys as ``<name>.<key>``."""
    model_state = module.state_dict()
    found = {key: tensor for key, tensor in source.items() if key in model_state}
    for key, tensor in found.items():
        if tuple(tensor.shape) != tuple(model_state[key].shape):
            raise ConversionError(f'{name}: {key} has shape {tuple(tensor.shape)} in the file, '
                                  f'{tuple(model_state[key].shape)} in the model (another rank?)')
    module.load_state_dict(found, strict=False)
    return ConversionReport(name, _prefixed(name, found), [], _prefixed(name, set(source) - set(found)),
                            _prefixed(name, set(expected) - set(found)))


@checkpoint_loader('osediff_lora')
def load_osediff_lora(unet: nn.Module, vae: nn.Module, unet_state: Mapping[str, torch.Tensor],
                      vae_state: Mapping[str, torch.Tensor]) -> ConversionReport:
    """Fill LoRA'd ``unet`` / ``vae`` (adapters already added with the file's layout). Complete means: every LoRA
    factor of both models filled, ``conv_in`` whole or not at all (an official file always has it; our files when
    ``conv_in`` was trained), and every file key used."""
    has_conv_in = any(key.startswith('conv_in.') for key in unet_state)
    unet_expected = [key for key in unet_checkpoint_names(unet) if has_conv_in or is_lora_name(key)]
    report = _load_by_name(unet, unet_state, unet_expected, 'unet')
    return report.merge(_load_by_name(vae, vae_state, vae_checkpoint_names(vae), 'vae'))


def unet_checkpoint_names(unet: nn.Module) -> List[str]:
    """The UNet state names an ``osediff.pkl`` stores: LoRA factors and everything of ``conv_in``."""
    return [key for key in unet.state_dict() if is_lora_name(key) or key.startswith('conv_in.')]


def vae_checkpoint_names(vae: nn.Module) -> List[str]:
    """The VAE state names an ``osediff.pkl`` stores: the LoRA factors."""
    return [key for key in vae.state_dict() if is_lora_name(key)]


def osediff_checkpoint_dict(layout: LoraLayout, unet: nn.Module, vae: nn.Module) -> Dict:
    """The official ``osediff.pkl`` dict for LoRA'd ``unet`` / ``vae`` (``torch.save`` it; OSEDiff's
    ``OSEDiff_test.load_ckpt`` reads it)."""
    unet_state, vae_state = unet.state_dict(), vae.state_dict()
    checkpoint = {key: list(layout.unet_modules.get(adapter, [])) for adapter, key in UNET_MODULE_KEYS.items()}
    checkpoint.update({VAE_MODULE_KEY: list(layout.vae_modules), 'rank_unet': layout.rank_unet,
                       'rank_vae': layout.rank_vae})
    checkpoint['state_dict_unet'] = {k: unet_state[k].detach().cpu().clone() for k in unet_checkpoint_names(unet)}
    checkpoint['state_dict_vae'] = {k: vae_state[k].detach().cpu().clone() for k in vae_checkpoint_names(vae)}
    return checkpoint


def save_lora_safetensors(path: str, layout: LoraLayout, state: Mapping[str, torch.Tensor]) -> str:
    """Write ``state`` (``unet.*`` / ``vae.*`` names, e.g. a restorer's ``trained_state_dict``) with the layout in the
    metadata, so :func:`read_lora_file` rebuilds the adapters before loading."""
    split_prefixed(state)  # validates the names
    tensors = {key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}
    return atomic_save(tensors, path, metadata=layout_metadata(layout))

