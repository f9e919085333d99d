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


REASON = _why_unavailable()

if SIMULATOR:
    # The simulator runs every CUDA thread as a Python thread and syncthreads() as a
    # barrier; with the default 5 ms GIL switch interval each barrier costs milliseconds.
    sys.setswitchinterval(1e-5)


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
