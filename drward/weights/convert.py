"""Convert an official checkpoint to ``.safetensors`` once, keeping the tensors its converter reads.

``convert_to_safetensors(src, dst)`` reads ``src`` with :func:`~drward.utils.safe_load.load_weights` (nothing from it
runs) and writes:

* an OSEDiff file (``osediff.pkl``, ``osediff_face.pkl``): the LoRA tensors under ``unet.`` / ``vae.`` with the
  adapter layout in the metadata (:func:`drward.weights.osediff.save_lora_safetensors`), which ``osediff_checkpoint``
  reads;
* any other file: the state dict that :func:`drward.weights.common.load_state_dict_file` takes from it (the
  ``state_dict`` / ``params_ema`` / ``params`` entry, ``module.`` stripped), which every converter reads back as is.

The report lists what the output leaves out: non-tensor entries (Lightning's ``global_step``, callbacks,
hyper-parameters, ...) and tensors outside the state dict (optimiser moments, a second weight set).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping

import torch

from drward.utils.atomic_io import unshared  # noqa: F401  (re-exported: it lived here)
from drward.utils.safe_load import load_weights, split_tensors
from drward.weights.common import state_dict_of
from drward.weights.osediff import CHECKPOINT_KEYS, read_lora_file, save_lora_safetensors


@dataclass
class ExportReport:
    """``kept``: tensors written; ``dropped``: entries of the source left out (dotted key and type)."""

    source: str
    target: str
    kept: int = 0
    dropped: List[str] = field(default_factory=list)
    kind: str = 'state dict'

    def summary(self, limit: int = 20) -> str:
        lines = [f'{self.source} -> {self.target}: {self.kept} tensors written ({self.kind}); '
                 f'{len(self.dropped)} entries dropped']
        lines += [f'  dropped: {entry}' for entry in self.dropped[:limit]]
        if len(self.dropped) > limit:
            lines.append(f'  ... and {len(self.dropped) - limit} more')
        return '\n'.join(lines)


def _is_osediff(obj: object) -> bool:
    return isinstance(obj, Mapping) and 'state_dict_unet' in obj and 'state_dict_vae' in obj


def convert_to_safetensors(src: str, dst: str) -> ExportReport:
    """Write the tensors of ``src`` that drward reads to ``dst`` (``.safetensors``); report what was left out."""
    if not str(dst).endswith('.safetensors'):
        raise ValueError(f'{dst}: the output must be a .safetensors file')
    raw = load_weights(src)
    all_tensors, non_tensors = split_tensors(raw)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if _is_osediff(raw):
        layout, unet, vae = read_lora_file(src)
        state = {**{f'unet.{k}': v for k, v in unet.items()}, **{f'vae.{k}': v for k, v in vae.items()}}
        save_lora_safetensors(dst, layout, unshared(state))
        kept_sources = {f'state_dict_{key}' for key in state}
        in_metadata = [entry for entry in non_tensors if entry.split(' ')[0].split('.')[0] not in CHECKPOINT_KEYS]
        return ExportReport(src, dst, len(state), _left_out(all_tensors, kept_sources, in_metadata),
                            'OSEDiff LoRA, layout in the metadata')
    from safetensors.torch import save_file
    state = state_dict_of(raw, src)
    save_file(unshared(state), dst, metadata={'drward_converted_from': os.path.basename(str(src))})
    kept_ids = {id(t) for t in state.values()}
    kept_sources = {key for key, tensor in all_tensors.items() if id(tensor) in kept_ids}
    return ExportReport(src, dst, len(state), _left_out(all_tensors, kept_sources, non_tensors))


def _left_out(all_tensors: Dict[str, torch.Tensor], kept: set, non_tensors: List[str]) -> List[str]:
    """The non-tensor entries and the tensors not written."""
    dropped = list(non_tensors)
    dropped += [f'{key} (Tensor {tuple(t.shape)})' for key, t in all_tensors.items() if key not in kept]
    return dropped
