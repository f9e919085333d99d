"""Thread pools: one setting for Numba and BLAS, and BLAS calls from Numba's own pool.

Why this module exists. A training step alternates dozens of times between big matmuls and
the fused Numba kernels between them. If the matmuls run on OpenBLAS's thread pool and the
kernels on Numba's, the two pools take turns on the same cores, and OpenBLAS's idle
workers busy-wait (for ~2^28 cycles, ~0.1 s, unless ``OPENBLAS_THREAD_TIMEOUT`` was set
before NumPy was imported — which a user's ``import numpy as np`` at the top of a script
prevents) on the very cores Numba's threads need. The speed then depended on import order
and environment variables.

The fix does not depend on either: the numba backend issues every large matmul itself,
from inside a Numba ``prange`` region — each Numba thread calls the BLAS ``gemm`` of NumPy's
own OpenBLAS on its block of rows, with OpenBLAS told to use one thread for the duration
(:func:`blas_single_thread`). Only Numba's pool ever runs, so no idle pool spins on a core
another one needs. The gemm is reached through its C symbol (``cblas_sgemm`` /
``cblas_dgemm`` of the library NumPy loaded, found with ``threadpoolctl``), declared to
Numba as an external function, so the calling kernels are still cached on disk.

When NumPy's BLAS is not OpenBLAS (MKL, Accelerate, …) :data:`HAVE_CBLAS` is False and the
backend falls back to NumPy's ``@`` (two pools again, as before).

:func:`set_threads` is the one knob for users (and ``minivit --threads N``): it sets Numba's
thread count and every BLAS pool's.
"""
from __future__ import annotations

import contextlib
import ctypes

import numba
from llvmlite import binding as _llvm
from numba import types

__all__ = ["set_threads", "get_threads", "blas_single_thread", "HAVE_CBLAS", "SGEMM",
           "DGEMM", "CBLAS_INFO"]

# CBLAS enum values (cblas.h): row-major order, no-transpose, transpose.
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _find_openblas():
    """NumPy's OpenBLAS: (ctypes library, symbol prefix, suffix, 64-bit ints?, info), or None.

    threadpoolctl finds the library NumPy actually loaded (whatever its file name); the
    symbol names differ between builds (``cblas_sgemm`` in a plain build,
    ``scipy_cblas_sgemm64_`` in the wheels' ILP64 build)."""
    try:
        import numpy  # noqa: F401  (loads its BLAS, so threadpoolctl can see it)
        import threadpoolctl
        infos = [i for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
    except Exception:                                   # pragma: no cover - no threadpoolctl
        return None
    for info in infos:
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:                                 # pragma: no cover
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}cblas_sgemm{suffix}") and \
                        hasattr(lib, f"{prefix}openblas_set_num_threads{suffix}"):
                    cfg = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
                    ilp64 = suffix == "64_"
                    if cfg is not None:
                        cfg.restype = ctypes.c_char_p
                        ilp64 = ilp64 or b"USE64BITINT" in (cfg() or b"")
                    return lib, prefix, suffix, ilp64, info
    return None


def _declare(found):
    """Register the gemm symbols with LLVM under fixed names and declare them to Numba."""
    lib, prefix, suffix, ilp64, _ = found
    I = types.int64 if ilp64 else types.int32
    e, vp = types.int32, types.voidptr
    fns = []
    for name, real in (("s", types.float32), ("d", types.float64)):
        sym = getattr(lib, f"{prefix}cblas_{name}gemm{suffix}")
        _llvm.add_symbol(f"minivit_cblas_{name}gemm", ctypes.cast(sym, ctypes.c_void_p).value)
        # cblas_?gemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        fns.append(types.ExternalFunction(
            f"minivit_cblas_{name}gemm",
            types.void(e, e, e, I, I, I, real, vp, I, vp, I, real, vp, I)))
    setn = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
    setn.argtypes, setn.restype = [ctypes.c_int], None
    getn = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
    getn.argtypes, getn.restype = [], ctypes.c_int
    return fns[0], fns[1], setn, getn


_found = _find_openblas()
HAVE_CBLAS = _found is not None
if HAVE_CBLAS:
    SGEMM, DGEMM, _set_blas, _get_blas = _declare(_found)
    CBLAS_INFO = {k: _found[4][k] for k in ("filepath", "version", "threading_layer")}
    CBLAS_INFO["ilp64"] = _found[3]
else:                                                   # pragma: no cover - depends on NumPy
    SGEMM = DGEMM = _set_blas = _get_blas = None
    CBLAS_INFO = None


@contextlib.contextmanager
def blas_single_thread():
    """Within the block, NumPy's OpenBLAS runs every call on the calling thread only (the
    Numba kernels call it from each of their threads); the previous count is restored.
    Cheap: two calls that only set a number (no threads are started or woken)."""
    if not HAVE_CBLAS:
        yield
        return
    n = _get_blas()
    if n != 1:
        _set_blas(1)
    try:
        yield
    finally:
        if n != 1:
            _set_blas(n)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads for Numba's kernels and for every BLAS library NumPy loaded.

    n: a positive int, or None for all the cores Numba may use (``NUMBA_NUM_THREADS``,
    default the machine's CPU count). Returns the count now in force. Takes effect at once,
    whenever it is called (no environment variable, no import order to respect).
    """
    from ..errors import ConfigError
    limit = numba.config.NUMBA_NUM_THREADS
    if n is None:
        n = limit
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a positive integer, got {n!r}")
    if n > limit:
        raise ConfigError(f"threads={n} is more than Numba's limit of {limit} "
                          f"(NUMBA_NUM_THREADS / the CPU count)")
    numba.set_num_threads(n)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(n, user_api="blas")
    except ImportError:                                 # pragma: no cover
        if HAVE_CBLAS:
            _set_blas(n)
    return n


def get_threads() -> dict:
    """{"numba": Numba's thread count, "blas": NumPy's OpenBLAS thread count or None}."""
    return {"numba": numba.get_num_threads(), "blas": _get_blas() if HAVE_CBLAS else None}
