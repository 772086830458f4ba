"""Random checkpoints at the real sizes, in the official file layouts, for rehearsals of the real option files.

:func:`write_real_size_weights` writes, deterministically in ``seed``, one file per release a user downloads:

==========  ============================  ==========================================================================
name        file                          layout
==========  ============================  ==========================================================================
``sd``      ``v2-1_512-ema-pruned.ckpt``  ``{'state_dict': …}``: LDM UNet / VAE / full open_clip text tower (24
                                          blocks, projection, logit scale) and LatentDiffusion's schedule buffers
``diffbir`` ``v1_face.pth``               bare DiffBIR ``ControlNet`` state dict (IRControlNet, 8-channel conv_in)
``swinir``  ``face_swinir_v1.ckpt``       ``{'state_dict': …}`` of DiffBIR's face SwinIR (``configs/inference``)
``osediff`` ``osediff_face.pkl``          OSEDiff's dict: module lists, ranks (4), LoRA factors and conv_in
``frm``     ``HPS_v2_compressed.pt``      ``{'state_dict': …}`` of open_clip ``ViT-H-14``
``vgg16``   ``vgg16-397923af.pth``        torchvision ``vgg16`` state dict (LPIPS' backbone)
==========  ============================  ==========================================================================

Weights are the modules' own random initialisation (seeded), except the parts a real release has trained away
from their zero start: the IRControlNet's zero convolutions get N(0, (0.1/√fan_in)²) (residuals ≈ 0.1 of the
features), OSEDiff's LoRA factors and conv_in get N(0, 0.001²) added (B ≠ 0). The values mean nothing; shapes,
names, dtypes (float32, as released) and sizes are the real ones. Files are written one model at a time from the
model's own tensors (no second copy): peak memory ≈ the largest file (SD, ≈ 5.2 GB). A file already present with
the expected tensor count and size is reused, not rewritten (content is not checked).

``tiny=True`` writes the same layouts at the tiny test sizes (:mod:`drward.archs.tiny_configs`), except ``vgg16``
(torchvision's VGG16 has one size; 528 MB), which a tiny run does not write.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional

import open_clip
import torch
from torch import nn

from drward.archs.face_swinir import FACE_SWINIR, FaceSwinIR
from drward.archs.frm_arch import resolve_clip_config
from drward.archs.ircontrolnet import IRControlNet, ircontrolnet_config, zero_conv_modules
from drward.archs.sd_parts import SD21_BASE, OpenCLIPTextEncoder, SDConfig, seeded_rng
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_SD
from drward.utils.safe_load import load_weights
from drward.weights.official_layout import (
    diffusers_unet_to_ldm,
    diffusers_vae_to_ldm,
    ircontrolnet_to_diffbir,
    open_clip_text_to_ldm,
    osediff_pkl_dict,
)
from drward.weights.sd import SCHEDULE_KEYS, TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

FILES: Dict[str, str] = {'sd': 'v2-1_512-ema-pruned.ckpt', 'diffbir': 'v1_face.pth', 'swinir': 'face_swinir_v1.ckpt',
                         'osediff': 'osediff_face.pkl', 'frm': 'HPS_v2_compressed.pt', 'vgg16': 'vgg16-397923af.pth'}
TINY_SKIPPED = ('vgg16',)
ZERO_CONV_GAIN = 0.1   # zero-conv weights ~ N(0, (gain/√fan_in)²): residuals about 0.1 of the skip features
OSEDIFF_LORA_STD = 1e-3  # added to LoRA factors and conv_in: ΔW = (α/r)·B·A of std ≈ 1e-3 (base weights ≈ 1e-2)
OSEDIFF_RANK = 4


def _sd_config(tiny: bool) -> SDConfig:
    return TINY_SD if tiny else SD21_BASE


def ldm_schedule_buffers(num_timesteps: int = 1000, beta_start: float = 0.00085,
                         beta_end: float = 0.012) -> Dict[str, torch.Tensor]:
    """LatentDiffusion's ``register_schedule`` buffers for SD's ``linear`` schedule (float32, as stored):
    ``β_t``, ``ᾱ_t``, ``ᾱ_{t−1}``, √ᾱ, √(1−ᾱ), log(1−ᾱ), √(1/ᾱ), √(1/ᾱ−1), the posterior variance
    ``β_t(1−ᾱ_{t−1})/(1−ᾱ_t)``, its log clipped at 1e-20, and the posterior mean coefficients
    ``β_t√ᾱ_{t−1}/(1−ᾱ_t)``, ``(1−ᾱ_{t−1})√α_t/(1−ᾱ_t)``."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2
    alphas = 1 - betas
    bar = torch.cumprod(alphas, 0)
    prev = torch.cat([bar.new_ones(1), bar[:-1]])
    variance = betas * (1 - prev) / (1 - bar)
    values = [betas, bar, prev, bar.sqrt(), (1 - bar).sqrt(), (1 - bar).log(), (1 / bar).sqrt(),
              (1 / bar - 1).sqrt(), variance, variance.clamp(min=1e-20).log(), betas * prev.sqrt() / (1 - bar),
              (1 - prev) * alphas.sqrt() / (1 - bar)]
    return {key: value.float() for key, value in zip(SCHEDULE_KEYS[:12], values)}


def _sd_payload(seed: int, tiny: bool) -> Dict:
    """The LDM single file; each part built, renamed (its own tensors) and released before the next is built."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    config = _sd_config(tiny)
    with seeded_rng(seed):
        unet = UNet2DConditionModel(**config.unet_diffusers_config())
    state = {UNET_PREFIX + k: v for k, v in
             diffusers_unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, clone=False).items()}
    del unet
    with seeded_rng(seed + 1):
        vae = AutoencoderKL(**config.vae_diffusers_config())
    state.update({VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(vae.state_dict(), clone=False).items()})
    del vae
    with seeded_rng(seed + 2):
        text = OpenCLIPTextEncoder(**config.text, layer='penultimate')
    state.update({TEXT_PREFIX + k: v for k, v in open_clip_text_to_ldm(text, seed, clone=False).items()})
    state.update(ldm_schedule_buffers())
    return {'state_dict': state, 'global_step': 0}


def _diffbir_payload(seed: int, tiny: bool) -> Dict:
    with seeded_rng(seed):
        controlnet = IRControlNet(**ircontrolnet_config(_sd_config(tiny).unet_diffusers_config()))
        for conv in zero_conv_modules(controlnet):
            std = ZERO_CONV_GAIN / math.sqrt(conv.weight[0].numel())
            nn.init.normal_(conv.weight, std=std)
            nn.init.normal_(conv.bias, std=std)
    return ircontrolnet_to_diffbir(controlnet.state_dict(), controlnet.config.layers_per_block, clone=False)


def _swinir_payload(seed: int, tiny: bool) -> Dict:
    with seeded_rng(seed):
        model = FaceSwinIR(**(TINY_FACE_SWINIR if tiny else FACE_SWINIR))
    return {'state_dict': model.state_dict()}


def _osediff_payload(seed: int, tiny: bool) -> Dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    config = _sd_config(tiny)
    with seeded_rng(seed):  # the SD file's UNet and VAE seeds: the same base conv_in
        unet = UNet2DConditionModel(**config.unet_diffusers_config())
    with seeded_rng(seed + 1):
        vae = AutoencoderKL(**config.vae_diffusers_config())
    with seeded_rng(seed + 3):
        return osediff_pkl_dict(unet, vae, rank=OSEDIFF_RANK, seed=seed, std=0.05 if tiny else OSEDIFF_LORA_STD)


def _frm_payload(seed: int, tiny: bool) -> Dict:
    with seeded_rng(seed):
        clip = open_clip.CLIP(**resolve_clip_config('tiny' if tiny else 'ViT-H-14'))
    return {'state_dict': clip.state_dict()}


def _vgg16_payload(seed: int, tiny: bool) -> Dict:
    import torchvision
    with seeded_rng(seed):
        return torchvision.models.vgg16(weights=None).state_dict()


_BUILDERS: Dict[str, Callable[[int, bool], Dict]] = {
    'sd': _sd_payload, 'diffbir': _diffbir_payload, 'swinir': _swinir_payload, 'osediff': _osediff_payload,
    'frm': _frm_payload, 'vgg16': _vgg16_payload}
# Each file's seed offset from ``seed``: the OSEDiff file shares the SD file's (its base conv_in is SD's).
_BUILT_ON_CPU = ('swinir',)
_SEED_OFFSETS = {'sd': 0, 'diffbir': 10, 'swinir': 20, 'osediff': 0, 'frm': 30, 'vgg16': 40}


def _tensors(payload) -> Iterable[torch.Tensor]:
    """Every tensor in a (nested) checkpoint dict."""
    if isinstance(payload, torch.Tensor):
        yield payload
    elif isinstance(payload, dict):
        for value in payload.values():
            yield from _tensors(value)


@dataclass(frozen=True)
class Expected:
    """What a written file holds: ``tensors`` (count) and ``data_bytes`` (their storage, the bulk of the file)."""

    tensors: int
    data_bytes: int

    def matches(self, path: str) -> bool:
        """The file at ``path`` has this many tensors (read with mmap: nothing loaded) and ≥ their bytes."""
        if not os.path.isfile(path) or os.path.getsize(path) < self.data_bytes:
            return False
        try:
            payload = load_weights(path, mmap=True)
        except Exception:  # a truncated or foreign file: rewrite it
            return False
        return sum(1 for _ in _tensors(payload)) == self.tensors


def expected_contents(name: str, tiny: bool = False) -> Expected:
    """Tensor count and bytes of ``name``'s file, from a build on the meta device (nothing allocated; BasicSR's
    SwinIR reads a tensor while building, so the small SwinIR is built on the CPU)."""
    with torch.device('cpu' if name in _BUILT_ON_CPU else 'meta'), torch.no_grad():
        payload = _BUILDERS[name](0, tiny)
    tensors = list(_tensors(payload))
    return Expected(len(tensors), sum(t.numel() * t.element_size() for t in tensors))


def write_one(name: str, path: str, seed: int = 0, tiny: bool = False) -> bool:
    """Write ``name``'s file at ``path`` unless an equivalent one is there; True when it was written."""
    if expected_contents(name, tiny).matches(path):
        return False
    payload = _BUILDERS[name](seed + _SEED_OFFSETS[name], tiny)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f'{path}.partial'
    torch.save(payload, partial)
    del payload
    os.replace(partial, path)  # a run killed mid-write leaves no file that looks complete
    return True


def write_real_size_weights(folder: str, seed: int = 0, which: Optional[Iterable[str]] = None, tiny: bool = False,
                            log: Optional[Callable[[str], None]] = None) -> Dict[str, str]:
    """Write the files named in ``which`` (default: all of :data:`FILES`; a tiny run skips ``vgg16``) into
    ``folder``; returns ``{name: path}``. ``log`` gets one line per file: name, path, size, seconds, written/reused."""
    names = list(which) if which is not None else [n for n in FILES if not (tiny and n in TINY_SKIPPED)]
    unknown = sorted(set(names) - set(FILES))
    if unknown:
        raise ValueError(f'write_real_size_weights: unknown names {unknown}; known: {list(FILES)}')
    if tiny and set(names) & set(TINY_SKIPPED):
        raise ValueError(f'write_real_size_weights: {list(TINY_SKIPPED)} exist at real size only')
    paths = {}
    for name in names:
        path = os.path.join(folder, FILES[name])
        start = time.perf_counter()
        with torch.no_grad():
            written = write_one(name, path, seed, tiny)
        if log is not None:
            log(f'{name:8s} {path}  {os.path.getsize(path) / 2 ** 20:9.1f} MiB  '
                f'{time.perf_counter() - start:6.1f} s  {"written" if written else "reused"}')
        paths[name] = path
    return paths


def main(argv: Optional[Iterable[str]] = None) -> None:
    """``python -m drward.weights.synthetic DIR [--seed S] [--only NAME ...] [--tiny]``."""
    parser = argparse.ArgumentParser(description='Write real-size random weights in the official layouts.')
    parser.add_argument('folder')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', nargs='+', choices=list(FILES), help='these files only (default: all)')
    parser.add_argument('--tiny', action='store_true', help='tiny test sizes (no vgg16)')
    args = parser.parse_args(None if argv is None else list(argv))
    write_real_size_weights(args.folder, args.seed, args.only, tiny=args.tiny, log=lambda line: print(line, flush=True))


if __name__ == '__main__':
    main()
