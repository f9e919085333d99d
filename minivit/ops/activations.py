"""GELU (both forms) for the MLP of Eq. 3, and tanh for the pre-logits head.

GELU(x) = x·Φ(x). The official JAX model uses the tanh approximation
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
while PyTorch/timm default to the exact form 0.5·x·(1 + erf(x/√2)). They differ by up to
~5e-4, enough to matter when importing weights, so both are offered.
"""
import math

import numpy as np

# The GELU constants, defined once: the Numba and CUDA backends import them from here.
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)     # √(2/π), tanh form
GELU_C = 0.044715                             # the cubic coefficient of the tanh form
INV_SQRT_2 = 1.0 / math.sqrt(2.0)             # erf form: Φ(x) = ½(1 + erf(x/√2))
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # φ(x) = e^{−x²/2}/√(2π)


def erf(x):
    """Error function to double precision, elementwise, in pure NumPy.

    x: any shape. NumPy has no erf, and gradient checks need one accurate to ~1e-15 (the
    backward uses the exact Gaussian density), so this follows CPython's ``math.erf``: a
    power series for |x| < 1.5 and a continued fraction for erfc beyond, both with a
    fixed number of terms so they vectorise. Computed in float64, returned in x's dtype.
    """
    x = np.asarray(x)
    xd = x.astype(np.float64)
    ax = np.abs(xd)
    out = np.empty_like(xd)
    small = ax < 1.5
    if small.any():
        s = xd[small]
        x2 = s * s
        acc = np.zeros_like(s)
        fk = 25 + 0.5
        for _ in range(25):                      # series: erf = 2x e^{-x²}/√π Σ ...
            acc = 2.0 + x2 * acc / fk
            fk -= 1.0
        out[small] = acc * s * np.exp(-x2) / math.sqrt(math.pi)
    big = ~small
    if big.any():
        b = ax[big]
        x2 = b * b
        a, da = 0.0, 0.5
        p, p_last = np.ones_like(b), np.zeros_like(b)
        q, q_last = da + x2, np.ones_like(b)
        for _ in range(50):                      # continued fraction for erfc(|x|)
            a += da
            da += 2.0
            bb = da + x2
            p, p_last = bb * p - a * p_last, p
            q, q_last = bb * q - a * q_last, q
        erfc = np.where(b < 30.0, p / q * b * np.exp(-x2) / math.sqrt(math.pi), 0.0)
        out[big] = np.copysign(1.0 - erfc, xd[big])
    return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out


def gelu_forward(x, approximate="tanh"):
    """x: (...). Returns GELU(x): (...) and the cache. approximate: "tanh" or "erf"."""
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x)
        t = np.tanh(u)
        return 0.5 * x * (1.0 + t), (x, t, "tanh")
    if approximate == "erf":
        cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2))
        return x * cdf, (x, cdf, "erf")
    raise ValueError(f"approximate must be 'tanh' or 'erf', got {approximate!r}")


def gelu_backward(dy, cache):
    """dy: (...). Returns dx: (...).

    erf form:  d/dx [x Φ(x)] = Φ(x) + x φ(x)
    tanh form: 0.5(1 + t) + 0.5 x (1 − t²) √(2/π)(1 + 3·0.044715·x²),  t = tanh(u)
    """
    x, s, form = cache
    if form == "tanh":
        t = s
        du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    pdf = INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return dy * (s + x * pdf)


def tanh_forward(x):
    """x: (...). Returns tanh(x): (...), cache (the output itself)."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, cache):
    """dy: (...). Returns dx = dy · (1 − tanh²(x)): (...)."""
    y = cache
    return dy * (1.0 - y * y)


def relu_forward(x):
    """x: (...). Returns max(x, 0): (...), cache (the output: y > 0 ⇔ x > 0)."""
    y = np.maximum(x, 0)
    return y, y


def relu_backward(dy, cache):
    """dy: (...). Returns dx = dy · [x > 0]: (...) (the subgradient 0 at x = 0, as torch)."""
    return dy * (cache > 0)
