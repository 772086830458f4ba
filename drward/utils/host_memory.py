"""Give freed host memory back to the operating system between the phases of a training step.

On the CPU, glibc's allocator keeps freed pages of its heaps (below its mmap threshold, which grows to 32 MB as
large blocks are freed) for reuse: after the generator's backward pass several GiB of activation memory can stay
resident while the dynamic FRM update allocates its gradients and AdamW states beside it. ``malloc_trim(0)``
returns the free pages to the kernel (``madvise``), at the cost of a few milliseconds. Elsewhere (other C
libraries, macOS, Windows) this is a no-op, as it is for CUDA memory, which PyTorch's caching allocator manages.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Optional


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[ctypes._CFuncPtr]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_host_memory() -> bool:
    """``malloc_trim(0)`` where glibc provides it; True when it released memory."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
