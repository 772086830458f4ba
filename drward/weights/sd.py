"""Stable Diffusion 2.1 weights → :class:`drward.archs.sd_parts.SDParts`.

Two sources:

* an LDM single file (``v2-1_512-ema-pruned.ckpt`` / ``.safetensors``): UNet keys under ``model.diffusion_model.``
  and VAE keys under ``first_stage_model.``, converted by diffusers' ``convert_ldm_unet_checkpoint`` /
  ``convert_ldm_vae_checkpoint``; the open_clip text tower under ``cond_stage_model.model.`` loads by name (our
  tower *is* open_clip's). Known unused keys are reported as ignored: the noise-schedule buffers, EMA counters, the
  text tower's last block (read at the penultimate layer), its projection and logit scale.
* a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``): UNet and VAE load by name; the text encoder (a
  transformers ``CLIPTextModel`` holding the first L − 1 blocks, as diffusers' SD 2.x conversion writes it) maps
  back to open_clip names, fusing ``q/k/v_proj`` into ``in_proj``.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Tuple

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from drward.archs.checkpoint_loaders import checkpoint_loader
from drward.archs.sd_parts import OpenCLIPTextEncoder, SDParts
from drward.weights.common import ConversionReport, StateDict, load_converted, load_state_dict_file

UNET_PREFIX = 'model.diffusion_model.'
VAE_PREFIX = 'first_stage_model.'
TEXT_PREFIX = 'cond_stage_model.model.'
# LatentDiffusion buffers and counters that are not weights of any module we build.
SCHEDULE_KEYS = ('betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod',
                 'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod',
                 'sqrt_recipm1_alphas_cumprod', 'posterior_variance', 'posterior_log_variance_clipped',
                 'posterior_mean_coef1', 'posterior_mean_coef2', 'logvar', 'model_ema.decay',
                 'model_ema.num_updates')
_TEXT_UNUSED = ('text_projection', 'logit_scale')


@checkpoint_loader('sd')
def load_sd_weights(parts: SDParts, path: str) -> ConversionReport:
    """Fill ``parts`` from an LDM single file or a diffusers folder; returns the report (raise on incomplete)."""
    if os.path.isdir(path):
        report = load_diffusers_folder(parts, path)
    else:
        report = load_ldm_checkpoint(parts, load_state_dict_file(path))
    parts.clear_context_cache()
    return report


def load_ldm_checkpoint(parts: SDParts, checkpoint: Mapping[str, torch.Tensor]) -> ConversionReport:
    """UNet, VAE and text tower from one LDM state dict; one report over all of its keys."""
    unet = load_converted(parts.unet, convert_ldm_unet_checkpoint(checkpoint, parts.unet.config), checkpoint,
                          'unet', ignored=[k for k in checkpoint if k in SCHEDULE_KEYS])
    vae = load_converted(parts.vae, convert_ldm_vae_checkpoint(checkpoint, parts.vae.config), checkpoint, 'vae')
    text_state, text_ignored = ldm_text_state(checkpoint, parts.text_encoder)
    text = load_converted(parts.text_encoder, text_state, checkpoint, 'text', ignored=text_ignored)
    return unet.merge(vae).merge(text)


def ldm_text_state(checkpoint: Mapping[str, torch.Tensor], encoder: OpenCLIPTextEncoder,
                   prefix: str = TEXT_PREFIX) -> Tuple[StateDict, List[str]]:
    """open_clip text weights by name; the blocks past those the encoder runs, the projection and the logit
    scale are returned as ignored source keys."""
    names = set(encoder.state_dict())
    blocks_run = len(encoder.transformer.resblocks)
    state, ignored = {}, []
    for key, tensor in checkpoint.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        block = re.match(r'transformer\.resblocks\.(\d+)\.', name)
        if name in names:
            state[name] = tensor
        elif name in _TEXT_UNUSED or (block and int(block.group(1)) >= blocks_run):
            ignored.append(key)
    return state, ignored


def load_diffusers_folder(parts: SDParts, folder: str) -> ConversionReport:
    """UNet and VAE from ``folder/unet``, ``folder/vae`` (diffusers names), text from ``folder/text_encoder``."""
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet', local_files_only=True).state_dict()
    vae = AutoencoderKL.from_pretrained(folder, subfolder='vae', local_files_only=True).state_dict()
    report = load_converted(parts.unet, unet, unet, 'unet').merge(load_converted(parts.vae, vae, vae, 'vae'))
    text_source = _transformers_text_state(os.path.join(folder, 'text_encoder'))
    text_state, consumed, ignored = clip_text_to_open_clip(text_source, parts.text_encoder)
    text = load_converted(parts.text_encoder, text_state, text_source, 'text', ignored=ignored,
                          consumed=lambda: consumed)
    return report.merge(text)


def _transformers_text_state(folder: str) -> StateDict:
    from transformers import CLIPTextModel
    return CLIPTextModel.from_pretrained(folder, local_files_only=True).state_dict()


_HF_LAYER_NAMES = {'layer_norm1': 'ln_1', 'layer_norm2': 'ln_2', 'mlp.fc1': 'mlp.c_fc', 'mlp.fc2': 'mlp.c_proj',
                   'self_attn.out_proj': 'attn.out_proj'}


def clip_text_to_open_clip(source: Mapping[str, torch.Tensor], encoder: OpenCLIPTextEncoder,
                           ) -> Tuple[StateDict, List[str], List[str]]:
    """transformers ``CLIPTextModel`` keys (with or without the ``text_model.`` prefix that transformers ≥ 5 drops)
    → open_clip names. Returns ``(state, consumed, ignored)``, in the source's key names."""
    if not any(k.startswith('text_model.') for k in source):
        renamed = clip_text_to_open_clip({f'text_model.{k}': v for k, v in source.items()}, encoder)
        strip = len('text_model.')
        return renamed[0], [k[strip:] for k in renamed[1]], [k[strip:] for k in renamed[2]]
    state: Dict[str, torch.Tensor] = {}
    consumed, ignored = [], []
    top = {'text_model.embeddings.token_embedding.weight': 'token_embedding.weight',
           'text_model.embeddings.position_embedding.weight': 'positional_embedding',
           'text_model.final_layer_norm.weight': 'ln_final.weight',
           'text_model.final_layer_norm.bias': 'ln_final.bias'}
    for key, name in top.items():
        if key in source:
            state[name] = source[key]
            consumed.append(key)
    ignored += [k for k in source if k.endswith('position_ids')]
    for layer in range(len(encoder.transformer.resblocks)):
        hf, oc = f'text_model.encoder.layers.{layer}.', f'transformer.resblocks.{layer}.'
        for old, new in _HF_LAYER_NAMES.items():
            for kind in ('weight', 'bias'):
                if f'{hf}{old}.{kind}' in source:
                    state[f'{oc}{new}.{kind}'] = source[f'{hf}{old}.{kind}']
                    consumed.append(f'{hf}{old}.{kind}')
        for kind in ('weight', 'bias'):
            qkv = [f'{hf}self_attn.{p}_proj.{kind}' for p in 'qkv']
            if all(k in source for k in qkv):
                state[f'{oc}attn.in_proj_{kind}'] = torch.cat([source[k] for k in qkv], dim=0)
                consumed += qkv
    return state, consumed, ignored
