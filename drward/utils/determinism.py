"""``deterministic: true`` (top level of an option file): the same run gives the same weights on CUDA too.

What drward promises — a resumed run equals the uninterrupted one bit for bit, and two ranks of b faces make the
update of one process on 2b — holds on the CPU as is: its kernels are deterministic for a fixed thread count. On
CUDA three things break it, and BasicSR's train pipeline turns the first on:

* cuDNN's benchmark mode picks a convolution algorithm by timing the candidates, so two runs (or a run and its
  resume) may use different algorithms with different rounding;
* some backward kernels accumulate with atomic adds (scatter/index_add, some convolution and interpolation
  backwards, the bilinear/bicubic resize in front of the FRM), whose order varies from call to call;
* TF32 matmuls/convolutions (cuDNN's on by default) round inputs to 10 bits of mantissa.

:func:`apply` with the option on sets ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
implementation then raises instead of drifting), cuDNN benchmark off and deterministic on, TF32 off for matmuls and
cuDNN, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS' reproducibility setting; it must be set before the first
cuBLAS call, which :func:`apply` precedes). The cost is speed: slower convolution algorithms and fp32 instead of
TF32 (bf16 autocast is unaffected). Without the option, on CUDA: resume and rank equivalence hold to rounding
(runs drift apart slowly, like two seeds of the same recipe), not bit for bit.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping

import torch

#: The top-level option key.
KEY = 'deterministic'
CUBLAS_WORKSPACE = ':4096:8'


def apply(opt: Mapping[str, Any]) -> Dict[str, Any]:
    """Apply the option file's ``deterministic`` setting (after BasicSR set cuDNN benchmark on); returns what
    it set (empty when the option is off)."""
    value = opt.get(KEY, False)
    if not isinstance(value, bool):
        raise ValueError(f'option {KEY}: true or false, got {value!r}')
    if not value:
        return {}
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return {'use_deterministic_algorithms': True, 'cudnn.benchmark': False, 'cudnn.deterministic': True,
            'tf32': False, 'CUBLAS_WORKSPACE_CONFIG': os.environ['CUBLAS_WORKSPACE_CONFIG']}


__all__ = ['KEY', 'CUBLAS_WORKSPACE', 'apply']
