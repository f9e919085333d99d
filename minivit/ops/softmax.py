"""Numerically stable softmax over the last axis (the attention weights A of §3.1)."""
import numpy as np


def softmax_forward(x):
    """x: (..., N). Returns y = softmax(x) along the last axis: (..., N), cache (y).

    The row maximum is subtracted first: softmax is shift-invariant and exp of a large
    score would overflow.
    """
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dy, cache):
    """dy: (..., N). Returns dx: (..., N).

    The Jacobian of softmax is diag(y) − y yᵀ, so dx = y ⊙ (dy − Σ_j dy_j y_j).
    """
    y = cache
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
