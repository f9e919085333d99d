"""Softmax cross-entropy for the classification head, with optional label smoothing."""
import numpy as np

from ..errors import ConfigError


def check_labels(labels, C, what="labels", B=None):
    """Validate (B,) integer class labels for C classes; returns them as a host array.

    The one check every loss and the trainer use (before training starts, so a wrong
    --num-classes fails at once, not mid-epoch). Raises ConfigError naming ``what``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ConfigError(f"integer {what} of shape (B,) expected, got dtype {labels.dtype} "
                          f"shape {labels.shape}")
    if B is not None and labels.shape[0] != B:
        raise ConfigError(f"got {labels.shape[0]} {what} for {B} logits rows")
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise ConfigError(f"{what} must lie in [0, {C - 1}], got range "
                          f"[{labels.min()}, {labels.max()}]")
    return labels


def _targets(labels, C, smoothing, dtype):
    """(B,) int labels or (B, C) soft targets → (B, C) target distribution."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        check_labels(labels, C)
        t = np.zeros((labels.shape[0], C), dtype=dtype)
        t[np.arange(labels.shape[0]), labels] = 1.0
    elif labels.ndim == 2 and labels.shape[1] == C:
        t = labels.astype(dtype, copy=False)
    else:
        raise ConfigError(f"labels must be (B,) ints or (B, {C}) soft targets, "
                          f"got shape {labels.shape}")
    if smoothing:
        # Label smoothing (Szegedy et al.): mix the target with the uniform distribution.
        t = (1.0 - smoothing) * t + smoothing / C
    return t


def cross_entropy_forward(logits, labels, smoothing=0.0):
    """logits: (B, C); labels: (B,) ints or (B, C) soft targets; smoothing ε in [0, 1).

    Returns the mean loss  −(1/B) Σ_b Σ_c t_bc log softmax(logits)_bc  (a Python float),
    and the cache (probabilities and targets).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label smoothing must lie in [0, 1), got {smoothing}")
    B, C = logits.shape
    t = _targets(labels, C, smoothing, logits.dtype)
    z = logits - logits.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsum
    loss = float(-(t * logp).sum() / B)
    return loss, (np.exp(logp), t)


def cross_entropy_backward(dloss, cache):
    """dloss: scalar upstream gradient. Returns dlogits: (B, C) = dloss·(p − t)/B."""
    p, t = cache
    return (p - t) * (dloss / p.shape[0])


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    """Loss and its gradient in one call. logits: (B, C). Returns (loss, dlogits (B, C))."""
    loss, cache = cross_entropy_forward(logits, labels, smoothing)
    return loss, cross_entropy_backward(1.0, cache)
