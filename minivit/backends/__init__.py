"""Backends: the same ops, computed by NumPy (the reference), Numba (CPU JIT) or
numba.cuda (GPU).

The model never does arithmetic on arrays itself; it calls a backend object, so one model
file drives every backend. A backend provides every method of
:class:`~minivit.backends.numpy_ops.NumpyBackend` (the reference and the specification):
the op pairs ``*_forward`` / ``*_backward``, the optimizer updates, and a little glue
(``asarray``, ``to_host``, ``zeros``, ``add``, …).
"""
from __future__ import annotations

from ..errors import ConfigError
from .numpy_ops import NumpyBackend

BACKENDS = ("numpy", "numba", "cuda")
_instances: dict[str, object] = {}


def get_backend(name="numpy"):
    """Return the backend called ``name`` ("numpy", "numba" or "cuda"), or pass a backend
    object through unchanged. Backends are created once and shared."""
    if not isinstance(name, str):
        return name
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
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


__all__ = ["BACKENDS", "get_backend", "NumpyBackend"]
