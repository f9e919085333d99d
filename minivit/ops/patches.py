"""Image → patches (paper §3.1: x ∈ R^{H×W×C} → x_p ∈ R^{N×(P²·C)}) and its adjoint.

Patches are P × P windows taken every S pixels (S = P: the paper's non-overlapping
patches; S < P: the lecture's overlapping patches). A patch is flattened in (h, w, c)
order, the same order as the official checkpoint's HWIO embedding kernel reshaped to
(P·P·C, D), so imported weights line up without a permutation.
"""
import numpy as np

from ..errors import ConfigError


def patch_grid(H, W, P, S=None):
    """Number of patches along each axis: returns (G_h, G_w), N = G_h · G_w.

    Raises ConfigError naming the numbers when P > H or W, or (H − P) is not a multiple
    of S (then the last patch would hang over the border).
    """
    S = P if S is None else S
    if P < 1 or S < 1:
        raise ConfigError(f"patch size P={P} and stride S={S} must be positive")
    if P > H or P > W:
        raise ConfigError(f"patch size P={P} is larger than the image ({H}x{W})")
    for name, n in (("H", H), ("W", W)):
        if (n - P) % S != 0:
            raise ConfigError(f"({name} - P) = ({n} - {P}) = {n - P} is not divisible "
                              f"by the stride S={S}")
    return (H - P) // S + 1, (W - P) // S + 1


def patches_forward(images, P, S=None):
    """Cut images into flattened patches.

    images: (B, H, W, C). Returns patches: (B, N, P·P·C) with N = G_h·G_w in row-major
    grid order, each patch flattened in (h, w, c) order; and the cache for backward.
    """
    S = P if S is None else S
    B, H, W, C = images.shape
    gh, gw = patch_grid(H, W, P, S)
    if S == P:
        # Non-overlapping: a pure reshape/transpose, no data is duplicated.
        x = images[:, :gh * P, :gw * P, :].reshape(B, gh, P, gw, P, C)
        patches = x.transpose(0, 1, 3, 2, 4, 5).reshape(B, gh * gw, P * P * C)
    else:
        # Overlapping: a strided view (B, G_h, G_w, C, P, P), then (h, w, c) order.
        win = np.lib.stride_tricks.sliding_window_view(images, (P, P), axis=(1, 2))
        win = win[:, ::S, ::S]
        patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(B, gh * gw, P * P * C)
    return np.ascontiguousarray(patches), (images.shape, P, S)


def patches_backward(dpatches, cache):
    """Adjoint of patch extraction: scatter-add every patch gradient back to its pixels.

    dpatches: (B, N, P·P·C). Returns dimages: (B, H, W, C). Where patches overlap
    (S < P) a pixel belongs to several patches and its gradient is the sum.
    """
    shape, P, S = cache
    B, H, W, C = shape
    gh, gw = patch_grid(H, W, P, S)
    d = dpatches.reshape(B, gh, gw, P, P, C)
    dimages = np.zeros(shape, dtype=dpatches.dtype)
    # One vectorised add per offset (i, j) inside the patch: P² adds instead of N.
    for i in range(P):
        for j in range(P):
            dimages[:, i:i + S * (gh - 1) + 1:S, j:j + S * (gw - 1) + 1:S, :] += d[:, :, :, i, j, :]
    return dimages
