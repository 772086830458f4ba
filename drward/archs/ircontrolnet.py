"""DiffBIR's IRControlNet on diffusers' ``ControlNetModel`` (docs/design.md §4).

IRControlNet is a copy of the SD UNet's encoder (time embedding, ``conv_in``, down blocks, mid block) whose first
convolution takes ``cat(z_t, c)`` — the noisy latent and the VAE latent of the stage-1 output, 4 + 4 channels — with
no hint encoder. Zero-initialised 1×1 convolutions read the 12 skip features and the mid feature; the 13 outputs
``c_k^θ`` (k = 1…13), scaled by ``control_scales``, are added to the frozen UNet's decoder skips and mid block
(diffusers' ``down_block_additional_residuals`` / ``mid_block_additional_residual``).
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Set, Tuple, Union

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

# UNet config keys that ControlNetModel also takes (the encoder half of the UNet).
_SHARED_CONFIG_KEYS = ('down_block_types', 'block_out_channels', 'layers_per_block', 'cross_attention_dim',
                       'attention_head_dim', 'use_linear_projection', 'transformer_layers_per_block',
                       'class_embed_type', 'addition_embed_type', 'addition_time_embed_dim',
                       'projection_class_embeddings_input_dim', 'flip_sin_to_cos', 'freq_shift', 'norm_num_groups',
                       'norm_eps', 'only_cross_attention', 'upcast_attention', 'num_attention_heads')

Residuals = List[torch.Tensor]


class IRControlNet(ControlNetModel):
    """``ControlNetModel`` whose ``conv_in`` reads ``cat(z_t, c)`` (``in_channels`` = 8) and that has no
    ``controlnet_cond_embedding``. ``forward`` returns the 13 unscaled residuals ``[c_1 … c_12, c_mid]``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.controlnet_cond_embedding

    def forward(self, z_t: torch.Tensor, cond_latent: torch.Tensor, timestep: torch.Tensor,
                context: torch.Tensor) -> Residuals:  # type: ignore[override]
        """Residuals for ``z_t`` (B, 4, h, w), ``c`` (B, 4, h, w), ``t`` (B,) and text context (B, L, D)."""
        t_emb = self.time_proj(timestep.expand(z_t.shape[0])).to(dtype=z_t.dtype)
        emb = self.time_embedding(t_emb)
        h = self.conv_in(torch.cat([z_t, cond_latent], dim=1))
        skips = [h]
        for block in self.down_blocks:
            if getattr(block, 'has_cross_attention', False):
                h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, res = block(hidden_states=h, temb=emb)
            skips.extend(res)
        h = self.mid_block(h, emb, encoder_hidden_states=context)
        out = [zero_conv(skip) for zero_conv, skip in zip(self.controlnet_down_blocks, skips)]
        out.append(self.controlnet_mid_block(h))
        return out


def ircontrolnet_config(unet_config: Mapping) -> dict:
    """IRControlNet kwargs from a ``UNet2DConditionModel`` config: its encoder, ``in_channels = 2 × latent``."""
    config = {k: unet_config[k] for k in _SHARED_CONFIG_KEYS if k in unet_config}
    config['in_channels'] = 2 * unet_config['in_channels']
    return config


def scale_residuals(residuals: Residuals, scales: Sequence[float]) -> Tuple[Residuals, torch.Tensor]:
    """``(down, mid)`` for the UNet: ``s_k · c_k``; the last residual is the mid block's."""
    if len(scales) != len(residuals):
        raise ValueError(f'{len(residuals)} control residuals but {len(scales)} control scales')
    scaled = [c * s if s != 1.0 else c for c, s in zip(residuals, scales)]
    return scaled[:-1], scaled[-1]


def expand_control_scales(scales: Union[float, Sequence[float]], count: int = 13) -> List[float]:
    """One float → ``count`` copies; a list must have ``count`` entries."""
    if isinstance(scales, (int, float)):
        return [float(scales)] * count
    scales = [float(s) for s in scales]
    if len(scales) != count:
        raise ValueError(f'control_scales needs 1 or {count} values, got {len(scales)}')
    return scales


@torch.no_grad()
def init_from_unet(controlnet: IRControlNet, unet: UNet2DConditionModel) -> Tuple[Set[str], Set[str]]:
    """DiffBIR's start of stage-2 training: copy every UNet weight with the same name; ``conv_in.weight`` gets the
    UNet's kernel on the latent channels and zeros on the condition channels; the rest (zero convs) stay as built.

    Returns ``(zero_padded_keys, kept_keys)``.
    """
    unet_state = unet.state_dict()
    padded, kept = set(), set()
    new_state = {}
    for key, value in controlnet.state_dict().items():
        source = unet_state.get(key)
        if source is None:
            kept.add(key)
            new_state[key] = value
        elif source.shape == value.shape:
            new_state[key] = source.clone()
        else:
            extra = value.shape[1] - source.shape[1]
            zeros = source.new_zeros(source.shape[0], extra, *source.shape[2:])
            new_state[key] = torch.cat([source, zeros], dim=1)
            padded.add(key)
    controlnet.load_state_dict(new_state, strict=True)
    return padded, kept


def zero_conv_modules(controlnet: IRControlNet) -> List[nn.Conv2d]:
    """The 13 zero convolutions, in residual order."""
    return list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]
