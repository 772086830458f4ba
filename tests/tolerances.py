"""Tolerances for comparing two computation paths (processes, batchings, thread counts, recomputation, dtypes).

Two paths that compute the same float expression in another order (a blocked matmul split over another number of
threads, an all-reduce instead of one accumulation, a recomputed activation) differ by rounding only. For one
reduction of ``n`` terms of magnitude at most ``scale`` in a dtype with machine epsilon ``ε``, the two orders'
results differ by about ``√n · ε · scale`` (rounding errors of blocked/pairwise summation add like a random walk;
the worst case is ``n · ε · scale``, Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2). A network of
``depth`` such reductions in a row adds up to ``depth`` of them. Every cross-path tolerance in the tests is built
from :func:`rounding_tol` with the ``n``, ``scale`` and ``depth`` of what it compares, said next to it.
"""
import math

import torch

#: float32's machine epsilon (2⁻²³ ≈ 1.19e-7).
EPS32 = torch.finfo(torch.float32).eps
#: The thread counts the float-sensitive comparisons run at (``tests/conftest.py``: ``num_threads``): a tolerance
#: that holds at one count only fails here, not on a machine with more cores.
THREAD_COUNTS = (1, 2)

#: The tiny FRM (``drward.archs.frm_arch.TINY_FRM_CONFIG``): its widest reduction is the MLP's 4 · 64 = 256 hidden
#: units, and its towers are 4 residual blocks of two such reductions (attention, MLP) each.
TINY_FRM_WIDEST = 256
TINY_FRM_DEPTH = 8


def rounding_tol(n: int, scale: float = 1.0, depth: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """``depth · √n · ε(dtype) · scale``: how far two evaluation orders of ``depth`` chained reductions of ``n``
    terms of magnitude ≤ ``scale`` may drift apart (see the module docstring)."""
    return depth * math.sqrt(n) * torch.finfo(dtype).eps * scale


#: A cosine similarity ``cos(e_I, e_T)`` of the tiny FRM (HPS v2's reward ``r``): its terms are bounded by 1, so the
#: rounding is absolute on the scale of 1, not relative to ``r`` (``r`` ≈ 0.01 leaves a relative bound useless).
TINY_REWARD_ATOL = rounding_tol(TINY_FRM_WIDEST, 1.0, TINY_FRM_DEPTH)

#: The tiny SD parts (``drward.archs.tiny_configs``): the widest reduction is a 3×3 convolution over 64 channels
#: (576 terms); a gradient runs through about 40 such layers (the VAE decoder, the UNet/ControlNet levels and back).
TINY_SD_WIDEST = 64 * 9
TINY_SD_DEPTH = 40
#: Relative rounding of a tiny restorer's gradient between two evaluation orders (≈ 1.1e-4).
TINY_SD_GRAD_RTOL = rounding_tol(TINY_SD_WIDEST, 1.0, TINY_SD_DEPTH)
