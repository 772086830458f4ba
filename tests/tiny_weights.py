"""Tiny checkpoints in the official key layouts (same names, tiny shapes), for the converter and restorer tests.

Built on the inverse converters of :mod:`drward.weights.official_layout`; test-only, so they live here and not in
the installed package (the tests import this module by name: ``tests/`` is on ``sys.path``, ``conftest.py``).
"""
from __future__ import annotations

import os

import torch

from drward.archs.face_swinir import FaceSwinIR
from drward.archs.ircontrolnet import IRControlNet
from drward.archs.sd_parts import OpenCLIPTextEncoder, SDParts
from drward.weights.official_layout import (
    StateDict,
    diffusers_unet_to_ldm,
    diffusers_vae_to_ldm,
    ircontrolnet_to_diffbir,
    open_clip_text_to_ldm,
    osediff_official_unet_lists,
    osediff_official_vae_list,
    osediff_pkl_dict,
)
from drward.weights.sd import SCHEDULE_KEYS, TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX


def sd_ldm_state_dict(parts: SDParts) -> StateDict:
    """An SD 2.x LDM single-file state dict holding ``parts``' weights (plus the schedule buffers it also stores)."""
    unet = diffusers_unet_to_ldm(parts.unet.state_dict(), parts.unet.config.layers_per_block)
    state = {UNET_PREFIX + k: v for k, v in unet.items()}
    state.update({VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(parts.vae.state_dict()).items()})
    state.update({TEXT_PREFIX + k: v for k, v in open_clip_text_to_ldm(parts.text_encoder).items()})
    state.update({k: torch.zeros(1000) for k in SCHEDULE_KEYS[:12]})
    return state


def open_clip_text_to_clip_text(encoder: OpenCLIPTextEncoder) -> StateDict:
    """Our text tower → transformers ``CLIPTextModel`` names (``in_proj`` split into ``q/k/v_proj``), as diffusers'
    SD 2.x folders store it."""
    out = {'text_model.embeddings.token_embedding.weight': encoder.token_embedding.weight,
           'text_model.embeddings.position_embedding.weight': encoder.positional_embedding,
           'text_model.final_layer_norm.weight': encoder.ln_final.weight,
           'text_model.final_layer_norm.bias': encoder.ln_final.bias}
    names = {'ln_1': 'layer_norm1', 'ln_2': 'layer_norm2', 'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2',
             'attn.out_proj': 'self_attn.out_proj'}
    for index, block in enumerate(encoder.transformer.resblocks):
        hf = f'text_model.encoder.layers.{index}.'
        for key, value in block.state_dict().items():
            module, kind = key.rsplit('.', 1)
            if module == 'attn' and kind.startswith('in_proj_'):
                for proj, chunk in zip('qkv', value.chunk(3, dim=0)):
                    out[f'{hf}self_attn.{proj}_proj.{kind[len("in_proj_"):]}'] = chunk
            else:
                out[f'{hf}{names[module]}.{kind}'] = value
    return {k: v.detach().clone() for k, v in out.items()}


def clip_text_config(encoder: OpenCLIPTextEncoder):
    """A transformers ``CLIPTextConfig`` with the encoder's shape (``num_hidden_layers`` = the blocks it runs)."""
    from transformers import CLIPTextConfig
    width = encoder.positional_embedding.shape[1]
    block = encoder.transformer.resblocks[0]
    return CLIPTextConfig(vocab_size=encoder.token_embedding.num_embeddings, hidden_size=width,
                          intermediate_size=block.mlp.c_fc.out_features,
                          num_hidden_layers=len(encoder.transformer.resblocks),
                          num_attention_heads=block.attn.num_heads, max_position_embeddings=encoder.context_length,
                          hidden_act='gelu', projection_dim=width, bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=0)


def save_tiny_sd_checkpoint(parts: SDParts, path: str) -> str:
    """Write ``parts`` as an LDM single file (``{'state_dict': ...}``, like ``v2-1_512-ema-pruned.ckpt``)."""
    torch.save({'state_dict': sd_ldm_state_dict(parts), 'global_step': 0}, path)
    return path


def save_tiny_diffusers_folder(parts: SDParts, folder: str) -> str:
    """Write ``parts`` as a diffusers SD folder (``unet/``, ``vae/``, ``text_encoder/``); the text encoder file uses
    the hub's ``text_model.*`` names (as ``stabilityai/stable-diffusion-2-1-base`` ships it)."""
    from safetensors.torch import save_file
    parts.unet.save_pretrained(os.path.join(folder, 'unet'))
    parts.vae.save_pretrained(os.path.join(folder, 'vae'))
    text_folder = os.path.join(folder, 'text_encoder')
    clip_text_config(parts.text_encoder).save_pretrained(text_folder)
    save_file(open_clip_text_to_clip_text(parts.text_encoder), os.path.join(text_folder, 'model.safetensors'))
    return folder


def save_tiny_diffbir_controlnet(controlnet: IRControlNet, path: str) -> str:
    """Write ``controlnet`` as a bare DiffBIR ControlNet state dict (the ``v1_face.pth`` / ``v2.pth`` layout)."""
    torch.save(ircontrolnet_to_diffbir(controlnet.state_dict(), controlnet.config.layers_per_block), path)
    return path


def save_tiny_face_swinir(model: FaceSwinIR, path: str) -> str:
    """Write ``model`` like ``face_swinir_v1.ckpt`` (weights under ``state_dict``)."""
    torch.save({'state_dict': {k: v.clone() for k, v in model.state_dict().items()}}, path)
    return path


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Add N(0, std²) noise to every parameter (so zero-initialised layers are not zero and every weight matters
    in an output comparison). Deterministic in ``seed``; returns the module in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter) * std)
    return module.eval()


def save_tiny_osediff_pkl(parts: SDParts, path: str, rank: int = 4, seed: int = 0, std: float = 0.05) -> str:
    """:func:`osediff_pkl_dict` on ``parts``' UNet and VAE, written to ``path``. Save ``parts``' SD checkpoint
    *before* calling this (adapters rename the wrapped weights)."""
    checkpoint = osediff_pkl_dict(parts.unet, parts.vae, rank, seed, std)
    for key in ('state_dict_unet', 'state_dict_vae'):
        checkpoint[key] = {k: v.clone() for k, v in checkpoint[key].items()}
    torch.save(checkpoint, path)
    return path


#: The package's inverse converters are re-exported: the tests reach every layout helper through this module.
__all__ = ['StateDict', 'diffusers_unet_to_ldm', 'diffusers_vae_to_ldm', 'ircontrolnet_to_diffbir',
           'open_clip_text_to_ldm', 'osediff_official_unet_lists', 'osediff_official_vae_list', 'osediff_pkl_dict',
           'sd_ldm_state_dict', 'open_clip_text_to_clip_text', 'clip_text_config', 'save_tiny_sd_checkpoint',
           'save_tiny_diffusers_folder', 'save_tiny_diffbir_controlnet', 'save_tiny_face_swinir', 'randomize_',
           'save_tiny_osediff_pkl']
