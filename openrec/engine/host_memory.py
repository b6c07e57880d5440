"""glibc malloc settings for CPU inference and training: keep freed tensor memory for reuse.

PyTorch's CPU allocator takes every tensor straight from malloc and gives it back on free. Under
glibc's defaults a block above the mmap threshold (128 KiB, raised on the fly up to 32 MiB as such
blocks are freed) is a fresh ``mmap`` returned to the kernel on free, and free memory at the top of
the heap beyond the trim threshold (twice the mmap threshold) is returned too. An inference-only
process then page-faults much of each forward's activations in anew (SVTRv2Mamba-T on CPU: about
26000 minor faults per forward at batch 8); with both thresholds raised, freed blocks stay in the
heap for the next forward (31 faults; 27% faster; docs/speed.md, "Freed memory kept for reuse"; perf note 53). A process
that trained first has usually raised glibc's thresholds itself, so training changes little.
The cost is memory kept by the process: up to ``trim_threshold`` of free heap is not returned.

:func:`tune_malloc` is called by the command-line tools at start-up; library users call it
themselves. ``OPENREC_MALLOC_TUNING=0`` turns it off. It does nothing where the C library is not
glibc (macOS, musl) and returns whether the settings took.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

from ..ops.kernels import env_switch

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20   # glibc's ceiling for it on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 << 20  # free heap kept before trimming


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring). Returns
    True when both took; False with ``OPENREC_MALLOC_TUNING=0``, on another C library, or when glibc
    refused a value. Safe to call more than once."""
    if not env_switch("OPENREC_MALLOC_TUNING") or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success and 0 for a value out of range
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
