"""Global average pooling over the tokens (the ``gap`` classifier, paper Appendix D.3).

    y = (1/N) Σ_n LN(z_L)_n

With ``classifier="gap"`` there is no class token: the official code (vit_jax
``models_vit.py`` and big_vision ``vit.py``) applies the final LayerNorm to every token
and then averages them, and the head reads that mean.
"""
import numpy as np


def mean_tokens_forward(z):
    """z: (B, N, D) → y: (B, D), the mean over the N tokens, and the cache (N)."""
    return z.mean(axis=1), z.shape


def mean_tokens_backward(dy, cache):
    """dy: (B, D) → dz: (B, N, D) = dy / N broadcast to every token."""
    B, N, D = cache
    dz = np.empty((B, N, D), dtype=dy.dtype)
    dz[...] = (dy / dy.dtype.type(N))[:, None, :]
    return dz
