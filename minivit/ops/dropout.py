"""Dropout and stochastic depth (drop path): both multiply by a fixed random mask.

    dropout:     y = x ⊙ m,  m_i ∈ {0, 1/(1−p)} drawn per element   (Srivastava et al. 2014)
    drop path:   y = x ⊙ m,  m_b ∈ {0, 1/(1−p)} drawn per sample b  (Huang et al. 2016),
                 applied to a residual branch, so z' = z + m_b·F(z) (Eq. 2–3)

"Inverted" scaling by 1/(1−p) keeps E[y] = x, so evaluation needs no rescaling and simply
skips the mask. The mask is an input of the forward pass (drawn by :func:`dropout_mask` /
:func:`drop_path_mask` from an explicit generator): the same mask gives the same output,
which is what makes finite-difference checks and bit-exact resume possible.
"""
import numpy as np


def dropout_mask(rng, shape, rate, dtype=np.float32):
    """Inverted-dropout multipliers. rng: numpy Generator; shape: that of the activation,
    e.g. (B, N, D); rate: p in [0, 1). Returns m: ``shape`` array of 0 and 1/(1−p)."""
    keep = rng.random(shape, dtype=np.float32) >= np.float32(rate)
    m = keep.astype(dtype)
    m *= np.dtype(dtype).type(1.0 / (1.0 - rate))
    return m


def drop_path_mask(rng, batch, rate, dtype=np.float32):
    """Stochastic-depth multipliers, one per sample: (B, 1, 1) of 0 and 1/(1−p), which
    broadcast over the (B, N, D) output of a residual branch."""
    return dropout_mask(rng, (batch, 1, 1), rate, dtype)


def dropout_forward(x, mask):
    """x: (B, N, D) (any shape); mask: same shape, or (B, 1, 1) for drop path.
    Returns y = x ⊙ mask and the cache (the mask)."""
    return x * mask, mask


def dropout_backward(dy, cache):
    """dy: like y. Returns dx = dy ⊙ mask (∂y/∂x is the diagonal mask)."""
    return dy * cache
