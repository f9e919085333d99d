"""Self-attention: single-head (the lecture's worked example) and multi-head (ViT's MSA).

Single head:  A = softmax(q kᵀ · s),  out = A v.  The lecture's 3-token example is plain
dot-product attention (s = 1); ViT scales by s = 1/√D_h (Vaswani et al.), where D_h is the
width of ONE head — scaling by the model width D is a common re-implementation bug.

Multi-head (paper Appendix A, Eq. 5–8): [q, k, v] = z U_qkv with one fused (D, 3D)
projection; the 3D columns are [q | k | v], each split into H heads of width D_h;
MSA(z) = [SA_1(z); …; SA_H(z)] U_msa.
"""
import math

import numpy as np

from .linear import linear_backward, linear_forward
from .softmax import softmax_backward, softmax_forward


def attention_forward(q, k, v, scale=None):
    """Scaled dot-product attention over the last two axes.

    q, k: (..., N, d_k); v: (..., N, d_v). scale: None or False → no scaling (the worked
    example); True → 1/√d_k; a number → that number. Returns out: (..., N, d_v) and the
    cache, whose ``"A"`` entry is the attention matrix (..., N, N) (rows: queries).
    """
    if scale is None or scale is False:
        s = 1.0
    elif scale is True:
        s = 1.0 / math.sqrt(q.shape[-1])
    else:
        s = float(scale)
    scores = (q @ np.swapaxes(k, -1, -2)) * s       # (..., N_q, N_k): q_i · k_j
    A, _ = softmax_forward(scores)
    out = A @ v
    return out, {"q": q, "k": k, "v": v, "A": A, "scale": s}


def attention_backward(dout, cache):
    """dout: (..., N, d_v). Returns dq: (..., N, d_k), dk: (..., N, d_k), dv: (..., N, d_v).

    out = A v  ⇒  dA = dout vᵀ,  dv = Aᵀ dout;  then softmax backward gives dS, and
    S = s·q kᵀ  ⇒  dq = s·dS k,  dk = s·dSᵀ q.
    """
    q, k, v, A, s = cache["q"], cache["k"], cache["v"], cache["A"], cache["scale"]
    dA = dout @ np.swapaxes(v, -1, -2)
    dv = np.swapaxes(A, -1, -2) @ dout
    dS = softmax_backward(dA, A)
    if s != 1.0:
        dS = dS * s
    dq = dS @ k
    dk = np.swapaxes(dS, -1, -2) @ q
    return dq, dk, dv


def split_heads(qkv, H):
    """qkv: (B, N, 3D) → q, k, v each (B, H, N, D_h). Column order: [q | k | v], heads
    contiguous inside each (the layout of timm's fused qkv and of the official kernels
    (D, H, D_h) concatenated)."""
    B, N, D3 = qkv.shape
    Dh = D3 // (3 * H)
    x = qkv.reshape(B, N, 3, H, Dh).transpose(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]


def merge_heads(x):
    """x: (B, H, N, D_h) → (B, N, H·D_h): the concatenation [SA_1; …; SA_H]."""
    B, H, N, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, N, H * Dh)


def mhsa_core_forward(qkv, H):
    """The attention part of MSA, between the two projections.

    qkv: (B, N, 3D) from the fused projection. Returns out: (B, N, D) (heads concatenated,
    before U_msa) and the cache. Scale 1/√D_h with D_h = D/H.
    """
    q, k, v = split_heads(qkv, H)
    out, cache = attention_forward(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]))
    return merge_heads(out), cache


def mhsa_core_backward(dout, cache):
    """dout: (B, N, D). Returns dqkv: (B, N, 3D) in the fused [q | k | v] layout."""
    B, N, D = dout.shape
    H = cache["q"].shape[1]
    Dh = D // H
    dh = dout.reshape(B, N, H, Dh).transpose(0, 2, 1, 3)
    dq, dk, dv = attention_backward(dh, cache)
    dqkv = np.stack([dq, dk, dv])                    # (3, B, H, N, D_h)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, N, 3 * D)


def mhsa_forward(x, W_qkv, b_qkv, W_o, b_o, H):
    """Multi-head self-attention MSA(x) (paper Eq. 5–8).

    x: (B, N, D); W_qkv: (D, 3D); b_qkv: (3D,); W_o: (D, D); b_o: (D,); H heads.
    Returns y: (B, N, D) and the cache.
    """
    qkv, c1 = linear_forward(x, W_qkv, b_qkv)
    a, c2 = mhsa_core_forward(qkv, H)
    y, c3 = linear_forward(a, W_o, b_o)
    return y, (c1, c2, c3)


def mhsa_backward(dy, cache):
    """dy: (B, N, D). Returns dx: (B, N, D), dW_qkv, db_qkv, dW_o, db_o."""
    c1, c2, c3 = cache
    da, dW_o, db_o = linear_backward(dy, c3)
    dqkv = mhsa_core_backward(da, c2)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, c1)
    return dx, dW_qkv, db_qkv, dW_o, db_o
