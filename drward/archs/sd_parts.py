"""What every Stable-Diffusion-based restorer shares: the UNet, the VAE and the text tower of SD 2.1-base.

Architectures are written in the LDM terms of the public releases (DiffBIR's ``configs/inference/cldm.yaml``:
``unet_cfg``, ``vae_cfg.ddconfig``, ``clip_cfg.text_cfg``) and turned into diffusers configs by diffusers' own
``create_*_diffusers_config_from_ldm``, so a tiny test model and the real one go through the same code. Nothing here
touches a model hub; weights come from :mod:`drward.weights`. The configurations themselves (:class:`SDConfig`,
:data:`SD21_BASE`) live in :mod:`drward.archs.sd_config`, the tiny one in :mod:`drward.archs.tiny_configs`.

* latent encode ``c = E(x).mode() · s`` (DiffBIR) or a draw ``E(x).sample() · s`` (OSEDiff), and decode ``D(z / s)``,
  with the latent scale ``s = 0.18215``; DiffBIR pads inputs to multiples of 64 (:func:`pad_to_multiple`: the VAE's
  8× and the UNet's three 2× down-samplings), OSEDiff only rounds them to multiples of 8;
* the text context: open_clip's ViT-H-14 text tower read at the **penultimate** layer (SD 2.x, DiffBIR's
  ``FrozenOpenCLIPEmbedder(layer='penultimate')``): ``context = ln_final(h_{L−1})``, where ``h_l`` is the residual
  stream after block ``l`` of ``L``; the tower holds only the ``L − 1`` blocks it runs;
* the empty-prompt context, computed once and cached (DiffBIR feeds SD an empty prompt, docs/design.md "Captions");
  per-image prompts (OSEDiff) are encoded per batch and not cached.
"""
from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import LayerNorm, Transformer
from torch import nn

from drward.archs.precision import cast_buffers
from drward.archs.sd_config import LATENT_SCALE, SD21_BASE, SDConfig
from drward.archs.tiny_configs import TINY_SD
from drward.utils.option_schema import Num, Option, Text

#: The option keys of an SD-based restorer (``network_g``), declared once for DiffBIR and OSEDiff.
SD_OPTIONS = {
    'sd_checkpoint': Option(Text(nullable=True), None, 'SD 2.1-base: the LDM file (v2-1_512-ema-pruned.ckpt) or a '
                            'diffusers folder (required unless tiny or random_weights)'),
    'latent_scale': Option(Num(0, lo_open=True), LATENT_SCALE, "SD's latent scale s: c = E(x)·s, D(z / s)"),
}

__all__ = ['LATENT_SCALE', 'SD_OPTIONS', 'SD21_BASE', 'SDConfig', 'OpenCLIPTextEncoder', 'SDParts', 'build_sd_parts',
           'seeded_rng', 'pad_to_multiple', 'copy_frozen']


class OpenCLIPTextEncoder(nn.Module):
    """open_clip's text tower at the penultimate layer: ``context = ln_final(h_{L−1})`` (B, context_length, width).

    Parameter names follow open_clip's ``CLIP`` text part (``token_embedding``, ``positional_embedding``,
    ``transformer.resblocks.i``, ``ln_final``), i.e. the SD checkpoint's ``cond_stage_model.model.*`` keys. The
    tokenizer is open_clip's BPE tokenizer, shipped with the package (works offline; DiffBIR's reference), unless
    ``tokenizer`` (prompts, context_length → ids) is given: OSEDiff's SD 2.1 ``CLIPTokenizer``
    (:mod:`drward.archs.sd_tokenizer`).
    """

    def __init__(self, width: int, heads: int, layers: int, context_length: int = 77, vocab_size: int = 49408,
                 layer: str = 'penultimate', tokenizer: Optional[Callable[..., torch.Tensor]] = None):
        super().__init__()
        if layer not in ('penultimate', 'last'):
            raise ValueError(f"layer must be 'penultimate' or 'last', got {layer!r}")
        self.layer = layer
        self.context_length = context_length
        blocks_run = layers - 1 if layer == 'penultimate' else layers
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, blocks_run, heads, batch_first=True)
        self.ln_final = LayerNorm(width)
        causal = torch.full((context_length, context_length), float('-inf')).triu_(1)
        self.register_buffer('attn_mask', causal, persistent=False)
        self.tokenizer = tokenizer or SimpleTokenizer(context_length=context_length)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """BPE token ids (B, context_length), SOT/EOT added, zero padded."""
        return self.tokenizer(list(prompts), context_length=self.context_length)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        return self.ln_final(x)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Context for a list of prompts, on this module's device."""
        return self(self.tokenize(prompts).to(self.positional_embedding.device))


class SDParts(nn.Module):
    """UNet (``unet``), VAE (``vae``) and text tower (``text_encoder``) of one SD architecture, randomly initialised;
    :func:`drward.weights.sd.load_sd_weights` fills them from a checkpoint."""

    def __init__(self, config: SDConfig = SD21_BASE, tokenizer: Optional[Callable[..., torch.Tensor]] = None):
        super().__init__()
        self.config = config
        self.latent_scale = float(config.latent_scale)
        self.unet = UNet2DConditionModel(**config.unet_diffusers_config())
        self.vae = AutoencoderKL(**config.vae_diffusers_config())
        self.text_encoder = OpenCLIPTextEncoder(**config.text, layer='penultimate', tokenizer=tokenizer)
        self._context_cache: Dict[Tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def freeze(self) -> 'SDParts':
        """No gradient into any weight here, eval mode (dropout off)."""
        self.requires_grad_(False)
        return self.eval()

    def encode_latent(self, image: torch.Tensor, sample: bool = False,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``E(x).mode() · s`` for ``x`` (B, 3, H, W) in [−1, 1] → (B, 4, H/8, W/8); with ``sample=True`` a draw
        ``(μ + σ·n) · s`` of the posterior instead, ``n ~ N(0, I)`` from ``generator``."""
        posterior = self.vae.encode(image).latent_dist
        latent = posterior.sample(generator) if sample else posterior.mode()
        return latent * self.latent_scale

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """``D(z / s)`` → image (B, 3, 8h, 8w), nominally in [−1, 1] (not clamped)."""
        return self.vae.decode(latent / self.latent_scale).sample

    def prompt_context(self, prompt: str, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Text context of one prompt repeated over the batch (B, 77, width). Computed without gradient once per
        (prompt, device, dtype) and cached: the text tower is frozen."""
        key = (prompt, torch.device(device), dtype)
        if key not in self._context_cache:
            with torch.no_grad():
                self._context_cache[key] = self.text_encoder.encode([prompt]).to(device=device, dtype=dtype)
        return self._context_cache[key].expand(batch, -1, -1)

    def prompts_context(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Per-sample text contexts (B, 77, width) for ``prompts`` (one per image), without gradient. All equal: the
        cached :meth:`prompt_context`; otherwise one uncached text-tower call (captions vary per image)."""
        prompts = list(prompts)
        if len(set(prompts)) == 1:
            return self.prompt_context(prompts[0], len(prompts), device, dtype)
        with torch.no_grad():
            return self.text_encoder.encode(prompts).to(device=device, dtype=dtype)

    def clear_context_cache(self) -> None:
        """Forget cached contexts (call after loading new text-tower weights)."""
        self._context_cache.clear()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in the UNet and the VAE (its decoder dominates the backward, docs/design.md §5)."""
        for model in (self.unet, self.vae):
            model.enable_gradient_checkpointing() if enabled else model.disable_gradient_checkpointing()

    def _apply(self, fn, recurse=True):
        self.clear_context_cache()
        return super()._apply(fn, recurse)


def build_sd_parts(tiny: bool, latent_scale: float = LATENT_SCALE,
                   tokenizer: Optional[Callable[..., torch.Tensor]] = None) -> SDParts:
    """Randomly initialised SD 2.1-base parts, or the tiny test configuration, with ``latent_scale`` (and the text
    tower's ``tokenizer``, default open_clip's)."""
    return SDParts(dataclasses.replace(TINY_SD if tiny else SD21_BASE, latent_scale=latent_scale), tokenizer)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Random initialisation inside the block is reproducible in ``seed``; the global RNG state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero padding at the bottom/right up to multiples of ``multiple`` (DiffBIR's ``pad_to_multiples_of``)."""
    pad_h, pad_w = (-image.shape[-2]) % multiple, (-image.shape[-1]) % multiple
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def copy_frozen(module: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A deep copy with ``requires_grad=False`` everywhere, in eval mode (a frozen reference θ₀), its floating
    weights stored in ``dtype`` (default: as they are). Each parameter is copied once, straight into ``dtype``."""
    memo = {id(p): nn.Parameter(p.detach().to(dtype or p.dtype, copy=True), requires_grad=False)
            for p in module.parameters()}
    frozen = copy.deepcopy(module, memo)
    if dtype is not None:
        cast_buffers(frozen, dtype)
    frozen.requires_grad_(False)
    return frozen.eval()
