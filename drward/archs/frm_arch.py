"""Face Reward Model (FRM): HPS v2's open_clip CLIP, scoring a face against its caption.

Paper §3 (docs/design.md §1): with normalised embeddings ``e_I = f_img(I)/‖·‖`` and ``e_T = f_txt(T)/‖·‖``

* reward (HPS v2's published score, what ``RewardLoss`` uses):   ``r = cos(e_I, e_T)``
* preference score of image ``k`` of a pair (paper's ``s_k``):     ``s_k = cos(e_Ik, e_T) / τ``
  where the paper's temperature ``τ = 1/exp(logit_scale)``; here ``s_k = exp(logit_scale)·cos``.

The model is built from an open_clip config name (``ViT-H-14`` as HPS v2, or ``tiny`` for tests and CPU demos) with
no hub access, then optionally loaded from a local HPS v2 / FRM checkpoint (weights under ``state_dict`` or a plain
state dict). The tokenizer is open_clip's bundled BPE tokenizer (offline).

Input resize (``resize``): ``bicubic_antialias`` (default) is HPS v2's own scoring transform (PIL bicubic, which
low-passes before subsampling), the one the FRM was trained with; ``bilinear`` is what the authors' ReFL code did
(``torchvision.transforms.Resize(224)`` on a tensor, which in their pinned torchvision 0.15.2 means bilinear without
antialiasing). At 512 → 224 the latter samples each output pixel from 2×2 input pixels 2.29 apart, so the reward's
gradient skips whole rows and columns of the restored face (see ``resize_for_clip``).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from drward.archs.materialize import check_materialized, empty_weights, has_meta
from drward.archs.precision import no_autocast, parse_weight_dtype
from drward.archs.reward import REWARD_REGISTRY, Reward
from drward.utils.atomic_io import atomic_save
from drward.utils.option_schema import ANY, Bool, Choice, Int, Text, declare
from drward.utils.options import require_file
from drward.utils.registry import register
from drward.utils.safe_load import load_weights

#: A tiny CLIP of the same family (ViT image tower, causal text transformer, BPE vocabulary) for tests and CPU demos.
TINY_FRM_CONFIG: Dict = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 64, 'layers': 4, 'width': 64, 'head_width': 32, 'patch_size': 16},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 2, 'layers': 4},
}

#: Authors' trainable set (HPS v2 recipe): last 20 vision groups, last 11 text blocks (+ ln_final, projection).
DEFAULT_UNLOCKED_IMAGE_GROUPS = 20
DEFAULT_UNLOCKED_TEXT_LAYERS = 11
#: ``resize`` choices: HPS v2's bicubic with antialiasing, or the authors' ReFL code's bilinear without it.
RESIZE_MODES = ('bicubic_antialias', 'bilinear')


def checked_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f'FaceRewardModel: resize must be one of {list(RESIZE_MODES)}, got {mode!r}')
    return mode


def resize_for_clip(images: torch.Tensor, size: int, mode: str = 'bicubic_antialias') -> torch.Tensor:
    """Resize (B, 3, H, W) images so the short side is ``size`` (aspect kept, no crop), differentiably.

    ``bicubic_antialias``: bicubic with antialiasing, long side ``round(size·long/short)`` (HPS v2's transform on
    tensors). ``bilinear``: ``torchvision.transforms.Resize(size, antialias=False)`` on a tensor — bilinear, no
    antialiasing, long side ``int(size·long/short)`` as torchvision computes it.
    """
    h, w = images.shape[-2:]
    if checked_resize_mode(mode) == 'bilinear':
        new_hw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        return F.interpolate(images, size=new_hw, mode='bilinear', align_corners=False, antialias=False)
    scale = size / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(images, size=new_hw, mode='bicubic', align_corners=False, antialias=True)


def sequence_first_attention(clip: nn.Module) -> None:
    """Run every open_clip ``Transformer`` of ``clip`` sequence-first (L, N, D), transposed once contiguously.

    Built batch-first, each ``nn.MultiheadAttention`` outside its inference fast path (any training-mode or
    gradient call) transposes its input to (L, N, D) as a strided view; its input projection then cannot fold the
    batch into one matrix product and multiplies the L positions one by one against a materialised L-fold copy of
    the weight. Measured on the CPU (ViT-B-16, bf16, batch 4): 21.4 s per reward call batch-first, 2.5 s
    sequence-first; batch 1 is unaffected. Same weights, same maths; only the memory layout changes.
    """
    for module in clip.modules():
        if not (isinstance(module, open_clip.transformer.Transformer) and getattr(module, 'batch_first', False)):
            continue
        attentions = [getattr(block, 'attn', None) for block in module.resblocks]
        if all(isinstance(a, nn.MultiheadAttention) for a in attentions):  # other attention kinds: left as built
            module.batch_first = False
            for attention in attentions:
                attention.batch_first = False


def resolve_clip_config(model_name: str, model_cfg: Optional[Mapping] = None) -> Dict:
    """The open_clip model config for ``model_name`` (``'tiny'`` → :data:`TINY_FRM_CONFIG`), or ``model_cfg``."""
    if model_cfg is not None:
        return copy.deepcopy(dict(model_cfg))
    if model_name == 'tiny':
        return copy.deepcopy(TINY_FRM_CONFIG)
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f'FaceRewardModel: unknown open_clip model name {model_name!r}; '
                         f'known: {open_clip.list_models()} or "tiny"')
    return copy.deepcopy(cfg)


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read an HPS v2 / FRM checkpoint: weights under ``state_dict`` (official files) or a plain state dict.

    A ``module.`` prefix left by DistributedDataParallel is stripped. Read by
    :func:`~drward.utils.safe_load.load_weights` (a ``.safetensors`` file holds the plain state dict).
    """
    ckpt = load_weights(path)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f'{path}: expected a state dict (optionally under "state_dict"), got {type(ckpt).__name__}')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


@register(ARCH_REGISTRY)
@register(REWARD_REGISTRY)
@declare(model_name=(Text(), "open_clip config name: ViT-H-14 (HPS v2's) or tiny"),
         model_cfg=(ANY, 'an explicit open_clip config dict (overrides model_name)'),
         checkpoint=(Text(nullable=True), 'HPS_v2_compressed.pt / FaceRewardModel.pth / a state dict; null: random'),
         unlocked_image_groups=(Int(0), 'trainable vision groups from the end'),
         unlocked_text_layers=(Int(0), 'trainable text blocks from the end'),
         gradient_checkpointing=(Bool(), 'activation checkpointing in both towers'),
         checkpoint_key=(Text(), 'the option key named in a missing-file error'),
         weight_dtype=(Choice('auto', 'fp32', 'bf16'), 'locked layers stored in bf16, trainable ones fp32'),
         resize=(Choice(*RESIZE_MODES), "how images reach the CLIP's input size"))
class FaceRewardModel(Reward):
    """HPS v2-style reward model for faces (paper: FRM), the trainable :class:`~drward.archs.reward.Reward`
    (``type: FaceRewardModel`` in ``train.reward_opt.rewards``; its score is ``r = cos(e_I, e_T)``).

    Args:
        model_name: open_clip config name (``'ViT-H-14'``, HPS v2's) or ``'tiny'``.
        model_cfg: an explicit open_clip config dict (overrides ``model_name``).
        checkpoint: local path of ``HPS_v2_compressed.pt`` / ``FaceRewardModel.pth`` / a plain state dict; ``None``
            keeps random weights (only sensible with ``tiny``).
        unlocked_image_groups: trainable vision groups from the end, through open_clip's ``lock_image_tower``.
        unlocked_text_layers: trainable text transformer blocks from the end (the authors' count; ``ln_final``,
            ``text_projection`` and ``logit_scale`` stay trainable too, as in HPS v2's open_clip).
        gradient_checkpointing: activation checkpointing in both towers.
        weight_dtype: ``'fp32'`` or ``'bf16'``: the locked layers stored in bf16, the trainable ones kept in fp32
            (master weights). The reward call (``similarity(..., frozen=True)``) runs wholly in bf16 on cached bf16
            casts of every weight; the FRM's own training steps run under bf16 autocast over the mixed weights.
        resize: how images reach the CLIP's input size, one of :data:`RESIZE_MODES` (see the module docstring).

    With a ``checkpoint`` the CLIP is built on the meta device and materialised from the file (one copy).
    """

    def __init__(self, model_name: str = 'ViT-H-14', model_cfg: Optional[Mapping] = None,
                 checkpoint: Optional[str] = None, unlocked_image_groups: int = DEFAULT_UNLOCKED_IMAGE_GROUPS,
                 unlocked_text_layers: int = DEFAULT_UNLOCKED_TEXT_LAYERS, gradient_checkpointing: bool = False,
                 checkpoint_key: str = 'frm.checkpoint', weight_dtype: str = 'fp32',
                 resize: str = 'bicubic_antialias'):
        super().__init__()
        self.resize = checked_resize_mode(resize)
        cfg = resolve_clip_config(model_name, model_cfg)
        self.model_name = model_name if model_cfg is None else 'custom'
        self.is_tiny = self.model_name == 'tiny'
        self.weight_dtype = parse_weight_dtype(weight_dtype, 'FaceRewardModel')
        self._frozen_casts = (None, {})
        with empty_weights(bool(checkpoint)):
            self.clip = open_clip.CLIP(**cfg)
        sequence_first_attention(self.clip)
        self.tokenizer = open_clip.SimpleTokenizer(context_length=cfg['text_cfg'].get('context_length', 77))
        self.image_size = int(self.clip.visual.image_size[0])
        self.register_buffer('pixel_mean', torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('pixel_std', torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)
        if checkpoint:
            self.load_checkpoint(require_file(checkpoint, checkpoint_key))
            check_materialized(self.clip, f'FaceRewardModel ({checkpoint_key})')
        elif not self.is_tiny:
            get_root_logger().warning(f'FaceRewardModel {self.model_name}: no checkpoint given, weights are RANDOM')
        self.lock(unlocked_image_groups, unlocked_text_layers)
        for p in self.clip.parameters():
            if not p.requires_grad:
                p.data = p.data.to(self.weight_dtype)
        self.set_gradient_checkpointing(gradient_checkpointing)
        self.eval()

    # ----------------------------------------------------------------------------------------------- weights
    def load_checkpoint(self, path: str) -> None:
        """Load an HPS v2 / FRM checkpoint (strict: a key mismatch raises, naming the keys)."""
        state = load_clip_state_dict(path)
        if has_meta(self.clip):  # built empty: take the file's tensors (cast to the declared dtypes)
            declared = self.clip.state_dict()
            state = {k: v.to(declared[k].dtype) if k in declared else v for k, v in state.items()}
        result = self.clip.load_state_dict(state, strict=False, assign=has_meta(self.clip))
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f'{path}: does not match the {self.model_name} CLIP: missing keys '
                               f'{result.missing_keys[:8]}, unexpected keys {result.unexpected_keys[:8]}')
        get_root_logger().info(f'FaceRewardModel: loaded {path}')

    def lock(self, unlocked_image_groups: int, unlocked_text_layers: int) -> None:
        """Freeze everything but the requested groups, with open_clip's own lock methods.

        open_clip ≥ 3.1 counts ``text_projection`` as a group of its own and pairs ``ln_final`` with the last block,
        so ``lock_text_tower(n + 1)`` leaves the last ``n`` blocks + ``ln_final`` + ``text_projection`` trainable:
        the set HPS v2's (older) open_clip trained with ``n``. ``logit_scale`` is never locked.
        """
        self.clip.lock_image_tower(unlocked_groups=unlocked_image_groups)
        self.clip.lock_text_tower(unlocked_layers=unlocked_text_layers + 1 if unlocked_text_layers else 0)
        self.clip.logit_scale.requires_grad_(True)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in both towers (used by the FRM's own training steps)."""
        self.gradient_checkpointing = bool(enabled)
        self.clip.set_grad_checkpointing(self.gradient_checkpointing)

    def _detached_parameters(self) -> Dict[str, torch.Tensor]:
        """The CLIP's weights without gradient, in the compute dtype: bf16 casts are cached until a weight changes
        (version counters: optimiser steps and loads bump them)."""
        if self.weight_dtype == torch.float32:
            return {name: p.detach() for name, p in self.clip.named_parameters()}
        versions = tuple(p._version for p in self.clip.parameters())
        if versions != self._frozen_casts[0]:
            self.release_compute_cache()  # the stale casts go before the new ones are made (never two sets alive)
            casts = {name: p.detach().to(self.weight_dtype) for name, p in self.clip.named_parameters()}
            self._frozen_casts = (versions, casts)
        return self._frozen_casts[1]

    def release_compute_cache(self) -> None:
        """Free the cached bf16 casts of the trained weights (:meth:`_detached_parameters` remakes them): a training
        step makes them stale, so the FRM update drops them first instead of holding them beside its gradients."""
        self._frozen_casts = (None, {})

    def _compute_context(self):
        """bf16 autocast over the mixed bf16 (locked) / fp32 (trained) weights; nothing with fp32 weights."""
        if self.weight_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.pixel_mean.device.type, dtype=self.weight_dtype)

    # ----------------------------------------------------------------------------------------------- encoders
    def check_images(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f'FaceRewardModel: images must be a (B, 3, H, W) tensor in [0, 1], got {shape}')
        lo, hi = (float(v) for v in images.detach().aminmax())
        if lo < -1e-3 or hi > 1 + 1e-3 or lo != lo or hi != hi:
            raise ValueError(f'FaceRewardModel: images must lie in [0, 1], got values in [{lo:.3f}, {hi:.3f}]'
                             ' (map [-1, 1] outputs with (x + 1) / 2 first)')

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's eval transform, differentiable: resize of the short side (``resize``) + centre crop, normalise."""
        self.check_images(images)
        size = self.image_size
        if tuple(images.shape[-2:]) != (size, size):
            images = resize_for_clip(images, size, self.resize)
            top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
            images = images[..., top:top + size, left:left + size]
        return (images - self.pixel_mean) / self.pixel_std

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise ValueError('FaceRewardModel: captions must be a sequence of strings, one per image')
        return self.tokenizer(list(captions)).to(self.pixel_mean.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``e_I``: normalised image embeddings of images in [0, 1], any size."""
        with self._compute_context():
            return self.clip.encode_image(self.preprocess(images), normalize=True).float()

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """``e_T``: normalised caption embeddings."""
        with self._compute_context():
            return self.clip.encode_text(self.tokenize(captions), normalize=True).float()

    # ----------------------------------------------------------------------------------------------- scores
    @property
    def logit_scale_exp(self) -> torch.Tensor:
        """``exp(logit_scale) = 1/τ``, the paper's inverse temperature."""
        return self.clip.logit_scale.exp()

    def similarity(self, images: torch.Tensor, captions: Sequence[str], frozen: bool = False) -> torch.Tensor:
        """``r = cos(e_I, e_T)`` per image (B,), HPS v2's score. ``images`` in [0, 1].

        ``frozen=True`` (generator steps): the CLIP runs on detached copies of its weights, so gradient reaches the
        images only (``∂r/∂Î``), never the FRM's weights. Activation checkpointing is off for that call (its
        recomputation would run on the real, trainable weights); the FRM's own updates keep it.
        """
        if len(captions) != images.shape[0]:
            raise ValueError(f'FaceRewardModel: {images.shape[0]} images but {len(captions)} captions')
        pixels, tokens = self.preprocess(images), self.tokenize(captions)
        if frozen or not torch.is_grad_enabled():  # without gradient both paths agree; this one is the fast one
            self.clip.set_grad_checkpointing(False)
            try:
                with no_autocast(pixels.device, self.weight_dtype != torch.float32):
                    e_img, e_txt, _ = torch.func.functional_call(
                        self.clip, self._detached_parameters(), (pixels.to(self.weight_dtype), tokens))
            finally:
                self.clip.set_grad_checkpointing(self.gradient_checkpointing)
        else:
            with self._compute_context():
                e_img, e_txt, _ = self.clip(pixels, tokens)
        return (e_img.float() * e_txt.float()).sum(dim=-1)

    def preference_logits(self, img_a: torch.Tensor, img_b: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """The pair's two scores ``s_k = exp(logit_scale)·cos(e_Ik, e_T)`` as (B, 2) logits, ``[s_a, s_b]``."""
        if img_a.shape != img_b.shape:
            raise ValueError(f'FaceRewardModel: pair images differ in shape: {tuple(img_a.shape)} vs '
                             f'{tuple(img_b.shape)}')
        e_img = self.encode_images(torch.cat([img_a, img_b])).view(2, img_a.shape[0], -1)
        e_txt = self.encode_text(captions)
        cos = (e_img * e_txt.unsqueeze(0)).sum(dim=-1).t()
        return self.logit_scale_exp * cos

    def forward(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        return self.similarity(images, captions)

    # ----------------------------------------------------------------------------------------------- Reward
    name = 'frm'
    trainable = True
    uses_captions = True
    default_mapping = 'one_minus_cos'

    @classmethod
    def from_options(cls, opt: Mapping) -> 'FaceRewardModel':
        return build_frm(opt)

    def score(self, images: torch.Tensor, captions: Optional[Sequence[str]] = None,
              grad: bool = False) -> torch.Tensor:
        """``r = cos(e_I, e_T)``; with ``grad`` through :meth:`similarity` ``frozen`` (gradient to the images only)."""
        if captions is None:
            raise ValueError('FaceRewardModel: the FRM scores images against captions; none given')
        if grad:
            return self.similarity(images, captions, frozen=True)
        with torch.no_grad():
            return self.similarity(images, captions)

    def save_checkpoint(self, path: str) -> None:
        """The official ``{'state_dict': …}`` layout (:func:`save_frm`)."""
        save_frm(self, path)


def build_frm(opt: Optional[Mapping]) -> FaceRewardModel:
    """Build a FaceRewardModel from an option dict (keys = the constructor's arguments, declared and checked by
    :func:`~drward.utils.option_schema.declare`; ``type`` optional)."""
    opt = dict(opt or {})
    opt.pop('type', None)
    return FaceRewardModel(**opt)


def frm_state_dict(frm: FaceRewardModel) -> Dict[str, torch.Tensor]:
    """The FRM's CLIP weights under ``state_dict``: the same layout (and float32 dtype) as the official HPS v2 / FRM
    files, whatever ``weight_dtype`` the FRM runs in."""
    return {'state_dict': {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                           for k, v in frm.clip.state_dict().items()}}


def save_frm(frm: FaceRewardModel, path: str) -> None:
    atomic_save(frm_state_dict(frm), path)


__all__: List[str] = ['FaceRewardModel', 'TINY_FRM_CONFIG', 'RESIZE_MODES', 'build_frm', 'resize_for_clip', 'save_frm',
                      'load_clip_state_dict']
