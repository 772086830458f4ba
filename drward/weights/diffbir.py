"""DiffBIR weights: the IRControlNet files (``v1_face.pth``, ``v2.pth``) and the face stage-1 SwinIR.

* ``v1_face.pth`` / ``v2.pth`` are bare state dicts of DiffBIR's LDM-style ``ControlNet`` (DiffBIR's inference
  loads either with ``ControlLDM.load_controlnet_from_ckpt`` — ``load_state_dict(sd, strict=True)``, same layout):
  ``time_embed.{0,2}``, ``input_blocks.i`` (``input_blocks.0.0`` is the 8-channel first conv), ``zero_convs.i.0``,
  ``middle_block.{0,1,2}``, ``middle_block_out.0``. diffusers' ``convert_controlnet_checkpoint`` maps them
  (``zero_convs.i.0`` → ``controlnet_down_blocks.i``, ``middle_block_out.0`` → ``controlnet_mid_block``,
  ``input_blocks.0.0`` → ``conv_in``); with no ``input_hint_block`` keys, no hint encoder is produced, which is what
  :class:`~drward.archs.ircontrolnet.IRControlNet` expects.
* ``face_swinir_v1.ckpt`` holds DiffBIR's face SwinIR under ``state_dict``; its names are BasicSR's SwinIR names
  plus ``conv_first.1`` (after the pixel-unshuffle) and ``conv_up3``, i.e. :class:`FaceSwinIR`'s names.
"""
from __future__ import annotations

from typing import Mapping, Union

import torch
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

from drward.archs.checkpoint_loaders import checkpoint_loader
from drward.archs.face_swinir import FaceSwinIR
from drward.archs.ircontrolnet import IRControlNet
from drward.weights.common import ConversionError, ConversionReport, StateDict, load_converted, load_state_dict_file

Source = Union[str, Mapping[str, torch.Tensor]]


def _state(source: Source) -> StateDict:
    return load_state_dict_file(source) if isinstance(source, str) else dict(source)


def convert_diffbir_controlnet(checkpoint: Mapping[str, torch.Tensor], config: Mapping) -> StateDict:
    """DiffBIR ControlNet state dict (LDM names) → IRControlNet (diffusers) names. ``config``: the IRControlNet's."""
    if 'time_embed.0.weight' not in checkpoint:
        raise ConversionError('not a DiffBIR ControlNet state dict (no time_embed.0.weight); expected the bare '
                              'v1_face.pth / v2.pth layout')
    if any(k.startswith('input_hint_block.') for k in checkpoint):
        raise ConversionError('this ControlNet has a hint encoder (input_hint_block.*): not an IRControlNet')
    return convert_controlnet_checkpoint(dict(checkpoint), config)


@checkpoint_loader('diffbir_controlnet')
def load_diffbir_controlnet(controlnet: IRControlNet, source: Source) -> ConversionReport:
    """Fill ``controlnet`` from a ``v1_face.pth`` / ``v2.pth`` path or state dict; returns the report."""
    checkpoint = _state(source)
    converted = convert_diffbir_controlnet(checkpoint, controlnet.config)
    return load_converted(controlnet, converted, checkpoint, 'ircontrolnet')


@checkpoint_loader('face_swinir')
def load_face_swinir(model: FaceSwinIR, source: Source) -> ConversionReport:
    """Fill ``model`` from ``face_swinir_v1.ckpt`` (or a state dict with the same names); returns the report."""
    checkpoint = _state(source)
    return load_converted(model, checkpoint, checkpoint, 'face_swinir')
