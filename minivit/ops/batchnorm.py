"""Batch normalisation (Ioffe & Szegedy 2015, Alg. 1) over every axis but the channels.

x: (B, H, W, C) or any (..., C). In training mode each channel is normalised with the
statistics of the batch (mean μ_B and biased variance σ²_B over B·H·W values):

    x̂ = (x − μ_B) / √(σ²_B + ε),    y = γ·x̂ + β

and the running statistics used at inference are updated in place, with torch's
conventions (momentum m, unbiased variance):

    running_mean ← (1 − m)·running_mean + m·μ_B
    running_var  ← (1 − m)·running_var  + m·σ²_B · R/(R − 1),   R = B·H·W

In eval mode y = γ·(x − running_mean)/√(running_var + ε) + β, a fixed affine map.
"""
import numpy as np

from ..errors import ConfigError


def check_batch(shape, train, running_mean):
    """Raise ConfigError when x of this shape cannot be normalised in this mode."""
    R = 1
    for s in shape[:-1]:
        R *= s
    if train and R < 2:
        raise ConfigError("batch norm in training mode needs more than one value per "
                          f"channel, got input shape {tuple(shape)}")
    if not train and running_mean is None:
        raise ConfigError("batch norm in eval mode needs running statistics")


def update_running_stats(running_mean, running_var, mu, var, R, momentum):
    """In place: running ← (1 − m)·running + m·batch, the variance unbiased (× R/(R−1)).
    Nothing to do when running_mean is None (statistics not tracked)."""
    if running_mean is None:
        return
    running_mean *= 1.0 - momentum
    running_mean += momentum * mu
    running_var *= 1.0 - momentum
    running_var += momentum * var * (R / (R - 1))


def batchnorm_forward(x, gamma, beta, running_mean=None, running_var=None, train=True,
                      momentum=0.1, eps=1e-5):
    """x: (..., C); gamma, beta, running_mean, running_var: (C,).

    Returns y: (..., C) and the cache. train=True normalises with batch statistics and
    updates running_mean/running_var in place (when given); train=False uses them.
    """
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    R = x2.shape[0]
    check_batch(x.shape, train, running_mean)
    if train:
        mu = x2.mean(axis=0)
        xc = x2 - mu
        var = (xc * xc).mean(axis=0)
        update_running_stats(running_mean, running_var, mu, var, R, momentum)
    else:
        xc = x2 - running_mean
        var = running_var
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    xhat = xc * rstd
    y = xhat * gamma + beta
    return y.reshape(x.shape), (xhat, rstd, gamma, train)


def batchnorm_backward(dy, cache):
    """dy: (..., C). Returns dx: (..., C), dgamma: (C,), dbeta: (C,).

    Train mode: μ_B and σ²_B depend on every x, so as for LayerNorm (means now over the
    R = B·H·W rows, g = dy·γ):
        dx = r · (g − mean(g) − x̂ · mean(g · x̂)),   r = (σ²_B + ε)^{-1/2}
    Eval mode: the statistics are constants, dx = dy·γ·r.
    """
    xhat, rstd, gamma, train = cache
    C = xhat.shape[-1]
    dy2 = dy.reshape(-1, C)
    dgamma = (dy2 * xhat).sum(axis=0)
    dbeta = dy2.sum(axis=0)
    R = dy2.shape[0]
    if train:
        # mean(g) = γ·dβ/R and mean(g·x̂) = γ·dγ/R: reuse the parameter gradients.
        dx = (gamma * rstd) * (dy2 - dbeta / R - xhat * (dgamma / R))
    else:
        dx = dy2 * (gamma * rstd)
    return dx.reshape(dy.shape), dgamma, dbeta
