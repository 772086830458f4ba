"""Tiny configurations of the real architectures, for tests and the CPU demo (no weight files, ~1 M parameters each).

Same families and the same topology as the real models, only narrower: the UNet keeps SD's four levels, two
res-blocks per level, cross-attention in the first three levels and linear transformer projections, so the
IRControlNet still emits 13 residuals; the VAE keeps four levels (8× down-sampling); the text tower is an
open_clip text transformer with the real BPE vocabulary (so the offline tokenizer works unchanged); the face SwinIR
keeps DiffBIR's pixel-unshuffle ×8 front and nearest+conv ×8 back. Channel counts are multiples of 32 (LDM's
GroupNorm has 32 groups); the tiny UNet/ControlNet use 16 groups in diffusers so that one 64² image (an 8² latent,
1² at the UNet's lowest level) still has two values per group.
"""
from __future__ import annotations

import copy

from drward.archs.sd_config import SD21_LDM_UNET, SD21_LDM_VAE, VIT_H_14_TEXT, SDConfig


def _narrower(real: dict, **widths) -> dict:
    """``real``'s topology (its own copy: no list shared with the real configuration) with ``widths`` changed."""
    return {**copy.deepcopy(real), **widths}


TINY_LDM_UNET = _narrower(SD21_LDM_UNET, model_channels=32, channel_mult=[1, 1, 1, 2], num_head_channels=16,
                          context_dim=32)
TINY_LDM_VAE = _narrower(SD21_LDM_VAE, resolution=64, ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1)
TINY_TEXT = _narrower(VIT_H_14_TEXT, width=32, heads=2, layers=3)

TINY_SD = SDConfig(unet=TINY_LDM_UNET, vae=TINY_LDM_VAE, text=TINY_TEXT, name='tiny-sd',
                   unet_overrides=dict(norm_num_groups=16))

# DiffBIR's face SwinIR (configs/inference/swinir.yaml) shrunk: window 8 on a 1/8-resolution feature map, so inputs
# are padded to multiples of 64 as in the real model.
TINY_FACE_SWINIR = dict(img_size=8, patch_size=1, in_chans=3, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
                        window_size=8, mlp_ratio=2, sf=8, img_range=1.0, upsampler='nearest+conv',
                        resi_connection='1conv', unshuffle=True, unshuffle_scale=8)

# Scale of the random weights given to the tiny ControlNet's zero convolutions, so that a tiny "pretrained"
# IRControlNet has non-zero residuals (a real v1_face.pth has trained, non-zero zero-convs).
TINY_ZERO_CONV_STD = 0.05
