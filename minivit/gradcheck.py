"""Gradient checking by centred finite differences (cs231n style).

In float64, a correct backward pass agrees with finite differences to a relative error
below ~1e-7; errors around 1e-2 mean a bug.
"""
from __future__ import annotations

import numpy as np


def rel_error(a, b, eps=1e-12):
    """Relative error max |a − b| / max(|a| + |b|, eps) over all elements (a scalar)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), eps)))


def rel_error_norm(a, b, eps=1e-30):
    """‖a − b‖ / max(‖a‖ + ‖b‖, eps): one number for a whole tensor, robust to entries
    that are zero in exact arithmetic."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), eps))


def numerical_gradient(f, x, dout=None, h=1e-5, indices=None):
    """Centred finite-difference gradient of ⟨dout, f(x)⟩ with respect to x.

    f: callable taking no arguments (it reads x, which is perturbed in place) and returning
    an array (or a scalar). x: array (float64 for meaningful results). dout: upstream
    gradient of f's output shape (None for a scalar f). indices: optional iterable of
    flat indices to check (default: all). Returns grad: same shape as x (zeros where not
    checked).
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    idx = range(flat.size) if indices is None else indices
    for i in idx:
        old = flat[i]
        flat[i] = old + h
        fp = np.asarray(f(), dtype=np.float64)
        flat[i] = old - h
        fm = np.asarray(f(), dtype=np.float64)
        flat[i] = old
        diff = fp - fm
        gflat[i] = (diff * dout).sum() / (2 * h) if dout is not None else diff.sum() / (2 * h)
    return grad


def check_gradient(f, x, analytic, dout=None, h=1e-5, num_checks=None, seed=0):
    """Compare an analytic gradient with finite differences on (a sample of) x.

    Returns the relative error over the checked entries (see :func:`rel_error_norm`).
    num_checks: check this many random entries instead of all.
    """
    rng = np.random.default_rng(seed)
    if num_checks is None or num_checks >= x.size:
        idx = np.arange(x.size)
    else:
        idx = rng.choice(x.size, size=num_checks, replace=False)
    num = numerical_gradient(f, x, dout, h, idx)
    return rel_error_norm(np.asarray(analytic).reshape(-1)[idx], num.reshape(-1)[idx])
