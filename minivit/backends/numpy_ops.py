"""The NumPy backend: binds the reference ops in :mod:`minivit.ops` and adds the glue and
optimizer updates the model and the trainer need. Other backends subclass it and replace
what they compute faster; anything they do not replace falls back to this reference.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ops import masked
from .memory import keep_freed_memory


class NumpyBackend:
    """Reference backend. Arrays are host ``numpy.ndarray``s in float32 or float64."""

    name = "numpy"

    def __init__(self):
        # a CPU step frees and re-allocates tens of MB of buffers: keep them in the heap
        # instead of page-faulting them in afresh every step (see memory.py)
        keep_freed_memory()

    # ------------------------------------------------------------------ glue
    def asarray(self, x, dtype=None):
        """Host array → backend array (here: a C-contiguous numpy array of ``dtype``)."""
        return np.ascontiguousarray(x, dtype=dtype)

    def to_host(self, x):
        """Backend array → numpy array (no copy when it already is one)."""
        return np.asarray(x)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def zeros_like(self, x):
        return np.zeros_like(x)

    def copy(self, x):
        return x.copy()

    def add(self, a, b):
        """a + b, same shape: the residual connections of Eq. 2–3."""
        return a + b

    def take_cls(self, z):
        """z: (B, N+1, D) → the class token z[:, 0]: (B, D) (Eq. 4 reads only it)."""
        return np.ascontiguousarray(z[:, 0])

    def take_cls_backward(self, dy, z_shape):
        """dy: (B, D) → dz: (B, N+1, D), zero everywhere but the class token."""
        dz = np.zeros(z_shape, dtype=dy.dtype)
        dz[:, 0] = dy
        return dz

    def take_patch_tokens(self, z):
        """z: (B, N+1, D) → the patch tokens z[:, 1:]: (B, N, D)."""
        return np.ascontiguousarray(z[:, 1:])

    def take_patch_tokens_backward(self, dy, z_shape):
        """dy: (B, N, D) → dz: (B, N+1, D), zero on the class token."""
        dz = np.zeros(z_shape, dtype=dy.dtype)
        dz[:, 1:] = dy
        return dz

    # ------------------------------------------------------------------ ops (reference)
    patches_forward = staticmethod(ops.patches_forward)
    patches_backward = staticmethod(ops.patches_backward)
    linear_forward = staticmethod(ops.linear_forward)
    linear_backward = staticmethod(ops.linear_backward)
    layernorm_forward = staticmethod(ops.layernorm_forward)
    layernorm_backward = staticmethod(ops.layernorm_backward)
    gelu_forward = staticmethod(ops.gelu_forward)
    gelu_backward = staticmethod(ops.gelu_backward)
    tanh_forward = staticmethod(ops.tanh_forward)
    tanh_backward = staticmethod(ops.tanh_backward)
    mhsa_core_forward = staticmethod(ops.mhsa_core_forward)
    mhsa_core_backward = staticmethod(ops.mhsa_core_backward)
    tokens_forward = staticmethod(ops.tokens_forward)
    tokens_backward = staticmethod(ops.tokens_backward)
    pos2d_forward = staticmethod(ops.pos2d_forward)
    pos2d_backward = staticmethod(ops.pos2d_backward)
    softmax_cross_entropy = staticmethod(ops.softmax_cross_entropy)
    corruption_forward = staticmethod(masked.corruption_forward)
    corruption_backward = staticmethod(masked.corruption_backward)
    masked_patch_loss = staticmethod(masked.masked_patch_loss)
    # knobs of the recipe search (issue 15): GAP classifier, dropout / drop path,
    # patch dropout
    pos_add_forward = staticmethod(ops.pos_add_forward)
    pos_add_backward = staticmethod(ops.pos_add_backward)
    mean_tokens_forward = staticmethod(ops.mean_tokens_forward)
    mean_tokens_backward = staticmethod(ops.mean_tokens_backward)
    dropout_forward = staticmethod(ops.dropout_forward)
    dropout_backward = staticmethod(ops.dropout_backward)
    keep_tokens_forward = staticmethod(ops.keep_tokens_forward)
    keep_tokens_backward = staticmethod(ops.keep_tokens_backward)

    def linear_gelu_forward(self, x, W, b, approximate="tanh"):
        """fc1 of the MLP followed by GELU. x: (..., D); W: (D, M); b: (M,).
        Returns GELU(x W + b): (..., M), cache. A backend may fuse bias + GELU."""
        h, c1 = self.linear_forward(x, W, b)
        u, c2 = self.gelu_forward(h, approximate)
        return u, (c1, c2)

    def linear_gelu_backward(self, du, cache, need_dx=True):
        """du: (..., M). Returns dx: (..., D), dW: (D, M), db: (M,)."""
        c1, c2 = cache
        dh = self.gelu_backward(du, c2)
        return self.linear_backward(dh, c1, need_dx)

    def attention_probs(self, cache):
        """The attention matrices kept by ``mhsa_core_forward``: (B, H, N, N) host array."""
        return np.asarray(cache["A"])

    # ------------------------------------------------------------------ optimizer updates
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """AdamW (Loshchilov & Hutter), in place on p, m, v; same arithmetic as torch.

        p, g, m, v: same shape. step: 1-based step count for the bias corrections.
        Decoupled decay: p ← p·(1 − lr·wd), then p ← p − lr·m̂/(√v̂ + eps).
        """
        if weight_decay:
            p *= (1.0 - lr * weight_decay)
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        denom = np.sqrt(v) / math.sqrt(bc2) + eps
        p -= (lr / bc1) * (m / denom)

    def sgd_update(self, p, g, buf, lr, momentum, weight_decay, nesterov=False):
        """SGD with momentum (torch semantics), in place on p and buf.

        d = g + wd·p;  buf ← momentum·buf + d;  p ← p − lr·(d + momentum·buf if nesterov else buf).
        ``buf`` may be None when momentum is 0.
        """
        d = g + weight_decay * p if weight_decay else g
        if momentum:
            buf *= momentum
            buf += d
            d = d + momentum * buf if nesterov else buf
        p -= lr * d

    def ema_update(self, s, p, decay):
        """s ← decay·s + (1 − decay)·p in place: one step of the exponential moving
        average of the weights (:mod:`minivit.ema`). s, p: same shape."""
        s *= decay
        s += (1.0 - decay) * p

    def sum_squares(self, x):
        """Σ x² as a Python float (for the global gradient norm)."""
        x = x.ravel()
        return float(np.dot(x, x))

    def scale_(self, x, s):
        """x ← s·x in place (gradient clipping)."""
        x *= s

    def all_finite(self, x):
        """True when no element of x is NaN or ±inf."""
        return bool(np.isfinite(x).all())
