"""Eq. 1 around the patch projection: prepend the class token, add position embeddings.

    z_0 = [x_class; x_p¹E; …; x_pᴺE] + E_pos,   E_pos ∈ R^{(N+1)×D}

The class token gets a position embedding too. For the 2-D variant (Appendix D.4) E_pos is
built from two learned tables of width D/2, one per axis: the embedding of the patch at
grid cell (r, c) is [row_r ; col_c], and the class token keeps its own D-vector.

Fine-tuning at another resolution keeps P, so the grid changes and the learned E_pos no
longer fits: :func:`resample_pos_embed` interpolates it in 2-D according to the patches'
locations in the image (paper §3.2).
"""
import math

import numpy as np

from ..errors import ConfigError
from .resample import bilinear_resize, interp_matrix


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


def resample_pos_embed(pos, new_grid, old_grid=None, align_corners=False):
    """Resample learned 1-D position embeddings to a new patch grid (paper §3.2).

    pos: (1, 1 + G_h·G_w, D), the class token's embedding first, then the grid in
    row-major order. new_grid: (G_h', G_w'). old_grid: (G_h, G_w); None infers a square
    grid from N. Returns (1, 1 + G_h'·G_w', D): the class token's embedding kept, the grid
    part interpolated bilinearly in 2-D (align_corners=False by default, like timm's
    ``resample_abs_pos_embed``). The same grid is returned unchanged (a copy).
    """
    pos = np.asarray(pos)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ConfigError(f"position embeddings must be (1, 1 + N, D), got shape {pos.shape}")
    N, D = pos.shape[1] - 1, pos.shape[2]
    if old_grid is None:
        g = int(round(math.sqrt(N)))
        if g * g != N:
            raise ConfigError(f"cannot infer a square grid from N={N} patch embeddings; "
                              f"pass old_grid")
        old_grid = (g, g)
    gh, gw = old_grid
    if gh * gw != N:
        raise ConfigError(f"old grid {gh}x{gw} does not hold the N={N} patch embeddings")
    new_grid = tuple(int(v) for v in new_grid)
    if tuple(old_grid) == new_grid:
        return pos.copy()
    grid = pos[0, 1:].reshape(gh, gw, D).astype(np.float64)
    new = bilinear_resize(grid, new_grid, align_corners).reshape(-1, D)
    out = np.concatenate([pos[0, :1].astype(np.float64), new], axis=0)[None]
    return out.astype(pos.dtype)


def resample_pos_embed_2d(row, col, new_grid, align_corners=False):
    """Resample 2-D position embeddings (Appendix D.4): the row table (G_h, D/2) and the
    column table (G_w, D/2) are each interpolated linearly in 1-D, to (G_h', D/2) and
    (G_w', D/2). Returns (row', col')."""
    row, col = np.asarray(row), np.asarray(col)
    Wh = interp_matrix(row.shape[0], int(new_grid[0]), align_corners)
    Ww = interp_matrix(col.shape[0], int(new_grid[1]), align_corners)
    return (Wh @ row.astype(np.float64)).astype(row.dtype), \
        (Ww @ col.astype(np.float64)).astype(col.dtype)


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
