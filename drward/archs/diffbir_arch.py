"""DiffBIR (face) as a :class:`~drward.archs.restorer.Restorer`: frozen SwinIR stage 1, frozen SD 2.1 UNet/VAE/text
tower, trained IRControlNet (docs/design.md §1, §4).

One restoration of ``I_LQ`` (B, 3, H, W) in [0, 1], in the order of DiffBIR's own pipeline
(``diffbir/pipeline.py``, ``SwinIRPipeline``; each step's line is in :meth:`DiffBIRRestorer._stage1_and_condition`
and :meth:`DiffBIRRestorer._decode_and_finish`):

1. stage 1 (no gradient): a short side under ``min_short_side`` (512) upscaled to it; zero-padded to multiples
   of 64; ``I_s1 = SwinIR(·)`` cropped back; padded to multiples of 64 again and encoded,
   ``c = E(2·I_s1 − 1).mode() · 0.18215``;
2. ``z_T ~ N(0, I)``; DDIM (:class:`~drward.diffusion.ddim.TruncatedDDIMSampler`) with the denoiser
   ``ε = UNet(z_t, t, ctx; + s_k·c_k^θ)``, ``[c_1^θ … c_13^θ] = IRControlNet_θ(cat(z_t, c), t, ctx)``, ``ctx`` the
   cached empty-prompt context (captions never enter SD);
3. at the gradient-enabled calls the frozen copy θ₀ of the initial ControlNet runs on the same inputs (no
   gradient) and the pairs ``(c_k^θ, c_k^{θ₀})`` are returned for the output-space ``L_reg``;
4. ``Î = D(ẑ_0 / 0.18215)`` cropped to stage 1's size, with gradient (training); at inference the final latent
   decoded, cropped, colour-fixed against stage 1 (DiffBIR's wavelet reconstruction), resized back to the input
   size and clamped.

Aligned 512² faces (training, the test sets) need none of the size steps: they are the identity there.

Weights: which IRControlNet the paper fine-tunes is not stated; the issue names DiffBIR v1 face (``v1_face.pth``),
the default here; ``v2.pth`` has the same layout and loads the same way (both on ``v2-1_512-ema-pruned.ckpt``).
``DiffBIR_v2.1.pt`` needs the SD 2.1 zsnr base and is not supported.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from drward.archs.checkpoint_loaders import loader
from drward.archs.compiled import CompiledOnce
from drward.archs.controlnet_lora import (
    ControlNetLora,
    add_controlnet_lora,
    base_name,
    lora_state_dict,
    parse_lora_option,
    read_lora_metadata,
)
from drward.archs.face_swinir import FACE_SWINIR, FaceSwinIR
from drward.archs.image_sizes import resize_short_side, resize_to
from drward.archs.ircontrolnet import (
    IRControlNet,
    expand_control_scales,
    init_from_unet,
    ircontrolnet_config,
    scale_residuals,
    zero_conv_modules,
)
from drward.archs.lora import adapters_disabled, is_lora_name
from drward.archs.materialize import check_materialized, empty_weights
from drward.archs.precision import ComputeCopy, no_autocast, parse_weight_dtype, runs_in_weight_dtype, store_frozen
from drward.archs.restorer import RestoreOutput, Restorer, checked_weight_paths, log_and_check
from drward.archs.sd_parts import SD_OPTIONS, build_sd_parts, copy_frozen, pad_to_multiple, seeded_rng
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_ZERO_CONV_STD
from drward.diffusion import row_noise
from drward.diffusion.colorfix import wavelet_color_fix
from drward.diffusion.ddim import PrefixState, TruncatedDDIMSampler
from drward.utils.option_schema import Bool, Choice, Int, ListOf, Num, OneOf, Option, Section, Text
from drward.utils.options import OptionError
from drward.utils.registry import register

WEIGHT_KEYS = ('sd_checkpoint', 'diffbir_checkpoint', 'swinir_checkpoint')
SIZE_MULTIPLE = 64  # SwinIR window on the ×8-unshuffled map; the UNet's three down-samplings of the latent
MIN_SHORT_SIDE = 512  # DiffBIR's SwinIRPipeline: stage 1 runs on inputs whose short side is at least this
ResidualPairs = List[Tuple[torch.Tensor, torch.Tensor]]


def _min_short_side(value: Optional[int], tiny: bool) -> int:
    """``min_short_side``: null = DiffBIR's 512 for the real models, 0 (off) for tiny ones (their inputs are 64²)."""
    if value is None:
        return 0 if tiny else MIN_SHORT_SIDE
    if int(value) < 0:
        raise OptionError(f'DiffBIRRestorer: min_short_side must be >= 0 (0 = off), got {value!r}')
    return int(value)


@register(ARCH_REGISTRY)
class DiffBIRRestorer(Restorer):
    """DiffBIR face restorer; its options are declared in :attr:`options` (plus :data:`SD_OPTIONS` and the
    :class:`Restorer` ones: ``tiny`` builds tiny models, random or from the tiny files given, see
    :mod:`drward.archs.tiny_configs`; ``weight_dtype: bf16`` stores the frozen SD parts, SwinIR and θ₀ in bf16 and
    runs the fp32 IRControlNet through a bf16 :class:`~drward.archs.precision.ComputeCopy`).

    Modules whose weight file is given are built empty and materialised from the file (one copy of the weights,
    :mod:`drward.archs.materialize`). ``lora`` (``{rank, alpha, target_modules, dropout}``,
    :mod:`drward.archs.controlnet_lora`): train LoRA adapters on the IRControlNet instead of all of it (null, the
    default: the paper's full fine-tune); the frozen reference θ₀ is then the IRControlNet with its adapters disabled
    (no second copy).
    """

    family = 'diffbir'
    has_prefix = True
    options = {
        **SD_OPTIONS,
        'diffbir_checkpoint': Option(Text(nullable=True), None, 'the IRControlNet: v1_face.pth or v2.pth; null = '
                                     "initialised from the UNet (DiffBIR's stage-2 start)"),
        'swinir_checkpoint': Option(Text(nullable=True), None, 'stage 1: face_swinir_v1.ckpt (required unless tiny)'),
        'control_scales': Option(OneOf(Num(0), ListOf(Num(0), length=13)), 1.0,
                                 'scale s_k of the control residuals: one number or 13'),
        'num_steps': Option(Int(1, 1000), 50, 'DDIM steps K'),
        'stop_window': Option(Int(1), 2, 'the stop step is drawn among the last M steps'),
        'eta_train': Option(OneOf(Choice('uniform'), Num(0, 1)), 'uniform',
                            'DDIM η in training: uniform = η ~ U(0, 1)'),
        'eta_per_update': Option(Bool(), True, 'with eta_train: uniform, a fresh η for every DDIM update (as the '
                                 "authors' sampler); false: one η per restoration"),
        'eta_infer': Option(Num(0, 1), 1.0, 'DDIM η at inference'),
        'color_fix': Option(Bool(), True, 'wavelet colour fix against stage 1 at inference'),
        'min_short_side': Option(Int(0, nullable=True), None, 'a shorter input side is upscaled to it before stage 1 '
                                 'and resized back; null: 512 (0 for tiny models); 0: off'),
        'compile': Option(Bool(), False, 'torch.compile the no-grad denoiser calls (unmeasured at real size)'),
        'lora': Option(Section({'rank': Int(1), 'alpha': Num(0, lo_open=True), 'target_modules': ListOf(Text()),
                                'dropout': Num(0, 1)}, nullable=True), None,
                       'LoRA on the IRControlNet {rank (required), alpha = rank, target_modules, dropout = 0}; '
                       "null: the paper's full fine-tune (defaults: archs/controlnet_lora.py)"),
    }

    def __init__(self, **opts):
        super().__init__()
        self.opt = opt = self.resolve_options(opts)
        self.is_tiny = bool(opt['tiny'])
        lora = parse_lora_option(opt['lora'])
        self.color_fix = bool(opt['color_fix'])
        self.min_short_side = _min_short_side(opt['min_short_side'], self.is_tiny)
        self.control_scales = expand_control_scales(opt['control_scales'])
        self.sampler = TruncatedDDIMSampler(num_steps=int(opt['num_steps']), stop_window=int(opt['stop_window']),
                                            eta_train=opt['eta_train'], eta_infer=float(opt['eta_infer']),
                                            eta_per_update=bool(opt['eta_per_update']))
        self._generator = torch.Generator().manual_seed(int(opt['seed']))
        paths = checked_weight_paths('DiffBIRRestorer', opt, WEIGHT_KEYS,
                                     required=('sd_checkpoint', 'swinir_checkpoint'), tiny=self.is_tiny)
        self.weight_dtype = parse_weight_dtype(opt['weight_dtype'], 'DiffBIRRestorer')
        dtype = self.weight_dtype
        with seeded_rng(opt['seed']):
            with empty_weights('sd_checkpoint' in paths, dtype):
                self.sd = build_sd_parts(self.is_tiny, opt['latent_scale'])
            with empty_weights('swinir_checkpoint' in paths, dtype):
                self.stage1 = FaceSwinIR(**(TINY_FACE_SWINIR if self.is_tiny else FACE_SWINIR))
            with empty_weights('diffbir_checkpoint' in paths):
                self.controlnet = IRControlNet(**ircontrolnet_config(self.sd.unet.config))
            self._load_weights(paths)
        for module, owner in ((self.sd, 'sd_checkpoint'), (self.stage1, 'swinir_checkpoint'),
                              (self.controlnet, 'diffbir_checkpoint')):
            if owner in paths:  # built empty: the file must have filled every weight
                check_materialized(module, f'DiffBIRRestorer ({owner})')
        store_frozen(self.sd.freeze(), dtype)
        store_frozen(self.stage1.requires_grad_(False).eval(), dtype)
        self.lora: Optional[ControlNetLora] = None
        self._lora_base = base_name(opt['diffbir_checkpoint'], self.is_tiny, int(opt['seed']))
        self._lora_seed = int(opt['seed'])
        self.controlnet_ref = None if lora else copy_frozen(self.controlnet, dtype)
        self.set_gradient_checkpointing(bool(opt['gradient_checkpointing']))
        self._compute = ComputeCopy(self.controlnet, dtype) if dtype != torch.float32 and not lora else None
        if lora:
            self.enable_lora(lora)
        self._eps_no_grad = CompiledOnce(self._eps, 'DiffBIRRestorer') if opt['compile'] else self._eps

    # -- construction ------------------------------------------------------------------------------------------
    def _load_weights(self, paths: Dict[str, str]) -> None:
        """Real weights from ``paths``; a tiny build loads the (tiny) files it is given and keeps random weights
        elsewhere, its IRControlNet then starting from the UNet with random (non-zero) zero-convs."""
        logger = get_root_logger()
        if self.is_tiny:
            logger.info('DiffBIRRestorer: TINY models (random unless tiny checkpoints are given) - tests and CPU '
                        'demos only')
        reports = []
        if 'sd_checkpoint' in paths:
            reports.append(loader('sd')(self.sd, paths['sd_checkpoint']))
        if 'swinir_checkpoint' in paths:
            reports.append(loader('face_swinir')(self.stage1, paths['swinir_checkpoint']))
        if 'diffbir_checkpoint' in paths:
            reports.append(loader('diffbir_controlnet')(self.controlnet, paths['diffbir_checkpoint']))
        else:
            init_from_unet(self.controlnet, self.sd.unet)
            if self.is_tiny:
                for conv in zero_conv_modules(self.controlnet):
                    nn.init.normal_(conv.weight, std=TINY_ZERO_CONV_STD)
                    nn.init.normal_(conv.bias, std=TINY_ZERO_CONV_STD)
            else:
                logger.warning('DiffBIRRestorer: no diffbir_checkpoint; IRControlNet initialised from the UNet')
        for report in reports:
            log_and_check('DiffBIRRestorer', report)

    def enable_lora(self, lora: ControlNetLora) -> None:
        """Add fresh adapters to the IRControlNet (or a file's layout, before loading its factors): from now on only
        they train; the IRControlNet's own weights are frozen, stored in ``weight_dtype``, and with the adapters
        disabled serve as θ₀ (the full copy θ₀ and the bf16 compute copy are dropped)."""
        if self.lora is not None:
            raise RuntimeError('DiffBIRRestorer: LoRA adapters are already present')
        lora.base = lora.base or self._lora_base
        with seeded_rng(self._lora_seed):  # the factors' init is the seed's, and the global stream is untouched
            self.lora = add_controlnet_lora(self.controlnet, lora)
        self.controlnet_ref, self._compute = None, None
        for name, parameter in self.controlnet.named_parameters():
            if not is_lora_name(name):
                parameter.data = parameter.data.to(self.weight_dtype)
        count = sum(p.numel() for p in self.trainable_parameters())
        get_root_logger().info(f'DiffBIRRestorer: LoRA rank {lora.rank}, alpha {lora.alpha:g} on '
                               f'{len(lora.modules)} IRControlNet modules ({count / 1e6:.2f} M trained parameters; '
                               f'base: {lora.base})')

    def prepare_for_trained_file(self, metadata: Dict[str, str]) -> None:
        """A LoRA-only checkpoint (its metadata names the adapters) adds the same adapters to a restorer built
        without ``lora``; a mismatch between the file's and the option's adapters, or a full checkpoint for a LoRA
        restorer, is a one-line error."""
        found = read_lora_metadata(metadata)
        if found is None:
            if self.lora is not None:
                raise OptionError('DiffBIRRestorer: network_g.lora is set but the checkpoint holds a full '
                                  'IRControlNet (no LoRA metadata); drop lora to load it')
            return
        if self.lora is None:
            get_root_logger().info(f'DiffBIRRestorer: the checkpoint holds LoRA adapters (rank {found.rank}); '
                                   'adding them')
            self.enable_lora(found)
        elif (found.rank, found.alpha, sorted(found.modules or [])) != \
                (self.lora.rank, self.lora.alpha, sorted(self.lora.modules or [])):
            raise OptionError(f'DiffBIRRestorer: the checkpoint\'s LoRA (rank {found.rank}, alpha {found.alpha:g}, '
                              f'{len(found.modules or [])} modules) differs from network_g.lora (rank '
                              f'{self.lora.rank}, alpha {self.lora.alpha:g}, {len(self.lora.modules)} modules)')
        if found.base != self.lora.base:
            get_root_logger().warning(f'DiffBIRRestorer: the LoRA checkpoint was trained on {found.base!r}, this '
                                      f'restorer\'s IRControlNet is {self.lora.base!r}')

    # -- the Restorer interface --------------------------------------------------------------------------------
    @runs_in_weight_dtype
    def restore(self, lq: torch.Tensor, captions: Optional[Sequence[str]] = None, grad_steps: int = 0,
                generator: Optional[row_noise.Generators] = None, **sampling) -> RestoreOutput:
        """Restore ``lq`` (B, 3, H, W) in [0, 1]; ``captions`` are accepted and ignored (empty SD prompt).
        ``generator``: one for the batch, or (inference) one per row, each row then drawing its own noise.
        ``sampling``: ``stop_index`` / ``eta`` passed to the sampler, or ``prefix`` (a :class:`PrefixState` and the
        stage-1 image and condition from :meth:`restore_prefixes`: the chain continues from there)."""
        unknown = set(sampling) - {'stop_index', 'eta', 'prefix'}
        if unknown:
            raise TypeError(f'DiffBIRRestorer.restore: unknown sampling arguments {sorted(unknown)}')
        generator = self._generator if generator is None else generator
        prefix = sampling.pop('prefix', None)
        if prefix is None:
            with torch.no_grad():
                stage1, cond = self._stage1_and_condition(lq)
            # z_T stays float32 (the sampler's chain dtype); only the denoiser calls run in the model's dtype
            z_T = row_noise.randn(cond.shape, generator).to(cond.device)  # row r from generator[r] for a list
        else:
            (state, stage1, cond), z_T = prefix, None
            sampling['prefix'] = state
        context = self.sd.prompt_context('', cond.shape[0], cond.device, cond.dtype)
        pairs: ResidualPairs = []
        out = self.sampler.sample(self._denoiser(cond, context, pairs), z_T, grad_steps=grad_steps,
                                  generator=generator, **sampling)
        with torch.set_grad_enabled(bool(grad_steps) and torch.is_grad_enabled()):
            image = self._decode_and_finish(out.latent.to(cond.dtype), stage1, lq.shape[-2:], bool(grad_steps))
        stage1 = (resize_to(stage1, lq.shape[-2:]) * 2 - 1).clamp(-1, 1)
        return RestoreOutput(image=image, reg_pairs=pairs, latent=out.latent, stage1=stage1, info=out.log_info())

    def restore_prefixes(self, lq: torch.Tensor, chunks: Sequence[slice], grad_steps: int,
                         generator: Optional[torch.Generator] = None, max_batch: Optional[int] = None,
                         **sampling) -> List[Dict]:
        """The no-grad part of ``restore(lq[chunk], grad_steps=N)`` for every chunk at once: stage 1 and the
        condition of the whole batch, then per chunk ``z_T`` and the chain's draws from ``generator`` (the order
        the chunk-by-chunk restorations draw them), then :meth:`TruncatedDDIMSampler.run_prefix` (one denoiser
        call per DDIM index, at most ``max_batch`` rows). Returns ``{'prefix': …}`` per chunk for :meth:`restore`."""
        generator = self._generator if generator is None else generator
        reduced = self.weight_dtype != torch.float32
        if reduced:
            self.refresh_compute(with_grad=False)
        with torch.no_grad(), no_autocast(lq.device, reduced):
            stage1, cond = self._stage1_and_condition(lq.to(self.weight_dtype))
            context = self.sd.prompt_context('', cond.shape[0], cond.device, cond.dtype)
            starts, draws = [], []
            for chunk in chunks:
                starts.append(torch.randn(cond[chunk].shape, generator=generator, device=generator.device)
                              .to(cond.device))
                draws.append(self.sampler.draw_chain(starts[-1], grad_steps, generator, **sampling))

            def denoise_rows(z_t: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                return self._denoiser(cond[rows], context[rows], [])(z_t, t, False)
            latents = self.sampler.run_prefix(denoise_rows, starts, draws, max_batch)
        return [{'prefix': (PrefixState(z, d), stage1[chunk], cond[chunk])}
                for chunk, z, d in zip(chunks, latents, draws)]

    # -- DiffBIR's order of operations around the networks (diffbir/pipeline.py at XPixelGroup/DiffBIR 3f8b530) --
    def _stage1_and_condition(self, lq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Stage 1 ``I_s1`` (B, 3, h0, w0) in [0, 1] and the condition latent ``c``, as ``SwinIRPipeline`` and
        ``Pipeline.apply_cldm`` make them:

        1. a short side under ``min_short_side`` is upscaled to it (bicubic, antialiased): pipeline.py:383-384
           (``resize_short_edge_to``, pipeline.py:25-34); (h0, w0) is the size after that;
        2. zero-padded to multiples of 64, SwinIR, its output cropped back to (h0, w0): pipeline.py:385-387;
        3. zero-padded again to multiples of 64 for the VAE (pipeline.py:102) and encoded,
           ``c = E(2·I_s1 − 1).mode() · 0.18215`` (model/cldm.py:152-154, ``vae_encode(sample=False)``).
        """
        lq = resize_short_side(lq, self.min_short_side)
        height, width = lq.shape[-2:]
        stage1 = self.stage1(pad_to_multiple(lq, SIZE_MULTIPLE))[..., :height, :width]
        return stage1, self.sd.encode_latent(pad_to_multiple(stage1, SIZE_MULTIPLE) * 2 - 1)

    def _decode_and_finish(self, latent: torch.Tensor, stage1: torch.Tensor, size: Sequence[int],
                           training: bool) -> torch.Tensor:
        """``Î`` in [−1, 1] at the input ``size`` from the sampled latent of the padded image:

        4. ``D(z / 0.18215)`` cropped to stage 1's (h0, w0): pipeline.py:225-231;
        5. inference: the wavelet colour fix against stage 1, in [0, 1] (pipeline.py:306-307), resized to the input
           size (bicubic, antialiased: pipeline.py:306-311), clamped (the uint8 conversion, pipeline.py:312-315).
        Training keeps the decoded image as it is (cropped, resized back only if stage 1 was upscaled).
        """
        image = self.sd.decode_latent(latent)[..., :stage1.shape[-2], :stage1.shape[-1]]
        if training:
            return resize_to(image, size)
        image = (image + 1) / 2
        image = wavelet_color_fix(image, stage1) if self.color_fix else image
        return resize_to(image, size).clamp(0, 1) * 2 - 1

    def _denoiser(self, cond: torch.Tensor, context: torch.Tensor, pairs: ResidualPairs):
        """``denoise(z_t, t, with_grad) -> ε``; at ``with_grad`` calls it appends the 13 ``(c_k^θ, c_k^{θ₀})``."""
        def denoise(z_t: torch.Tensor, t: torch.Tensor, with_grad: bool) -> torch.Tensor:
            z_t = z_t.to(cond.dtype)
            if not with_grad:
                return self._eps_no_grad(z_t, t, cond, context)
            residuals = self._trained_branch()(z_t, cond, t, context)
            with torch.no_grad():
                reference = self._reference(z_t, cond, t, context)
            pairs.extend(zip(residuals, reference))
            return self._eps(z_t, t, cond, context, residuals)
        return denoise

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, context: torch.Tensor,
             residuals: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """``ε = UNet(z_t, t, ctx; + s_k·c_k)`` with ``c_k`` = ``residuals``, or the trained branch's when None."""
        if residuals is None:
            residuals = self._trained_branch()(z_t, cond, t, context)
        down, mid = scale_residuals(residuals, self.control_scales)
        return self.sd.unet(z_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample

    def _reference(self, z_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
        """``c_k^{θ₀}``: the frozen initial copy, or with LoRA the IRControlNet with its adapters disabled."""
        if self.lora is None:
            return self.controlnet_ref(z_t, cond, t, context)
        with adapters_disabled(self.controlnet):
            return self.controlnet(z_t, cond, t, context)

    def _trained_branch(self) -> nn.Module:
        """The IRControlNet as it runs: the fp32 masters, or their bf16 compute copy."""
        return self.controlnet if self._compute is None else self._compute.module

    def refresh_compute(self, with_grad: bool) -> None:
        if self._compute is not None:
            self._compute.refresh(with_grad)

    def release_compute_caches(self) -> None:
        if self._compute is not None:
            self._compute.release()

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The IRControlNet's parameters, all of them (DiffBIR ReFL trains the whole control branch), or with
        ``lora`` its adapter factors only."""
        if self.lora is None:
            return self.controlnet.parameters()
        return (p for name, p in self.controlnet.named_parameters() if is_lora_name(name))

    def trained_state_dict(self) -> Dict[str, torch.Tensor]:
        return self.controlnet.state_dict() if self.lora is None else lora_state_dict(self.controlnet)

    def load_trained_state_dict(self, state: Dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load IRControlNet weights (or its LoRA factors); the frozen reference θ₀ keeps the initial weights."""
        if self.lora is None:
            if any(is_lora_name(k) for k in state):
                raise KeyError('DiffBIRRestorer: the state holds LoRA factors but the restorer has no adapters '
                               '(load the .safetensors file, whose metadata names them)')
            self.controlnet.load_state_dict(state, strict=strict)
            return
        expected = set(lora_state_dict(self.controlnet))
        if strict and set(state) != expected:
            raise KeyError(f'DiffBIRRestorer: LoRA state mismatch; missing {sorted(expected - set(state))[:3]}, '
                           f'unexpected {sorted(set(state) - expected)[:3]}')
        self.controlnet.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)

    def trained_file_metadata(self) -> Dict[str, str]:
        """With ``lora``: the adapters (rank, α, modules, base), so the file rebuilds them when loaded."""
        return self.lora.to_metadata() if self.lora is not None else {}

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in the VAE decoder, the UNet and the IRControlNet."""
        self.sd.set_gradient_checkpointing(enabled)
        self.controlnet.enable_gradient_checkpointing() if enabled else self.controlnet.disable_gradient_checkpointing()

    def train(self, mode: bool = True) -> 'DiffBIRRestorer':
        """Only the IRControlNet changes mode; the frozen parts stay in eval (no dropout / drop-path)."""
        self.training = mode
        self.controlnet.train(mode)
        for frozen in (self.sd, self.stage1, self.controlnet_ref):
            if frozen is not None:
                frozen.eval()
        return self
