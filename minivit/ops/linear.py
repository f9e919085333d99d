"""Dense layer y = x W + b (the projection E of Eq. 1, U_qkv, U_msa, the MLP, the head)."""
import numpy as np


def linear_forward(x, W, b=None):
    """x: (..., D_in); W: (D_in, D_out); b: (D_out,) or None. Returns y: (..., D_out), cache."""
    # One 2-D GEMM over all rows: NumPy's stacked (3-D) matmul is markedly slower at
    # these shapes (benchmarks/matmul_choice.py).
    y = (x.reshape(-1, x.shape[-1]) @ W).reshape(*x.shape[:-1], W.shape[1])
    if b is not None:
        y += b
    return y, (x, W, b is not None)


def linear_backward(dy, cache, need_dx=True):
    """dy: (..., D_out). Returns dx: (..., D_in) (None if not need_dx), dW: (D_in, D_out),
    db: (D_out,) (None when the layer has no bias)."""
    x, W, has_b = cache
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dW = x2.T @ dy2                    # sum over every row (batch and token) of xᵀ dy
    db = dy2.sum(axis=0) if has_b else None
    dx = (dy2 @ W.T).reshape(*dy.shape[:-1], W.shape[0]) if need_dx else None
    return dx, dW, db
