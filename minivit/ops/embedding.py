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
    """pos_cls: (1, D); row: (G_h, D/2); col: (G_w, D/2).
    Returns E_pos: (1, 1 + G_h·G_w, D), patches in row-major grid order, and the cache."""
    gh, half = row.shape
    gw = col.shape[0]
    grid = np.concatenate([np.broadcast_to(row[:, None, :], (gh, gw, half)),
                           np.broadcast_to(col[None, :, :], (gh, gw, half))], axis=-1)
    pos = np.concatenate([pos_cls, grid.reshape(gh * gw, 2 * half)], axis=0)
    return pos[None], (gh, gw, half)


def pos2d_backward(dpos, cache):
    """dpos: (1, 1 + G_h·G_w, D). Returns dpos_cls: (1, D), drow: (G_h, D/2), dcol: (G_w, D/2)."""
    gh, gw, half = cache
    d = dpos[0]
    dgrid = d[1:].reshape(gh, gw, 2 * half)
    return d[:1].copy(), dgrid[:, :, :half].sum(axis=1), dgrid[:, :, half:].sum(axis=0)
