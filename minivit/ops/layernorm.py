"""LayerNorm over the last axis (used before MSA and MLP in Eq. 2–3 and in Eq. 4)."""
import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-6):
    """x: (..., D); gamma, beta: (D,). Returns y = γ·(x−μ)/√(σ²+ε) + β: (..., D), cache."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layernorm_backward(dy, cache):
    """dy: (..., D). Returns dx: (..., D), dgamma: (D,), dbeta: (D,).

    With x̂ = (x − μ)·r and g = dy·γ, differentiating through μ and r = (σ²+ε)^{-1/2}:
        dx = r · (g − mean(g) − x̂ · mean(g · x̂))     (means over the D features)
    """
    xhat, rstd, gamma = cache
    D = xhat.shape[-1]
    dy2 = dy.reshape(-1, D)
    dgamma = (dy2 * xhat.reshape(-1, D)).sum(axis=0)
    dbeta = dy2.sum(axis=0)
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta
