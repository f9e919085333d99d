"""Test-time augmentation: average the logits over transformed copies of each image.

``flip``: the image and its horizontal mirror (the training augmentation flips too, so
both are in-distribution): logits = (f(x) + f(flip(x))) / 2. It costs two forward passes.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

TTA_MODES = ("none", "flip")


def hflip(images):
    """images: (B, H, W, C) → the horizontal mirror (W axis reversed), same shape."""
    return np.ascontiguousarray(images[:, :, ::-1, :])


def predict_logits_tta(model, images, mode="flip"):
    """images: (B, H, W, C) normalised floats → host logits (B, classes) averaged over
    the copies of ``mode`` ("flip": the image and its horizontal flip; "none": the image
    only). Evaluation mode (no dropout)."""
    if mode not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    be = model.be
    logits = np.asarray(be.to_host(model.forward(images)), dtype=np.float64)
    if mode == "flip":
        flipped = np.asarray(be.to_host(model.forward(hflip(images))), dtype=np.float64)
        logits = 0.5 * (logits + flipped)
    return logits
