"""Keep freed memory in the process, so a training step does not page-fault its buffers in
afresh every step.

Why this module exists. Every op of a CPU step allocates its outputs (cifar10-tiny, batch
128: qkv is 8,320 × 384 float32 = 12.8 MB, each attention matrix 8.7 MB) and frees them
when the step's caches are dropped. glibc's ``malloc`` serves blocks this large with
``mmap`` and gives them back to the kernel on ``free``, or trims them off the top of the
heap; the next step's allocation then touches fresh pages, and each first touch of a 4 KiB
page is a page fault that the kernel answers with a zeroed page. Measured on cifar10-tiny
(numba backend, batch 128): ~22,000 minor faults per training step (88 MB re-zeroed),
and none once freed memory stays in the heap (``ru_minflt`` before and after a step;
``benchmarks/train_step.py`` has the time it buys).

The fix is two ``mallopt`` settings, applied at run time through ctypes (no environment
variable, no import order — as for the thread pools in :mod:`.threads`):

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's ceiling for it on 64-bit): blocks below it come
  from the heap, where a freed block is reused by the next allocation of its size;
* ``M_TRIM_THRESHOLD`` = 1 GiB: the heap's free top is not handed back to the kernel.

The cost is that the process keeps its peak heap (what a training step needs anyway) until
it exits. Elsewhere than Linux with glibc (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20       # glibc refuses more than HEAP_MAX_SIZE / 2 = 32 MiB
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks below 32 MiB in the process (see the module
    docstring). Idempotent; returns True when the settings are in force, False where they
    do not apply (not Linux/glibc, or ``mallopt`` refused them)."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):           # musl and friends: no mallopt
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
