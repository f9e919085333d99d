"""Backends: the same ops, computed by NumPy (the reference), Numba (CPU JIT) or
numba.cuda (GPU).

The model never does arithmetic on arrays itself; it calls a backend object, so one model
file drives every backend. The contract is written once, with every op's shapes, in
:class:`~minivit.backends.protocol.Backend`: the op pairs ``*_forward`` / ``*_backward``,
the masked-patch-prediction ops, the optimizer updates, and a little glue (``asarray``,
``to_host``, ``zeros``, ``add``, …). :class:`~minivit.backends.numpy_ops.NumpyBackend`
is the reference implementation; tests/test_backend_contract.py checks every backend
against the Protocol.
"""
from __future__ import annotations

from ..settings import BACKENDS, check_backend_name
from .numpy_ops import NumpyBackend
from .protocol import Backend

_instances: dict[str, object] = {}


def get_backend(name="numpy"):
    """Return the backend called ``name`` ("numpy", "numba" or "cuda"), or pass a backend
    object through unchanged. Backends are created once and shared."""
    if not isinstance(name, str):
        return name
    check_backend_name(name)
    if name not in _instances:
        if name == "numpy":
            _instances[name] = NumpyBackend()
        elif name == "numba":
            from .numba_cpu import NumbaBackend
            _instances[name] = NumbaBackend()
        else:
            from .cuda_backend import CudaBackend
            _instances[name] = CudaBackend()
    return _instances[name]


__all__ = ["BACKENDS", "Backend", "get_backend", "NumpyBackend"]
