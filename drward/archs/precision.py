"""Weight precision: frozen weights *stored* in bf16, trained weights kept as fp32 masters (``weight_dtype``).

One option name everywhere (restorers, the FRM): ``weight_dtype: auto | fp32 | bf16``; ``auto`` is bf16 where the
device runs it natively and fp32 elsewhere (:func:`drward.utils.precision_check.choose_precision`, judged on the
default device: CUDA when visible), logged once at start-up.

* Frozen modules (SD UNet, VAE, text tower, stage-1 SwinIR, the frozen θ₀ copy, the FRM's locked layers) are
  stored in the weight dtype and run in it, with inputs cast to it and **without** autocast: on AMX CPUs a bf16
  UNet forward is ~8× faster than the same UNet with fp32 weights under ``torch.autocast`` (docs/design.md §5), and
  autocast over bf16 weights is slower still (measured: ``benchmarks/``).
* Trained parameters stay fp32 (the optimiser's master weights ``θ``). A :class:`ComputeCopy` holds casts
  ``θ_c = cast(θ)`` in the compute dtype as the weights of a parameter-less twin of the module: under ``no_grad``
  the casts are cached and refreshed only when ``θ`` changed (the no-grad DDIM prefix runs at bf16 speed); with
  gradient they are recomputed so that ``∂L/∂θ = cast'(θ)ᵀ·∂L/∂θ_c`` reaches the fp32 masters — the same gradient
  autocast would give, with every kernel in bf16. Activation checkpointing keeps working: the twin's weights are
  ordinary attributes during recomputation, not a temporary swap.
* Numerically sensitive parts (the DDIM chain, the losses) stay fp32: restorers return fp32 images and
  ``L_reg`` pairs.
"""
from __future__ import annotations

import copy
import functools
from contextlib import nullcontext
from typing import Dict, List, Tuple, Union

import torch
from torch import nn

from drward.utils.options import OptionError
from drward.utils.precision_check import choose_precision, log_choice

WEIGHT_DTYPES: Dict[str, torch.dtype] = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def parse_weight_dtype(value: Union[str, torch.dtype, None], owner: str = 'weight_dtype') -> torch.dtype:
    """``'fp32'`` / ``'bf16'`` (or a torch dtype among them) → the torch dtype; ``'auto'`` → bf16 where the default
    device runs it natively, else fp32 (logged once); anything else raises naming the accepted values. ``None`` means
    fp32."""
    if value is None:
        return torch.float32
    if value == 'auto':
        choice = choose_precision('auto')
        log_choice(owner, choice)
        return choice.dtype
    if isinstance(value, torch.dtype) and value in WEIGHT_DTYPES.values():
        return value
    if isinstance(value, str) and value in WEIGHT_DTYPES:
        return WEIGHT_DTYPES[value]
    raise OptionError(f'{owner}: weight_dtype must be one of {sorted(WEIGHT_DTYPES) + ["auto"]}, got {value!r}')


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in WEIGHT_DTYPES.items()}[dtype]


def no_autocast(device: torch.device, reduced: bool):
    """Disable an enclosing autocast while reduced-precision weights run (they get inputs in their own dtype)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False) if reduced else nullcontext()


def cast_buffers(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast every floating-point buffer of ``module`` (and its children) to ``dtype`` in place; parameters untouched."""
    for owner in module.modules():
        for name, buf in owner._buffers.items():
            if buf is not None and buf.is_floating_point():
                owner._buffers[name] = buf.to(dtype)


def store_frozen(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store a frozen module's floating-point parameters and buffers in ``dtype`` (in place)."""
    return module.to(dtype) if dtype != torch.float32 else module


class ComputeCopy:
    """A parameter-less twin of ``master`` whose weights are casts of the master's trained parameters.

    ``refresh(with_grad)`` before use: with gradient, fresh differentiable casts (gradients flow to the fp32
    masters); without, cached casts reused until a master parameter changes (tracked by tensor version counters,
    which optimiser steps and ``load_state_dict`` bump).
    """

    def __init__(self, master: nn.Module, dtype: torch.dtype):
        self.dtype = dtype
        self._masters: List[Tuple[nn.Module, str, nn.Parameter]] = [
            (m, name, p) for m in master.modules() for name, p in m._parameters.items() if p is not None]
        # copy the structure only: every parameter is replaced by a placeholder during the deep copy
        memo = {id(p): torch.empty(0) for _, _, p in self._masters}
        self.module = copy.deepcopy(master, memo)
        twins = dict(self.module.named_modules())
        names = {id(m): n for n, m in master.named_modules()}
        self._slots = []
        for owner, name, param in self._masters:
            twin = twins[names[id(owner)]]
            del twin._parameters[name]
            self._slots.append((twin, name, param))
        cast_buffers(self.module, dtype)
        self._versions = None
        self._device = None
        self.refresh(with_grad=False)

    def _current_versions(self) -> Tuple[int, ...]:
        return tuple(p._version for _, _, p in self._slots)

    def refresh(self, with_grad: bool) -> nn.Module:
        """Point the twin's weights at casts of the masters; returns the twin."""
        device = self._slots[0][2].device if self._slots else None
        if device != self._device:  # the master moved: move the twin's buffers, recast
            self.module.to(device)
            self._device, self._versions = device, None
        versions = self._current_versions()
        if with_grad or versions != self._versions:
            with torch.set_grad_enabled(with_grad):
                for twin, name, param in self._slots:
                    twin.__dict__[name] = param.to(self.dtype)
            self._versions = self._current_versions()
        return self.module

    def release(self) -> None:
        """Drop the casts (stale after an optimiser step anyway): their memory is free until the next
        :meth:`refresh`, e.g. during the dynamic FRM update."""
        for twin, name, _ in self._slots:
            twin.__dict__.pop(name, None)
        self._versions = None

    def nbytes(self) -> int:
        """Bytes held by the casts (the twin's weights)."""
        return sum(twin.__dict__[name].numel() * twin.__dict__[name].element_size()
                   for twin, name, _ in self._slots if name in twin.__dict__)


def runs_in_weight_dtype(restore):
    """Decorator for ``Restorer.restore``: with reduced-precision weights, the LQ input is cast to the weight dtype,
    an enclosing autocast is switched off (every module gets inputs in its own dtype), the trained branch's compute
    copy is refreshed (``self.refresh_compute(with_grad)``), and the image and ``L_reg`` pairs come back in fp32
    (the losses run in fp32)."""
    @functools.wraps(restore)
    def wrapper(self, lq, captions=None, grad_steps=0, generator=None, **sampling):
        dtype = self.weight_dtype
        if dtype == torch.float32:
            return restore(self, lq, captions, grad_steps, generator, **sampling)
        self.refresh_compute(with_grad=bool(grad_steps) and torch.is_grad_enabled())
        with no_autocast(lq.device, True):
            out = restore(self, lq.to(dtype), captions, grad_steps, generator, **sampling)
        out.image = out.image.float()
        out.stage1 = out.stage1.float() if out.stage1 is not None else None
        out.reg_pairs = [(a.float(), b.float()) for a, b in out.reg_pairs]
        return out
    return wrapper


def cast_io_to_weights(module: nn.Module, compute_dtype: torch.dtype) -> None:
    """A trained full layer (fp32 weights) inside a reduced-precision network: its floating inputs are cast to its
    weights' dtype and its output back to ``compute_dtype`` (forward hooks; gradients flow through both casts)."""
    weight_dtype = next(module.parameters()).dtype

    def cast_inputs(_module, args):
        return tuple(a.to(weight_dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def cast_output(_module, _args, output):
        return output.to(compute_dtype) if torch.is_tensor(output) else output

    module.register_forward_pre_hook(cast_inputs)
    module.register_forward_hook(cast_output)
