"""Bilinear resampling of grids and images: the interpolation behind fine-tuning at a
higher resolution (paper §3.2) — position embeddings (:mod:`minivit.ops.embedding`) and
the images themselves.
"""
import numpy as np

from ..errors import ConfigError


def interp_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """Weights of 1-D linear interpolation from n_in samples to n_out: (n_out, n_in).

    align_corners=False (the default of torch's ``F.interpolate`` and of timm's
    ``resample_abs_pos_embed``): samples are cell centres; output i sits at source
    coordinate (i + ½)·n_in/n_out − ½, clamped to [0, n_in − 1] at the borders.
    align_corners=True: the first and last samples coincide; i ↦ i·(n_in − 1)/(n_out − 1).
    Each row sums to 1, so a constant is reproduced exactly.
    """
    if n_in < 1 or n_out < 1:
        raise ConfigError(f"interpolation sizes must be positive, got {n_in} → {n_out}")
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
    else:
        src = (i + 0.5) * n_in / n_out - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = src - lo
    W = np.zeros((n_out, n_in))
    np.add.at(W, (np.arange(n_out), lo), 1.0 - w_hi)
    np.add.at(W, (np.arange(n_out), hi), w_hi)
    return W


def bilinear_resize(grid, new_hw, align_corners=False):
    """2-D bilinear interpolation of a (G_h, G_w, ...) array to (G_h', G_w', ...).

    Bilinear interpolation is separable: interpolate along the rows, then the columns,
    i.e. out = W_h · grid · W_wᵀ with the 1-D matrices of :func:`interp_matrix`.
    """
    g = np.asarray(grid)
    Wh = interp_matrix(g.shape[0], new_hw[0], align_corners)
    Ww = interp_matrix(g.shape[1], new_hw[1], align_corners)
    out = np.tensordot(Wh, g, axes=(1, 0))                  # (G_h', G_w, ...)
    out = np.moveaxis(np.tensordot(Ww, out, axes=(1, 1)), 0, 1)   # (G_h', G_w', ...)
    return out


def resize_images(images, size, align_corners=False):
    """Resize images (B, H, W, C) to (B, size, size, C) bilinearly (for fine-tuning at a
    higher resolution than the data's, e.g. CIFAR's 32 px at 48 px). uint8 in → uint8
    out (rounded); floats stay floats."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ConfigError(f"images must be (B, H, W, C), got shape {x.shape}")
    if x.shape[1] == size and x.shape[2] == size:
        return x
    out = bilinear_resize(np.moveaxis(x.astype(np.float64), 0, 2), (size, size),
                          align_corners)                  # (size, size, B, C)
    out = np.moveaxis(out, 2, 0)
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)
