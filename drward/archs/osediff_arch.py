"""OSEDiff as a :class:`~drward.archs.restorer.Restorer`: SD 2.1-base UNet and VAE with LoRA adapters (peft), one
denoising step (docs/design.md §1, §4, §6).

One restoration of ``I_LQ`` (B, 3, H, W) in [0, 1], in the order of OSEDiff's own test (``test_osediff.py``,
``osediff.py``'s ``OSEDiff_test.forward``):

0. sides rounded down to multiples of 8 (test_osediff.py:107-109; bicubic here, Lanczos there): the latent is
   H/8 × W/8 however odd, no padding to 64 (diffusers' UNet up-samples to its skips' sizes);
1. ``z_LQ = E_φ(2·I_LQ − 1).sample() · 0.18215`` — the VAE encoder with its LoRA adapter (trained); OSEDiff draws
   from the posterior in training and test alike (``vae_latent: mode`` takes its mean instead);
2. ``ε = UNet_θ(z_LQ, t = 999, ctx)``, ``ctx`` the SD text context of the image's caption (or the fallback prompt);
3. ``ẑ_0 = (z_LQ − sqrt(1 − ᾱ_999)·ε) / sqrt(ᾱ_999)`` — the closed form that OSEDiff's one-step
   ``DDPMScheduler.step`` reduces to (that call raises on current diffusers, OSEDiff issue #60);
4. ``Î = D(ẑ_0 / 0.18215)`` with the frozen decoder (training: as it is); at inference clamped to [−1, 1], mapped to
   [0, 1], colour-aligned to the input there (AdaIN by default, as its test script; or wavelet, or none) and
   clamped to [0, 1] (lines in :meth:`OSEDiffRestorer._finish`). Outputs have the input's size (resized back when
   step 0 changed it).

So the one UNet call is the stop step: ``grad_steps`` is 1 (train) or 0 (inference) by construction.

**Trained** (OSEDiff's own optimiser set): every LoRA factor of the UNet (adapters ``default_encoder`` /
``default_decoder`` / ``default_others``) and of the VAE encoder, plus ``conv_in`` itself when ``train_conv_in``.
Text tower, decoder and every base weight stay frozen. **L_reg pairs** ``[(ε_θ, ε_ref)]``: ``ε_ref`` is the UNet
at the same inputs without gradient, either with all adapters disabled (``reg_reference: no_lora``, peft's
``disable_adapters``: the SD 2.1 UNet with the current ``conv_in``) or with the initial (loaded) LoRA and
``conv_in`` weights θ₀ (``reg_reference: initial``, the analogue of DiffBIR's frozen θ₀ copy; ``L_reg = 0`` at
the first step).

**Prompts**: OSEDiff tags images with its RAM-based DAPE model; that tagger is left out here. The SD prompt is the
image's caption (the ``<image>.txt`` files the dataset reads), or ``fallback_prompt`` where there is none.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.func import functional_call

from drward.archs.checkpoint_loaders import loader
from drward.archs.image_sizes import resize_to, round_down_to_multiple
from drward.archs.lora import (
    DEFAULT_RANK,
    LoraLayout,
    TensorSnapshot,
    adapters_disabled,
    add_lora,
    discover_layout,
    is_lora_name,
    layout_metadata,
    randomize_lora_b_,
)
from drward.archs.materialize import check_materialized, empty_weights
from drward.archs.precision import cast_buffers, cast_io_to_weights, parse_weight_dtype, runs_in_weight_dtype
from drward.archs.restorer import RestoreOutput, Restorer, checked_weight_paths, log_and_check
from drward.archs.sd_parts import SD_OPTIONS, build_sd_parts, seeded_rng
from drward.archs.sd_tokenizer import CLIPTokenizerIds
from drward.diffusion.colorfix import adain_color_fix, wavelet_color_fix
from drward.diffusion.schedule import predict_x0, sd_alphas_cumprod
from drward.utils.option_schema import Bool, Choice, Int, Option, Text
from drward.utils.options import OptionError
from drward.utils.registry import register

TIMESTEP = 999  # OSEDiff's one step
LATENT_FACTOR = 8  # the VAE's down-sampling: OSEDiff rounds sides to multiples of it (no padding to 64)
TINY_LORA_B_STD = 0.02  # tiny builds: non-zero B factors, so the adapters change the output (as trained ones do)
Sides = Tuple[Tuple[str, nn.Module], ...]


@register(ARCH_REGISTRY)
class OSEDiffRestorer(Restorer):
    """OSEDiff restorer; its options are declared in :attr:`options` (plus :data:`SD_OPTIONS` and the
    :class:`Restorer` ones). ``weight_dtype: auto`` picks bf16 where the device runs it natively, else fp32;
    ``bf16`` stores SD's base weights in bf16; the LoRA factors and
    ``conv_in`` stay fp32 masters — peft runs each LoRA branch in its factors' dtype, and a trained full layer gets
    its input cast to fp32 and its output back (:func:`~drward.archs.precision.cast_io_to_weights`).
    """

    family = 'osediff'
    options = {
        **SD_OPTIONS,
        'osediff_checkpoint': Option(Text(nullable=True), None, 'osediff_face.pkl / osediff.pkl, or a .safetensors '
                                     'LoRA file (drward.weights.osediff); null = fresh adapters (plain SD)'),
        'lora_rank': Option(Int(1, nullable=True), None, "LoRA rank; null: the file's, else 4 (must match the file)"),
        'train_conv_in': Option(Bool(), True, "train the UNet's conv_in too (OSEDiff does)"),
        'reg_reference': Option(Choice('no_lora', 'initial'), 'no_lora', 'L_reg reference: the UNet without '
                                'adapters, or with the initial (loaded) ones'),
        'vae_latent': Option(Choice('sample', 'mode'), 'sample', 'z_LQ: a draw from the posterior or its mean'),
        'use_captions': Option(Bool(), True, "the SD prompt is the image's caption"),
        'fallback_prompt': Option(Text(nonempty=False), '', 'the SD prompt where there is no caption'),
        'tokenizer_dir': Option(Text(nullable=True), None, "SD 2.1-base's tokenizer folder (OSEDiff's caption "
                                "tokenizer); null or missing: written from open_clip's vocabulary "
                                '(archs/sd_tokenizer.py)'),
        'color_fix': Option(Choice('adain', 'wavelet', 'none'), 'adain', 'colour alignment to the input (inference)'),
        'eta_per_update': Option(Bool(), True, 'no effect (one closed-form step, no η); accepted so that option '
                                 'files can switch restorers'),
    }

    def __init__(self, **opts):
        super().__init__()
        self.opt = opt = self.resolve_options(opts)
        self.is_tiny = bool(opt['tiny'])
        self.train_conv_in = bool(opt['train_conv_in'])
        self.reg_reference, self.vae_latent, self.color_fix = opt['reg_reference'], opt['vae_latent'], opt['color_fix']
        self.use_captions, self.fallback_prompt = bool(opt['use_captions']), str(opt['fallback_prompt'] or '')
        self.alpha_bar = float(sd_alphas_cumprod()[TIMESTEP])
        self._generator = torch.Generator().manual_seed(int(opt['seed']))
        paths = checked_weight_paths('OSEDiffRestorer', opt, ('sd_checkpoint', 'osediff_checkpoint'),
                                     required=('sd_checkpoint',), tiny=self.is_tiny)
        self.weight_dtype = parse_weight_dtype(opt['weight_dtype'], 'OSEDiffRestorer')
        with seeded_rng(opt['seed']):
            with empty_weights('sd_checkpoint' in paths):
                self.sd = build_sd_parts(self.is_tiny, opt['latent_scale'], CLIPTokenizerIds(opt['tokenizer_dir']))
            self.layout = self._build_adapters(paths, opt['lora_rank'], int(opt['seed']))
        if 'sd_checkpoint' in paths:  # built empty: the file must have filled every weight
            check_materialized(self.sd, 'OSEDiffRestorer (sd_checkpoint)')
        self.sd.freeze()
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(True)
        self._store_frozen_weights()
        if self.reg_reference == 'initial':
            self.initial_unet = TensorSnapshot({name: p for name, p in self.sd.unet.named_parameters()
                                                if p.requires_grad})
        self.set_gradient_checkpointing(bool(opt['gradient_checkpointing']))

    # -- construction ------------------------------------------------------------------------------------------
    def _build_adapters(self, paths: Dict[str, str], rank: Optional[int], seed: int) -> LoraLayout:
        """SD weights, then the adapters (the file's layout, or OSEDiff's placement at ``rank``), then their weights."""
        logger = get_root_logger()
        if self.is_tiny:
            logger.info('OSEDiffRestorer: TINY models (random unless tiny checkpoints are given) - tests and CPU '
                        'demos only')
        if 'sd_checkpoint' in paths:
            log_and_check('OSEDiffRestorer', loader('sd')(self.sd, paths['sd_checkpoint']))
        if 'osediff_checkpoint' not in paths:
            layout = discover_layout(self.sd.unet, self.sd.vae, int(rank or DEFAULT_RANK))
            add_lora(self.sd.unet, self.sd.vae, layout)
            if self.is_tiny:
                generator = torch.Generator().manual_seed(seed)
                for model in (self.sd.unet, self.sd.vae):
                    randomize_lora_b_(model, TINY_LORA_B_STD, generator)
            else:
                logger.warning('OSEDiffRestorer: no osediff_checkpoint; fresh LoRA adapters (B = 0): the restorer '
                               'starts as plain SD 2.1 at t = 999')
            return layout
        layout, unet_state, vae_state = loader('osediff_lora_file')(paths['osediff_checkpoint'])
        if rank is not None and {layout.rank_unet, layout.rank_vae} != {int(rank)}:
            raise OptionError(f'OSEDiffRestorer: lora_rank {rank} differs from the checkpoint\'s ranks (UNet '
                              f'{layout.rank_unet}, VAE {layout.rank_vae}); leave lora_rank null to take them')
        add_lora(self.sd.unet, self.sd.vae, layout)
        log_and_check('OSEDiffRestorer', loader('osediff_lora')(self.sd.unet, self.sd.vae, unet_state, vae_state))
        return layout

    def _store_frozen_weights(self) -> None:
        """With ``weight_dtype: bf16``: every frozen weight to bf16; full trained layers (``conv_in``) keep fp32
        and convert their input/output."""
        if self.weight_dtype == torch.float32:
            return
        trained = {id(p) for p in self.trainable_parameters()}
        for name, module in self.sd.named_modules():
            own = [p for p in module._parameters.values() if p is not None]
            for param in own:
                if id(param) not in trained:
                    param.data = param.data.to(self.weight_dtype)
            if own and all(id(p) in trained for p in own) and not is_lora_name(name + '.'):
                cast_io_to_weights(module, self.weight_dtype)
        cast_buffers(self.sd, self.weight_dtype)
        self.sd.clear_context_cache()

    def refresh_compute(self, with_grad: bool) -> None:
        """Nothing to refresh: the trained tensors run as they are (LoRA factors, conv_in)."""

    # -- the Restorer interface --------------------------------------------------------------------------------
    @runs_in_weight_dtype
    def restore(self, lq: torch.Tensor, captions: Optional[Sequence[str]] = None, grad_steps: int = 0,
                generator: Optional[torch.Generator] = None, **sampling) -> RestoreOutput:
        """Restore ``lq`` (B, 3, H, W) in [0, 1] in one step; ``grad_steps`` 1 keeps the graph (training), 0 not.
        ``captions`` (one per image) are the SD prompts. ``generator`` draws the VAE posterior sample (a list: one
        generator per row, as diffusers' ``randn_tensor`` takes it)."""
        if sampling:
            raise TypeError(f'OSEDiffRestorer.restore: unknown sampling arguments {sorted(sampling)} (one step)')
        if grad_steps not in (0, 1):
            raise ValueError(f'OSEDiffRestorer: one denoising step, so grad_steps is 0 or 1, got {grad_steps}')
        generator = self._generator if generator is None else generator
        lq_8 = round_down_to_multiple(lq, LATENT_FACTOR)
        with torch.set_grad_enabled(bool(grad_steps) and torch.is_grad_enabled()):
            z_lq = self.sd.encode_latent(lq_8 * 2 - 1, sample=self.vae_latent == 'sample', generator=generator)
            timestep = torch.full((z_lq.shape[0],), TIMESTEP, dtype=torch.long, device=z_lq.device)
            context = self.sd.prompts_context(self._prompts(captions, z_lq.shape[0]), z_lq.device, z_lq.dtype)
            eps = self.sd.unet(z_lq, timestep, encoder_hidden_states=context).sample
            pairs = [(eps, self._reference_eps(z_lq, timestep, context))] if grad_steps else []
            latent = predict_x0(z_lq, eps, self.alpha_bar)
            image = self.sd.decode_latent(latent.to(z_lq.dtype))
            image = resize_to(image, lq.shape[-2:]) if grad_steps else self._finish(image, lq_8, lq.shape[-2:])
        return RestoreOutput(image=image, reg_pairs=pairs, latent=latent,
                             info={'stop_timestep': float(TIMESTEP), 'grad_calls': float(grad_steps)})

    # -- OSEDiff's order of operations around the networks (cswry/OSEDiff at fcc4f09) ---------------------------
    def _finish(self, decoded: torch.Tensor, source: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The inference output in [−1, 1] from the decoder's, as OSEDiff's test does it:

        1. clamped to [−1, 1] (osediff.py:407, ``OSEDiff_test.forward``);
        2. mapped to [0, 1] (test_osediff.py:125) and colour-aligned there to the input ``source`` (in [0, 1], at the
           same multiple-of-8 size): AdaIN or wavelet (test_osediff.py:126-129), each clamped to [0, 1]
           (my_utils/wavelet_color_fix.py:25 and :40); OSEDiff's uint8 round trips between these steps are
           left out;
        3. resized back to the input ``size`` when rounding changed it (OSEDiff returns the rounded size) and
           clamped again.
        """
        image = (decoded.clamp(-1, 1) + 1) / 2
        if self.color_fix != 'none':
            fix = adain_color_fix if self.color_fix == 'adain' else wavelet_color_fix
            image = fix(image, source).clamp(0, 1)
        return resize_to(image, size).clamp(0, 1) * 2 - 1

    def _prompts(self, captions: Optional[Sequence[str]], batch: int) -> List[str]:
        """One SD prompt per image: its caption, or the fallback prompt where captions are off, absent or empty."""
        if not self.use_captions or captions is None:
            return [self.fallback_prompt] * batch
        if len(captions) != batch:
            raise ValueError(f'OSEDiffRestorer: {len(captions)} captions for {batch} images')
        return [caption or self.fallback_prompt for caption in captions]

    def _reference_eps(self, z_lq: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``ε_ref``: the same UNet call without gradient, adapters disabled or with the initial weights θ₀."""
        with torch.no_grad():
            if self.reg_reference == 'initial':
                return functional_call(self.sd.unet, self.initial_unet.as_dict(), (z_lq, timestep),
                                       {'encoder_hidden_states': context}).sample
            with adapters_disabled(self.sd.unet):
                return self.sd.unet(z_lq, timestep, encoder_hidden_states=context).sample

    def _sides(self) -> Sides:
        return (('unet', self.sd.unet), ('vae', self.sd.vae))

    def _is_trained(self, side: str, name: str) -> bool:
        return is_lora_name(name) or (side == 'unet' and self.train_conv_in and name.startswith('conv_in.'))

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every LoRA factor (UNet and VAE encoder), plus the UNet's ``conv_in`` when ``train_conv_in``."""
        for side, model in self._sides():
            for name, parameter in model.named_parameters():
                if self._is_trained(side, name):
                    yield parameter

    def trained_state_dict(self) -> Dict[str, torch.Tensor]:
        """The trained tensors as ``unet.<peft name>`` / ``vae.<peft name>``."""
        return {f'{side}.{name}': tensor for side, model in self._sides()
                for name, tensor in model.state_dict().items() if self._is_trained(side, name)}

    def load_trained_state_dict(self, state: Dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load what :meth:`trained_state_dict` wrote; the reference θ₀ keeps the initial weights."""
        expected = set(self.trained_state_dict())
        if strict and set(state) != expected:
            raise KeyError(f'OSEDiffRestorer: trained state mismatch; missing {sorted(expected - set(state))[:5]}, '
                           f'unexpected {sorted(set(state) - expected)[:5]}')
        by_side = {side: {} for side, _ in self._sides()}
        for key, tensor in state.items():
            side, _, name = key.partition('.')
            by_side.setdefault(side, {})[name] = tensor
        for side, model in self._sides():
            model.load_state_dict(by_side[side], strict=False)

    def trained_file_metadata(self) -> Dict[str, str]:
        """The adapter layout, so a saved ``net_g_<iter>.safetensors`` is itself an ``osediff_checkpoint`` file."""
        return layout_metadata(self.layout)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in the UNet and the VAE (encoder, with its LoRA, and decoder)."""
        self.sd.set_gradient_checkpointing(enabled)

    def train(self, mode: bool = True) -> 'OSEDiffRestorer':
        """The LoRA layers have no dropout and the base models none either: everything stays in eval mode."""
        self.training = mode
        self.sd.eval()
        return self
