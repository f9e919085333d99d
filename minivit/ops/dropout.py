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


# ---------------------------------------------------------------------- patch dropout
# PatchDropout (Liu et al. 2023, "PatchDropout: Economizing Vision Transformers Using
# Patch Dropout"): a training step keeps a random subset of each image's patch tokens
# after E_pos is added (Eq. 1), so every kept token still carries its position, and the
# encoder runs on K + 1 tokens instead of N + 1. Attention is quadratic and the rest
# linear in the tokens, so a step costs about K/N of a full one; evaluation keeps all N.
def patch_keep_indices(rng, N, K, cls_first=True):
    """The tokens one image keeps. rng: numpy Generator; N: patch tokens; K: how many to
    keep (1 <= K <= N); cls_first: the sequence starts with the class token, which is
    always kept. Returns int64 token positions in ascending order (the kept tokens stay
    in grid order): (K + 1,) starting with 0 when cls_first, else (K,)."""
    keep = np.sort(rng.permutation(N)[:K])
    if cls_first:
        return np.concatenate([[0], keep + 1]).astype(np.int64)
    return keep.astype(np.int64)


def keep_tokens_forward(z, idx):
    """z: (B, T, D) tokens; idx: (B, T') int positions, distinct within a row.
    Returns y: (B, T', D) with y[b, j] = z[b, idx[b, j]], and the cache."""
    y = np.take_along_axis(z, idx[:, :, None], axis=1)
    return y, (idx, z.shape)


def keep_tokens_backward(dy, cache):
    """dy: (B, T', D). Returns dz: (B, T, D): dy scattered back to the kept positions,
    zero for the dropped tokens (they did not reach the loss)."""
    idx, shape = cache
    dz = np.zeros(shape, dtype=dy.dtype)
    np.put_along_axis(dz, idx[:, :, None], dy, axis=1)
    return dz
