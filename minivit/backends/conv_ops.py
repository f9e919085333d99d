"""The convolutional op sets, by backend name.

The ViT's backends (:mod:`minivit.backends.numpy_ops`, ``numba_cpu``) know only the
transformer's ops; the convolutional models (:mod:`minivit.resnet`, :mod:`minivit.hybrid`)
take conv, batch norm, ReLU and pooling from a second object, ``get_conv_ops(name)``, with
the same ``(out, cache)`` contract: :class:`~minivit.backends.numpy_conv.NumpyConvOps`
(the reference) or :class:`~minivit.backends.numba_conv.NumbaConvOps` (compiled kernels).
"""
from __future__ import annotations

from ..errors import ConfigError
from .numpy_conv import NumpyConvOps

CONV_BACKENDS = ("numpy", "numba")
_instances: dict[str, object] = {}


def get_conv_ops(name="numpy"):
    """The conv op set of backend ``name`` ("numpy" or "numba"); created once, shared.

    Raises ConfigError for any other name (the CUDA backend has no conv kernels yet).
    """
    if not isinstance(name, str):
        name = getattr(name, "name", name)
    if name not in CONV_BACKENDS:
        raise ConfigError(f"convolutional models run on the {' or '.join(CONV_BACKENDS)} "
                          f"backend, not {name!r}")
    if name not in _instances:
        if name == "numpy":
            _instances[name] = NumpyConvOps()
        else:
            from .numba_conv import NumbaConvOps
            _instances[name] = NumbaConvOps()
    return _instances[name]
