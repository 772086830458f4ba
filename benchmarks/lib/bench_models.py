"""How the benchmarks build their models: a ReFLModel (restorer + FRM + the four losses) at tiny size, or at SD 2.1
sizes with random weights, through the restorers' and the FRM's own options — nothing is patched.

* ``--size tiny``: the restorer's ``tiny: true`` and the tiny CLIP FRM (random, seconds on a CPU);
* ``--size sd21``: the restorer's ``random_weights: true`` — the real architectures (SD 2.1-base UNet, VAE and text
  tower; DiffBIR's face SwinIR and IRControlNet with its θ₀ copy; OSEDiff's rank-4 LoRA) with no weight file, which
  the restorer logs as a RANDOM-weights warning — and a ViT-H-14 FRM without checkpoint (also logged as RANDOM).

The cost of a step does not depend on the weights' values, so random weights measure what real ones would.
:func:`build_on_meta` builds the same modules on the meta device (no memory, nothing initialised) for counting.
"""
from __future__ import annotations

import argparse
import inspect
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch

SIZES = ('tiny', 'sd21')


@dataclass
class RestorerSpec:
    """How the benchmark builds one restorer family: ``arch_type`` (the ARCH_REGISTRY name) and ``options(steps)``,
    its ``network_g`` options apart from the size (K = ``steps``, stop index fixed at the last step)."""

    arch_type: str
    title: str
    options: Callable[[int], Dict]


SPECS: Dict[str, RestorerSpec] = {
    'diffbir': RestorerSpec('DiffBIRRestorer', 'DiffBIR', lambda steps: dict(num_steps=steps, stop_window=1)),
    'osediff': RestorerSpec('OSEDiffRestorer', 'OSEDiff', lambda steps: dict()),
}


def available(spec: RestorerSpec) -> bool:
    """Whether the restorer's arch is registered (OSEDiff may not exist yet in a checkout)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    import drward  # noqa: F401  (registers every arch)
    return spec.arch_type in ARCH_REGISTRY


def accepts_option(cls: type, key: str) -> bool:
    """Whether ``cls(**{key: ...})`` is accepted: a named argument, or a key it declares (the restorers take
    ``**opts`` checked against their declared options)."""
    parameters = inspect.signature(cls).parameters
    if key in parameters:
        return True
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    from drward.utils.option_schema import declared_options
    return takes_any and key in declared_options(cls)


def _weight_dtype(args: argparse.Namespace, cls: type) -> Dict:
    """``weight_dtype`` when ``--weight-dtype`` is given and ``cls`` has the option; else the model's default (the
    dtypes the reports print are read from the built models, never assumed)."""
    dtype = getattr(args, 'weight_dtype', None)
    return {'weight_dtype': dtype} if dtype is not None and accepts_option(cls, 'weight_dtype') else {}


def restorer_options(spec: RestorerSpec, args: argparse.Namespace) -> Dict:
    """``network_g``: the spec's options at K = ``args.steps``, tiny or real sizes with random weights; with
    ``args.lora_rank`` (``--lora-rank``, DiffBIR) LoRA adapters of that rank on the IRControlNet."""
    from basicsr.utils.registry import ARCH_REGISTRY
    size = {'tiny': True} if args.size == 'tiny' else {'random_weights': True}
    dtype = _weight_dtype(args, ARCH_REGISTRY.get(spec.arch_type))
    lora = {'lora': {'rank': int(args.lora_rank)}} if getattr(args, 'lora_rank', None) else {}
    return {'type': spec.arch_type, **spec.options(args.steps), **size, **dtype, **lora,
            **(getattr(args, 'network_overrides', None) or {})}


def loss_options(args: argparse.Namespace) -> Dict:
    """The authors' four loss terms and weights; the FRM is the tiny CLIP or a random ViT-H-14 (HPS v2's size);
    LPIPS uses a random VGG backbone (same cost as the real one, no weight file needed)."""
    from drward.archs.frm_arch import FaceRewardModel
    frm = {'model_name': 'tiny' if args.size == 'tiny' else 'ViT-H-14', **_weight_dtype(args, FaceRewardModel)}
    return {
        'reg_opt': {'type': 'RegLoss', 'mode': 'output', 'loss_weight': 1e-4},
        'dwt_opt': {'type': 'DWTLoss', 'mode': 'dtcwt', 'loss_weight': 0.01},
        'reward_opt': {'type': 'RewardLoss', 'loss_weight': 0.005, 'frm': frm},
        'lpips_opt': {'type': 'LPIPSLoss_drward', 'loss_weight': 0.01, 'net': 'vgg', 'random_backbone': True},
    }


def refl_options(args: argparse.Namespace, spec: RestorerSpec, workdir: str) -> Dict:
    """A ReFLModel option dict: one micro-batch per step, the FRM update at every step, nothing written."""
    paths = {key: osp.join(workdir, key) for key in ('models', 'training_states', 'visualization', 'log')}
    return {
        'name': 'refl_step_benchmark', 'model_type': 'ReFLModel', 'is_train': True, 'dist': False, 'rank': 0,
        'world_size': 1, 'num_gpu': 1 if args.device == 'cuda' else 0, 'manual_seed': args.seed,
        'network_g': restorer_options(spec, args),
        'path': {**paths, 'resume_state': None, 'pretrain_network_g': None},
        'train': {
            'grad_accum': 1, 'grad_steps': 1, 'mixed_precision': 'bf16' if args.dtype == 'bf16' else 'no',
            'gradient_checkpointing': bool(args.gradient_checkpointing and args.frm_checkpointing),
            'optim_g': {'type': 'AdamW', 'lr': 5e-5, 'weight_decay': 0.01},
            **loss_options(args),
            'frm_update': {'every': 1, 'loss_weight': 0.1, 'reduction': 'sum', 'grad_clip': 1.0},
            'hack_monitor': {'enabled': False},  # it runs at log steps only (print_freq), not in the step measured
            **(getattr(args, 'train_overrides', None) or {}),
        },
    }


def set_checkpointing(model, restorer: bool, frm: bool) -> None:
    """Activation checkpointing in the restorer (UNet, control branch, VAE) and in the FRM, on or off."""
    model.net_g.set_gradient_checkpointing(restorer)
    model.frm.clip.set_grad_checkpointing(frm)


def build_refl_model(args: argparse.Namespace, spec: RestorerSpec, workdir: str):
    """ReFLModel around the chosen restorer, built through BasicSR's model registry."""
    from basicsr.models import build_model

    import drward  # noqa: F401
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(refl_options(args, spec, workdir))
    if args.gradient_checkpointing or args.frm_checkpointing:
        set_checkpointing(model, args.gradient_checkpointing, args.frm_checkpointing)
    return model


def build_on_meta(args: argparse.Namespace, spec: RestorerSpec) -> Tuple[torch.nn.Module, torch.nn.Module,
                                                                          List[torch.nn.Module]]:
    """The restorer, the FRM and the other loss modules (LPIPS, DT-CWT, L_reg), built with meta-device parameters
    (accelerate's ``init_empty_weights``): no weight memory, nothing initialised, every parameter's dtype and
    ``requires_grad`` as built. Buffers are real (small: schedules, normalisation constants)."""
    from accelerate import init_empty_weights
    from basicsr.archs import build_network
    from basicsr.losses import build_loss

    import drward  # noqa: F401
    from drward.archs.frm_arch import build_frm
    losses = loss_options(args)
    with init_empty_weights(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*copying from a non-meta parameter')  # LPIPS's lin layers
        net = build_network(restorer_options(spec, args))
        frm = build_frm(losses['reward_opt']['frm'])
        others = [build_loss(dict(opt)) for key, opt in losses.items() if key != 'reward_opt']
    return net, frm, others


def make_batch(args: argparse.Namespace, device: torch.device) -> Dict:
    """Random LQ/GT faces in [0, 1] (content does not change the cost) and the datasets' fallback caption."""
    from drward.data.face_degradation_dataset import DEFAULT_FALLBACK_CAPTION
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.resolution, args.resolution)
    gt = torch.rand(shape, generator=generator)
    lq = (gt + 0.1 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return {'lq': lq.to(device), 'gt': gt.to(device), 'caption': [DEFAULT_FALLBACK_CAPTION] * args.batch}


def chain_length(net) -> int:
    """K, the number of denoiser calls of the restorer's chain (1 for a restorer without a sampler)."""
    return int(getattr(getattr(net, 'sampler', None), 'num_steps', 1))


def size_title(size: str) -> str:
    return 'tiny random models' if size == 'tiny' else 'SD 2.1 sizes, random weights'

