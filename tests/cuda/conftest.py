"""Tests of the CUDA backend. They run on a real GPU, or on any machine under numba's CUDA
simulator, in a pytest process of their own (the variable must be set before numba is
imported):

    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest tests/cuda -q

Without a GPU and without the variable every test here is skipped, so the main (CPU)
test run never needs a GPU.
"""
import os
import sys

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _why_unavailable():
    if SIMULATOR:
        return None
    try:
        from numba import cuda
        if cuda.is_available():
            return None
    except Exception as exc:                      # broken driver / toolkit
        return f"CUDA unavailable ({exc}); set NUMBA_ENABLE_CUDASIM=1 to use the simulator"
    return ("no CUDA GPU found and NUMBA_ENABLE_CUDASIM is not set; run "
            "`NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda` for the simulator")


def _serialise_simulator_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` thread-safe.

    numba-cuda's simulator (``numba.cuda`` redirects to it once numba-cuda is installed)
    emulates a block's shared array by one NumPy array per call site, created on first
    use by ``FakeCUDAShared.array`` with an unlocked check-then-insert into a dict. Every
    CUDA thread is a Python thread, and with the 10 µs switch interval set below two
    threads of a block often both miss the dict and each get its own array: they no
    longer share memory, and a kernel reads never-written ``np.empty`` garbage (4.8e29
    in a matmul result, 4 of 57 tests failing at random). The replacement below does the
    same lookup under a lock. It also keys the call site by the caller's frame
    (file, line) directly instead of ``traceback.extract_stack``, which formats the
    whole stack on every call and was the slowest part of a shared-memory kernel.
    """
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    shared_cls = kernelapi.FakeCUDAShared
    if getattr(shared_cls, "_minivit_locked", False):
        return
    lock = threading.Lock()
    original = shared_cls.array

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:     # dynamic shared memory: one buffer
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        f = sys._getframe(1)
        caller = (f.f_code.co_filename, f.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    shared_cls.array = array
    shared_cls._minivit_locked = True


REASON = _why_unavailable()

if SIMULATOR:
    # The simulator runs every CUDA thread as a Python thread and syncthreads() as a
    # barrier; with the default 5 ms GIL switch interval each barrier costs milliseconds.
    sys.setswitchinterval(1e-5)
    _serialise_simulator_shared_arrays()


@pytest.fixture(autouse=True)
def _need_cuda():
    if REASON:
        pytest.skip(REASON)


@pytest.fixture(scope="session")
def be_small():
    """CUDA backend with tiny tiles: several tiles and ragged edges on tiny shapes."""
    if REASON:
        pytest.skip(REASON)
    from minivit.backends.cuda_backend import CudaBackend
    from minivit.backends.cuda_kernels import SMALL_TILES
    return CudaBackend(tiles=SMALL_TILES)


@pytest.fixture(scope="session")
def be_default():
    """CUDA backend with the production tiles (slow under the simulator: few tests)."""
    if REASON:
        pytest.skip(REASON)
    from minivit.backends.cuda_backend import CudaBackend
    return CudaBackend()


@pytest.fixture(params=["small", "default"])
def be_both(request, be_small, be_default):
    """Both tile configurations, for the kernels with hand-written tiling."""
    return be_small if request.param == "small" else be_default


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
