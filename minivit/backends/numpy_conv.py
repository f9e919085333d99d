"""The reference convolutional op set: the NumPy ops of :mod:`minivit.ops` (conv, batch
norm, ReLU, pooling) bound as methods, which the Numba op set
(:mod:`minivit.backends.numba_conv`) subclasses and replaces. Get either one with
:func:`minivit.backends.conv_ops.get_conv_ops`.
"""
from __future__ import annotations

from ..ops import activations, batchnorm, conv, pooling

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
