"""The convolutional op set (conv, batch norm, ReLU, pooling) bound for a backend.

The ViT's backends (:mod:`minivit.backends.numpy_ops`, ``numba_cpu``) know only the
transformer's ops; convolutional models (:mod:`minivit.resnet`, :mod:`minivit.hybrid`)
take these from a second object, ``get_conv_ops(name)``, with the same ``(out, cache)``
contract. :class:`NumpyConvOps` binds the reference ops of :mod:`minivit.ops`; the Numba
version (:mod:`minivit.backends.numba_conv`) replaces them with compiled kernels.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..ops import activations, batchnorm, conv, pooling

CONV_BACKENDS = ("numpy", "numba")
_instances: dict[str, object] = {}


class NumpyConvOps:
    """Reference conv op set: every method is the NumPy op of the same name."""

    name = "numpy"
    conv2d_forward = staticmethod(conv.conv2d_forward)
    conv2d_backward = staticmethod(conv.conv2d_backward)
    batchnorm_forward = staticmethod(batchnorm.batchnorm_forward)
    batchnorm_backward = staticmethod(batchnorm.batchnorm_backward)
    relu_forward = staticmethod(activations.relu_forward)
    relu_backward = staticmethod(activations.relu_backward)
    maxpool2d_forward = staticmethod(pooling.maxpool2d_forward)
    maxpool2d_backward = staticmethod(pooling.maxpool2d_backward)
    avgpool2d_forward = staticmethod(pooling.avgpool2d_forward)
    avgpool2d_backward = staticmethod(pooling.avgpool2d_backward)
    global_avgpool_forward = staticmethod(pooling.global_avgpool_forward)
    global_avgpool_backward = staticmethod(pooling.global_avgpool_backward)

    def add_relu(self, a, b):
        """ReLU(a + b), a, b: (...): the end of a residual basic block. Returns y, cache."""
        return self.relu_forward(a + b)


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
