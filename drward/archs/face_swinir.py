"""DiffBIR's face stage-1 cleaner (``face_swinir_v1.ckpt``, from DifFace) on BasicSR's ``SwinIR``.

DiffBIR's face SwinIR (``configs/inference/swinir.yaml``) is the SwinIR body with two changes BasicSR's class lacks:
a pixel-unshuffle ×8 in front of the first convolution (``conv_first = [PixelUnshuffle(8), Conv2d(3·64 → C)]``)
and a nearest+conv up-sampler with three ×2 stages (``conv_up1..3``), so the output has the input's size. The
Swin layers, norms and buffers are BasicSR's, with the same parameter names as the checkpoint.

``forward``: ``x`` (B, 3, H, W) in [0, 1] → cleaned image in [0, 1] (not clamped), same size. ``H, W`` are
reflect-padded to multiples of the window size first (as DiffBIR does); callers pad to multiples of
``window_size · unshuffle_scale`` (64) so the window fits the 1/8-resolution feature map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.archs.swinir_arch import SwinIR, WindowAttention
from torch import nn

# configs/inference/swinir.yaml of DiffBIR.
FACE_SWINIR = dict(img_size=64, patch_size=1, in_chans=3, embed_dim=180, depths=[6] * 8, num_heads=[6] * 8,
                   window_size=8, mlp_ratio=2, sf=8, img_range=1.0, upsampler='nearest+conv',
                   resi_connection='1conv', unshuffle=True, unshuffle_scale=8)

_NUM_FEAT = 64  # SwinIR's reconstruction width


def _mask_in_input_dtype(_module: nn.Module, args: tuple, kwargs: dict):
    """BasicSR builds the shifted-window mask of an input size other than ``img_size`` in float32 at each call; with
    bf16 weights that mask would promote the attention to float32. Cast it to the input's dtype."""
    mask = kwargs.get('mask')
    if mask is not None and mask.dtype != args[0].dtype:
        kwargs['mask'] = mask.to(args[0].dtype)
    return args, kwargs


class FaceSwinIR(SwinIR):
    """BasicSR ``SwinIR`` with DiffBIR's unshuffle front and ×8 nearest+conv back (see the module docstring)."""

    def __init__(self, img_size: int = 64, patch_size: int = 1, in_chans: int = 3, embed_dim: int = 180,
                 depths=(6,) * 8, num_heads=(6,) * 8, window_size: int = 8, mlp_ratio: float = 2.0, sf: int = 8,
                 img_range: float = 1.0, upsampler: str = 'nearest+conv', resi_connection: str = '1conv',
                 unshuffle: bool = True, unshuffle_scale: int = 8):
        if upsampler != 'nearest+conv' or not unshuffle or sf != 8 or unshuffle_scale != 8:
            raise ValueError('FaceSwinIR implements DiffBIR face stage 1 only: unshuffle ×8 and nearest+conv ×8')
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         depths=list(depths), num_heads=list(num_heads), window_size=window_size,
                         mlp_ratio=mlp_ratio, upscale=4, img_range=img_range, upsampler='nearest+conv',
                         resi_connection=resi_connection)
        self.upscale = sf
        self.window_size = window_size
        self.unshuffle_scale = unshuffle_scale
        self.conv_first = nn.Sequential(nn.PixelUnshuffle(unshuffle_scale),
                                        nn.Conv2d(in_chans * unshuffle_scale ** 2, embed_dim, 3, 1, 1))
        self.conv_up3 = nn.Conv2d(_NUM_FEAT, _NUM_FEAT, 3, 1, 1)
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.register_forward_pre_hook(_mask_in_input_dtype, with_kwargs=True)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (the window on the unshuffled map)."""
        return self.window_size * self.unshuffle_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.window_size, (-width) % self.window_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
        mean = self.mean.to(x)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        for conv in (self.conv_up1, self.conv_up2, self.conv_up3):
            x = self.lrelu(conv(F.interpolate(x, scale_factor=2, mode='nearest')))
        x = self.conv_last(self.lrelu(self.conv_hr(x)))
        return (x / self.img_range + mean)[..., :height, :width]
