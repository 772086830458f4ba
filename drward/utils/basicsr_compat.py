"""Small fixes that let BasicSR 1.4.2's own pipelines run on CPU-only machines.

``basicsr.train.load_resume_state`` maps resume states onto ``torch.cuda.current_device()``, which raises without a
GPU, so ``--auto_resume`` fails on the CPU. :func:`load_resume_state` does the same search (the newest
``experiments/<name>/training_states/<iter>.state``) and maps onto the GPU when there is one, else the CPU. It reads
the state with :func:`~drward.utils.safe_load.load_training_state` (no code from the file runs; BasicSR unpickles
it whole).

BasicSR's ``fused_leaky_relu`` (StyleGAN2's discriminator and ``EqualLinear``, used by GFPGAN's training) calls a
compiled extension and has no fallback when it is not built (the pip wheel ships none): it fails with
``NameError: fused_act_ext``. :func:`native_fused_leaky_relu` computes the same
``scale · leaky_relu(x + b, slope)`` (``b`` broadcast along channels) with plain PyTorch ops.

GFPGAN's ``GFPGANModel`` passes Adam ``betas=(0**1, 0.99**1)`` = ``(0, 0.99)``, an int and a float, which
PyTorch ≥ 2.6 rejects ("betas must be either both floats or both Tensors"); :func:`float_betas` makes
``BaseModel.get_optimizer`` pass them as floats (the same values).
"""
from __future__ import annotations

import os.path as osp
import sys
import types

import torch
import torch.nn.functional as F
from basicsr.utils import check_resume, scandir

from drward.utils.safe_load import load_training_state


def load_resume_state(opt: dict):
    """BasicSR's resume-state lookup (``auto_resume`` or ``path.resume_state``), loadable on any device."""
    path = None
    if opt['auto_resume']:
        folder = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(folder):
            iters = [float(v.split('.state')[0]) for v in scandir(folder, suffix='state', recursive=False)]
            if iters:
                path = osp.join(folder, f'{max(iters):.0f}.state')
                opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    location = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    state = load_training_state(path, map_location=location)
    check_resume(opt, state['iter'])
    return state


def native_fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                            scale: float = 2 ** 0.5) -> torch.Tensor:
    """``scale · leaky_relu(input + bias, negative_slope)``, ``bias`` of shape (C,) added along dim 1."""
    shape = (1, bias.shape[0]) + (1, ) * (input.dim() - 2)
    return F.leaky_relu(input + bias.view(shape), negative_slope) * scale


def use_native_fused_leaky_relu() -> int:
    """Without BasicSR's compiled ``fused_act_ext``, point every loaded module's ``fused_leaky_relu`` at
    :func:`native_fused_leaky_relu`; returns how many modules were changed (0 when the extension is built)."""
    from basicsr.ops.fused_act import fused_act
    if hasattr(fused_act, 'fused_act_ext'):
        return 0
    original = fused_act.fused_leaky_relu
    # the module's own namespace (vars), so lazy modules' __getattr__ is never triggered
    modules = [m for m in list(sys.modules.values())
               if isinstance(m, types.ModuleType) and vars(m).get('fused_leaky_relu') is original]
    for module in modules:
        module.fused_leaky_relu = native_fused_leaky_relu
    return len(modules)


def float_betas(get_optimizer):
    """Wrap ``BaseModel.get_optimizer`` so that integer ``betas`` entries reach the optimiser as floats."""
    if getattr(get_optimizer, 'float_betas', False):
        return get_optimizer

    def wrapped(self, optim_type, params, lr, **kwargs):
        if 'betas' in kwargs:
            kwargs['betas'] = tuple(float(b) if isinstance(b, int) else b for b in kwargs['betas'])
        return get_optimizer(self, optim_type, params, lr, **kwargs)

    wrapped.float_betas = True
    return wrapped


def install() -> None:
    """Route BasicSR's train pipeline through :func:`load_resume_state`, pass optimiser betas as floats, and use the
    native fused leaky ReLU when BasicSR's extension is not built."""
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    basicsr.train.load_resume_state = load_resume_state
    BaseModel.get_optimizer = float_betas(BaseModel.get_optimizer)
    use_native_fused_leaky_relu()
