"""The Stable Diffusion architecture as data: :class:`SDConfig` (UNet, VAE and text tower in LDM terms) and SD
2.1-base's configuration :data:`SD21_BASE`, the one every restorer builds at real size.

Kept apart from :mod:`drward.archs.sd_parts` (which builds the modules) so that :mod:`drward.archs.tiny_configs`
can define the tiny configuration without importing the builders, and the builders can import both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)

LATENT_SCALE = 0.18215

# SD 2.1-base as DiffBIR builds it (configs/inference/cldm.yaml: unet_cfg, vae_cfg.ddconfig, clip_cfg.text_cfg).
SD21_LDM_UNET = dict(in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                     num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
                     use_linear_in_transformer=True, transformer_depth=1, context_dim=1024, legacy=False)
SD21_LDM_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                    num_res_blocks=2, attn_resolutions=[], dropout=0.0)
VIT_H_14_TEXT = dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24)


@dataclass(frozen=True)
class SDConfig:
    """One Stable Diffusion architecture, in LDM terms. ``unet``: LDM ``unet_config.params``; ``vae``: LDM
    ``ddconfig``; ``text``: open_clip ``text_cfg`` (``context_length, vocab_size, width, heads, layers``);
    ``unet_overrides``: diffusers UNet kwargs set on top of the derived config (tiny models only)."""

    unet: Mapping = field(default_factory=lambda: dict(SD21_LDM_UNET))
    vae: Mapping = field(default_factory=lambda: dict(SD21_LDM_VAE))
    text: Mapping = field(default_factory=lambda: dict(VIT_H_14_TEXT))
    latent_scale: float = LATENT_SCALE
    name: str = 'sd2.1-base'
    unet_overrides: Mapping = field(default_factory=dict)

    def _ldm_config(self) -> dict:
        return {'model': {'params': {'unet_config': {'params': dict(self.unet)},
                                     'first_stage_config': {'params': {'embed_dim': self.vae['z_channels'],
                                                                       'ddconfig': dict(self.vae)}},
                                     'scale_factor': self.latent_scale}}}

    def unet_diffusers_config(self) -> dict:
        """``UNet2DConditionModel`` kwargs (diffusers' own LDM → diffusers config mapping)."""
        return {**create_unet_diffusers_config_from_ldm(self._ldm_config(), {}), **self.unet_overrides}

    def vae_diffusers_config(self) -> dict:
        """``AutoencoderKL`` kwargs (diffusers' own LDM → diffusers config mapping)."""
        return create_vae_diffusers_config_from_ldm(self._ldm_config(), {})


SD21_BASE = SDConfig()
