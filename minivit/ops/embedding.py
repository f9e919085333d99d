"""Eq. 1 around the patch projection: prepend the class token, add position embeddings.

    z_0 = [x_class; x_p¹E; …; x_pᴺE] + E_pos,   E_pos ∈ R^{(N+1)×D}

The class token gets a position embedding too. For the 2-D variant (Appendix D.4) E_pos is
built from two learned tables of width D/2, one per axis: the embedding of the patch at
grid cell (r, c) is [row_r ; col_c], and the class token keeps its own D-vector.
"""
import numpy as np


def tokens_forward(e, cls, pos=None):
    """e: (B, N, D) patch embeddings; cls: (1, 1, D); pos: (1, N+1, D) or None.
    Returns z0: (B, N+1, D) and the cache."""
    B, N, D = e.shape
    z = np.empty((B, N + 1, D), dtype=e.dtype)
    z[:, 0] = cls[0, 0]
    z[:, 1:] = e
    if pos is not None:
        z += pos
    return z, (pos is not None)


def tokens_backward(dz, cache):
    """dz: (B, N+1, D). Returns de: (B, N, D), dcls: (1, 1, D), dpos: (1, N+1, D) or None."""
    has_pos = cache
    de = dz[:, 1:]
    dcls = dz[:, :1].sum(axis=0, keepdims=True)
    dpos = dz.sum(axis=0, keepdims=True) if has_pos else None
    return np.ascontiguousarray(de), dcls, dpos


def pos2d_forward(pos_cls, row, col):
    """pos_cls: (1, D), or None without a class token (GAP); row: (G_h, D/2);
    col: (G_w, D/2). Returns E_pos: (1, 1 + G_h·G_w, D) ((1, G_h·G_w, D) without
    pos_cls), patches in row-major grid order, and the cache."""
    gh, half = row.shape
    gw = col.shape[0]
    grid = np.concatenate([np.broadcast_to(row[:, None, :], (gh, gw, half)),
                           np.broadcast_to(col[None, :, :], (gh, gw, half))], axis=-1)
    pos = grid.reshape(gh * gw, 2 * half)
    if pos_cls is not None:
        pos = np.concatenate([pos_cls, pos], axis=0)
    return np.ascontiguousarray(pos[None]), (gh, gw, half, pos_cls is not None)


def pos2d_backward(dpos, cache):
    """dpos: (1, [1 +] G_h·G_w, D). Returns dpos_cls: (1, D) (None without a class
    token), drow: (G_h, D/2), dcol: (G_w, D/2)."""
    gh, gw, half, has_cls = cache
    d = dpos[0]
    dgrid = d[int(has_cls):].reshape(gh, gw, 2 * half)
    return (d[:1].copy() if has_cls else None), dgrid[:, :, :half].sum(axis=1), \
        dgrid[:, :, half:].sum(axis=0)


def sincos2d_pos_embed(gh, gw, D, temperature=10000.0):
    """Fixed 2-D sine-cosine position embeddings (no parameters), as big_vision's
    ``posemb_sincos_2d`` ("Better plain ViT baselines", Beyer et al. 2022).

    For the patch at grid row y, column x and frequencies ω_k = T^(−k/(D/4 − 1)),
    k = 0 … D/4 − 1: [sin(x ω), cos(x ω), sin(y ω), cos(y ω)] (each D/4 wide).
    gh, gw: grid rows and columns; D: width, divisible by 4 and >= 8.
    Returns E_pos: (G_h·G_w, D) float64, patches in row-major grid order.
    """
    q = D // 4
    omega = 1.0 / temperature ** (np.arange(q) / (q - 1))
    y, x = np.mgrid[:gh, :gw]
    y = y.reshape(-1, 1) * omega                   # (N, D/4)
    x = x.reshape(-1, 1) * omega
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


def pos_add_forward(e, pos=None):
    """The GAP variant of Eq. 1 (no class token): z_0 = x_pE + E_pos.
    e: (B, N, D); pos: (1, N, D) or None. Returns z0: (B, N, D) and the cache."""
    z = e.copy() if pos is None else e + pos
    return z, (pos is not None)


def pos_add_backward(dz, cache):
    """dz: (B, N, D). Returns de: (B, N, D), dpos: (1, N, D) (None without pos)."""
    return dz, (dz.sum(axis=0, keepdims=True) if cache else None)
