"""Test-time augmentation: average the logits over transformed copies of each image.

``flip``: the image and its horizontal mirror (the training augmentation flips too, so
both are in-distribution): logits = (f(x) + f(flip(x))) / 2. It costs two forward passes.

``flip-shift``: ``flip``'s two copies, plus each of them moved one pixel down-right and one
pixel up-left (the border filled by reflection): six forward passes. Training crops move the
image by up to ``crop_padding`` pixels, so the shifted copies are in-distribution too. The
unshifted pair keeps half the weight, the four shifted copies share the other half
(the weighting of Jordan's airbench "TTA level 2", 2024), so a shift can refine a
prediction but not outvote the image as it is.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

TTA_MODES = ("none", "flip", "flip-shift")


def hflip(images):
    """images: (B, H, W, C) → the horizontal mirror (W axis reversed), same shape."""
    return np.ascontiguousarray(images[:, :, ::-1, :])


def shift(images, dy: int, dx: int):
    """images: (B, H, W, C) → the same shape, content moved dy pixels down and dx right
    (negative: up / left); the uncovered border is the reflection of the image's edge.
    |dy|, |dx| must be smaller than H and W."""
    _, H, W, _ = images.shape
    p = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    return np.ascontiguousarray(padded[:, p - dy:p - dy + H, p - dx:p - dx + W, :])


def predict_logits_tta(model, images, mode="flip"):
    """images: (B, H, W, C) normalised floats → host logits (B, classes), float64, averaged
    over the copies of ``mode`` ("none": the image only; "flip": the image and its
    horizontal mirror; "flip-shift": those two, each also shifted by (+1, +1) and (-1, -1)
    pixels, see the module docstring). Evaluation mode (no dropout)."""
    if mode not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    be = model.be

    def f(x):
        return np.asarray(be.to_host(model.forward(x)), dtype=np.float64)

    logits = f(images)
    if mode == "none":
        return logits
    mirrored = hflip(images)
    logits = 0.5 * (logits + f(mirrored))
    if mode == "flip-shift":
        shifted = sum(f(shift(x, d, d)) for x in (images, mirrored) for d in (1, -1))
        logits = 0.5 * logits + 0.125 * shifted
    return logits
