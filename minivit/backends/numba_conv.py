"""Numba kernels for the convolutional op set (the NumPy ops in :mod:`minivit.ops.conv`,
``batchnorm``, ``pooling`` and ReLU are the specification; ``tests/test_conv_ops.py``
checks every kernel against them).

Same policy as :mod:`minivit.backends.numba_cpu`: ``@njit(parallel=True, cache=True)``
(its ``njit``: NumPy's error model) kernels specialised per dtype, safe fastmath flags only (NaN/inf propagate), and the big
products — the conv's cols·W and its two backward GEMMs — are NumPy ``@`` on 2-D views,
one OpenBLAS sgemm each, never called from inside a ``prange`` body.

* im2col writes each receptive field row straight from the unpadded input (padding is a
  bounds test, no padded copy); a 1×1 stride-1 conv needs no cols at all (a reshape).
* col2im is written as a *gather*: each input row (b, h) sums the dcols entries of every
  field that covers it, so rows are independent and the loop parallelises without atomics.
* batch norm: statistics as per-thread float64 partials (two passes: mean, then the
  centred variance, as the reference), then one normalise pass that also stores x̂;
  backward reduces dγ, dβ the same way and forms dx in one pass.
* ReLU, the residual add + ReLU, pooling and global average pooling: one pass each.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..ops.batchnorm import check_batch, update_running_stats
from ..ops.conv import conv_output_size, conv_shapes
from .numba_cpu import _FM, _add_bias, _c, _chunks, _colsum, _nt, njit
from .numpy_conv import NumpyConvOps


# ====================================================================== im2col / col2im
@njit(parallel=True, fastmath=_FM, cache=True)
def _im2col(x, k, s, p, Ho, Wo, cols):
    # cols[(b·H_o + i)·W_o + j, (u·k + v)·C + c] = x[b, i·s − p + u, j·s − p + v, c] (0 outside)
    B, H, W, C = x.shape
    for bo in prange(B * Ho):
        b = bo // Ho
        oh = bo - b * Ho
        for ow in range(Wo):
            row = cols[bo * Wo + ow]
            for u in range(k):
                ih = oh * s - p + u
                for v in range(k):
                    iw = ow * s - p + v
                    base = (u * k + v) * C
                    if ih >= 0 and ih < H and iw >= 0 and iw < W:
                        src = x[b, ih, iw]
                        for c in range(C):
                            row[base + c] = src[c]
                    else:
                        for c in range(C):
                            row[base + c] = 0.0


@njit(parallel=True, fastmath=_FM, cache=True)
def _col2im(dcols, k, s, p, Ho, Wo, dx):
    # Gather form of the adjoint: dx[b, h, w] = Σ over fields (i, j, u, v) with
    # i·s − p + u = h and j·s − p + v = w of dcols[(b, i, j), (u, v)].
    B, H, W, C = dx.shape
    for bh in prange(B * H):
        b = bh // H
        ih = bh - b * H
        for iw in range(W):
            out = dx[b, ih, iw]
            for c in range(C):
                out[c] = 0.0
        for u in range(k):
            t = ih + p - u
            if t < 0 or t % s != 0 or t // s >= Ho:
                continue
            oh = t // s
            for iw in range(W):
                out = dx[b, ih, iw]
                for v in range(k):
                    t2 = iw + p - v
                    if t2 < 0 or t2 % s != 0 or t2 // s >= Wo:
                        continue
                    src = dcols[(b * Ho + oh) * Wo + t2 // s]
                    base = (u * k + v) * C
                    for c in range(C):
                        out[c] += src[base + c]


# ====================================================================== batch norm
@njit(parallel=True, fastmath=_FM, cache=True)
def _bn_stats(x, nthreads):
    # x: (R, C) → mean, biased variance (float64), two passes with per-thread partials.
    R, C = x.shape
    T, ch = _chunks(R, nthreads)
    mu = _colsum(x, nthreads).astype(np.float64) / R
    part2 = np.zeros((T, C))
    for t in prange(T):
        pt = part2[t]
        for r in range(t * ch, min(R, (t + 1) * ch)):
            xr = x[r]
            for c in range(C):
                d = xr[c] - mu[c]
                pt[c] += d * d
    var = np.zeros(C)
    for t in range(T):
        for c in range(C):
            var[c] += part2[t, c]
    var /= R
    return mu, var


@njit(parallel=True, fastmath=_FM, cache=True)
def _bn_apply(x, mu, rstd, gamma, beta, xhat, y):
    # x̂ = (x − μ)·r (kept for backward), y = γ x̂ + β; rows in parallel.
    R, C = x.shape
    for r in prange(R):
        xr = x[r]
        hr = xhat[r]
        yr = y[r]
        for c in range(C):
            h = (xr[c] - mu[c]) * rstd[c]
            hr[c] = h
            yr[c] = h * gamma[c] + beta[c]


@njit(parallel=True, fastmath=_FM, cache=True)
def _bn_bwd_sums(dy, xhat, nthreads):
    # dγ = Σ dy·x̂, dβ = Σ dy over the R rows (float64 per-thread partials).
    R, C = dy.shape
    T, ch = _chunks(R, nthreads)
    pg = np.zeros((T, C))
    pb = np.zeros((T, C))
    for t in prange(T):
        g = pg[t]
        bb = pb[t]
        for r in range(t * ch, min(R, (t + 1) * ch)):
            dr = dy[r]
            hr = xhat[r]
            for c in range(C):
                g[c] += dr[c] * hr[c]
                bb[c] += dr[c]
    dg = np.zeros(C)
    db = np.zeros(C)
    for t in range(T):
        for c in range(C):
            dg[c] += pg[t, c]
            db[c] += pb[t, c]
    return dg, db


@njit(parallel=True, fastmath=_FM, cache=True)
def _bn_bwd_dx(dy, xhat, a, m1, m2, dx):
    # dx = a·(dy − m1 − x̂·m2) per channel: a = γ·r; train: m1 = dβ/R, m2 = dγ/R; eval: 0.
    R, C = dy.shape
    for r in prange(R):
        dr = dy[r]
        hr = xhat[r]
        xr = dx[r]
        for c in range(C):
            xr[c] = a[c] * (dr[c] - m1[c] - hr[c] * m2[c])


# ====================================================================== ReLU
@njit(parallel=True, fastmath=_FM, cache=True)
def _relu(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0.0 else (v if v != v else 0.0)    # NaN propagates, as np.maximum


@njit(parallel=True, fastmath=_FM, cache=True)
def _add_relu(a, b, y):
    # y = ReLU(a + b): the residual sum and the block's last ReLU in one pass.
    for i in prange(a.size):
        v = a[i] + b[i]
        y[i] = v if v > 0.0 else (v if v != v else 0.0)


@njit(parallel=True, fastmath=_FM, cache=True)
def _relu_bwd(dy, y, dx):
    for i in prange(dy.size):
        dx[i] = dy[i] if y[i] > 0.0 else 0.0


# ====================================================================== pooling
@njit(parallel=True, fastmath=_FM, cache=True)
def _maxpool_fwd(x, k, s, Ho, Wo, y, arg):
    # Max of each window and its flat index u·k + v (the first maximum, as the reference).
    B, H, W, C = x.shape
    for bo in prange(B * Ho):
        b = bo // Ho
        oh = bo - b * Ho
        for ow in range(Wo):
            yr = y[b, oh, ow]
            ar = arg[b, oh, ow]
            src = x[b, oh * s, ow * s]
            for c in range(C):
                yr[c] = src[c]
                ar[c] = 0
            for u in range(k):
                for v in range(k):
                    if u == 0 and v == 0:
                        continue
                    src = x[b, oh * s + u, ow * s + v]
                    for c in range(C):
                        if src[c] > yr[c]:
                            yr[c] = src[c]
                            ar[c] = u * k + v


@njit(parallel=True, fastmath=_FM, cache=True)
def _maxpool_bwd(dy, arg, k, s, dx):
    # Scatter each window's gradient to its argmax; one image per thread (no races).
    B, Ho, Wo, C = dy.shape
    for b in prange(B):
        dx[b] = 0.0
        for oh in range(Ho):
            for ow in range(Wo):
                for c in range(C):
                    a = arg[b, oh, ow, c]
                    dx[b, oh * s + a // k, ow * s + a % k, c] += dy[b, oh, ow, c]


@njit(parallel=True, fastmath=_FM, cache=True)
def _avgpool_fwd(x, k, s, Ho, Wo, y):
    B, H, W, C = x.shape
    inv = 1.0 / (k * k)
    for bo in prange(B * Ho):
        b = bo // Ho
        oh = bo - b * Ho
        for ow in range(Wo):
            yr = y[b, oh, ow]
            for c in range(C):
                yr[c] = 0.0
            for u in range(k):
                for v in range(k):
                    src = x[b, oh * s + u, ow * s + v]
                    for c in range(C):
                        yr[c] += src[c]
            for c in range(C):
                yr[c] *= inv


@njit(parallel=True, fastmath=_FM, cache=True)
def _avgpool_bwd(dy, k, s, dx):
    B, Ho, Wo, C = dy.shape
    inv = 1.0 / (k * k)
    for b in prange(B):
        dx[b] = 0.0
        for oh in range(Ho):
            for ow in range(Wo):
                g = dy[b, oh, ow]
                for u in range(k):
                    for v in range(k):
                        o = dx[b, oh * s + u, ow * s + v]
                        for c in range(C):
                            o[c] += g[c] * inv


@njit(parallel=True, fastmath=_FM, cache=True)
def _gap_fwd(x, y):
    # x: (B, HW, C) → y: (B, C) means.
    B, N, C = x.shape
    for b in prange(B):
        yr = y[b]
        for c in range(C):
            yr[c] = 0.0
        for n in range(N):
            xr = x[b, n]
            for c in range(C):
                yr[c] += xr[c]
        for c in range(C):
            yr[c] /= N


@njit(parallel=True, fastmath=_FM, cache=True)
def _gap_bwd(dy, dx):
    B, N, C = dx.shape
    for b in prange(B):
        for n in range(N):
            o = dx[b, n]
            for c in range(C):
                o[c] = dy[b, c] / N


# ====================================================================== the op set
class NumbaConvOps(NumpyConvOps):
    """The conv op set on Numba kernels; same signatures and semantics as
    :class:`~minivit.backends.numpy_conv.NumpyConvOps` (caches are its own)."""

    name = "numba"

    def conv2d_forward(self, x, W, b=None, stride=1, padding=0):
        """x: (B, H, W, C_in); W: (k, k, C_in, C_out); b: (C_out,) or None →
        y: (B, H_o, W_o, C_out), cache. im2col kernel, then one BLAS GEMM."""
        B, _, _, C = x.shape
        k, _, _, F = W.shape
        Ho, Wo = conv_shapes(x.shape, W.shape, stride, padding)
        x = _c(x)
        if k == 1 and stride == 1 and padding == 0:
            cols = x.reshape(-1, C)                       # a 1×1 conv is a dense layer
        else:
            cols = np.empty((B * Ho * Wo, k * k * C), dtype=x.dtype)
            _im2col(x, k, stride, padding, Ho, Wo, cols)
        W2 = _c(W).reshape(k * k * C, F)
        y = cols @ W2
        if b is not None:
            _add_bias(y, b)
        return y.reshape(B, Ho, Wo, F), (cols, W2, b is not None, x.shape, k, stride, padding)

    def conv2d_backward(self, dy, cache, need_dx=True):
        """dy: (B, H_o, W_o, C_out) → dx: (B, H, W, C_in) or None, dW: (k, k, C_in, C_out),
        db: (C_out,) or None. Two BLAS GEMMs and the col2im gather kernel."""
        cols, W2, has_b, xshape, k, stride, padding = cache
        F = W2.shape[1]
        B, Ho, Wo, _ = dy.shape
        dy2 = _c(dy).reshape(-1, F)
        dW = (cols.T @ dy2).reshape(k, k, xshape[3], F)
        db = _colsum(dy2, _nt()) if has_b else None
        if not need_dx:
            return None, dW, db
        dcols = dy2 @ W2.T
        if k == 1 and stride == 1 and padding == 0:
            return dcols.reshape(xshape), dW, db
        dx = np.empty(xshape, dtype=dy.dtype)
        _col2im(dcols, k, stride, padding, Ho, Wo, dx)
        return dx, dW, db

    def batchnorm_forward(self, x, gamma, beta, running_mean=None, running_var=None,
                          train=True, momentum=0.1, eps=1e-5):
        """x: (..., C); gamma, beta, running stats: (C,) → y: (..., C), cache. Train mode
        updates the running statistics in place (torch conventions, see the reference)."""
        C = x.shape[-1]
        x2 = _c(x).reshape(-1, C)
        check_batch(x.shape, train, running_mean)
        if train:
            mu, var = _bn_stats(x2, _nt())
            update_running_stats(running_mean, running_var, mu, var, x2.shape[0], momentum)
        else:
            mu, var = running_mean, running_var
        dt = x.dtype
        rstd = (1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)).astype(dt)
        xhat = np.empty_like(x2)
        y = np.empty_like(x2)
        _bn_apply(x2, np.asarray(mu, dtype=dt), rstd, _c(gamma).astype(dt, copy=False),
                  _c(beta).astype(dt, copy=False), xhat, y)
        return y.reshape(x.shape), (xhat, rstd, gamma, train)

    def batchnorm_backward(self, dy, cache):
        """dy: (..., C) → dx: (..., C), dgamma: (C,), dbeta: (C,)."""
        xhat, rstd, gamma, train = cache
        C = xhat.shape[1]
        R = xhat.shape[0]
        dt = xhat.dtype
        dy2 = _c(dy).reshape(-1, C)
        dg, db = _bn_bwd_sums(dy2, xhat, _nt())
        a = (gamma * rstd).astype(dt)
        if train:
            m1, m2 = (db / R).astype(dt), (dg / R).astype(dt)
        else:
            m1 = m2 = np.zeros(C, dtype=dt)
        dx = np.empty_like(dy2)
        _bn_bwd_dx(dy2, xhat, a, m1, m2, dx)
        return dx.reshape(dy.shape), dg.astype(dt), db.astype(dt)

    def relu_forward(self, x):
        """x: (...) → max(x, 0): (...), cache (the output)."""
        x = _c(x)
        y = np.empty_like(x)
        _relu(x.reshape(-1), y.reshape(-1))
        return y, y

    def relu_backward(self, dy, cache):
        """dy: (...) → dx = dy·[y > 0]: (...)."""
        dy = _c(dy)
        dx = np.empty_like(dy)
        _relu_bwd(dy.reshape(-1), cache.reshape(-1), dx.reshape(-1))
        return dx

    def add_relu(self, a, b):
        """ReLU(a + b), a, b: (...) → y: (...), cache (y), fused in one pass."""
        a, b = _c(a), _c(b)
        y = np.empty_like(a)
        _add_relu(a.reshape(-1), b.reshape(-1), y.reshape(-1))
        return y, y

    def maxpool2d_forward(self, x, k=2, stride=None):
        """x: (B, H, W, C) → y: (B, H_o, W_o, C), cache (argmax per window)."""
        stride = k if stride is None else stride
        B, H, W, C = x.shape
        Ho, Wo = conv_output_size(H, k, stride), conv_output_size(W, k, stride)
        y = np.empty((B, Ho, Wo, C), dtype=x.dtype)
        arg = np.empty((B, Ho, Wo, C), dtype=np.int32)
        _maxpool_fwd(_c(x), k, stride, Ho, Wo, y, arg)
        return y, (arg, x.shape, k, stride)

    def maxpool2d_backward(self, dy, cache):
        """dy: (B, H_o, W_o, C) → dx: (B, H, W, C)."""
        arg, xshape, k, stride = cache
        dx = np.empty(xshape, dtype=dy.dtype)
        _maxpool_bwd(_c(dy), arg, k, stride, dx)
        return dx

    def avgpool2d_forward(self, x, k=2, stride=None):
        """x: (B, H, W, C) → y: (B, H_o, W_o, C) window means, cache."""
        stride = k if stride is None else stride
        B, H, W, C = x.shape
        Ho, Wo = conv_output_size(H, k, stride), conv_output_size(W, k, stride)
        y = np.empty((B, Ho, Wo, C), dtype=x.dtype)
        _avgpool_fwd(_c(x), k, stride, Ho, Wo, y)
        return y, (x.shape, k, stride)

    def avgpool2d_backward(self, dy, cache):
        """dy: (B, H_o, W_o, C) → dx: (B, H, W, C)."""
        xshape, k, stride = cache
        dx = np.empty(xshape, dtype=dy.dtype)
        _avgpool_bwd(_c(dy), k, stride, dx)
        return dx

    def global_avgpool_forward(self, x):
        """x: (B, H, W, C) → y: (B, C), cache (the input shape)."""
        B, H, W, C = x.shape
        y = np.empty((B, C), dtype=x.dtype)
        _gap_fwd(_c(x).reshape(B, H * W, C), y)
        return y, x.shape

    def global_avgpool_backward(self, dy, cache):
        """dy: (B, C) → dx: (B, H, W, C) = dy/(H·W) everywhere."""
        B, H, W, C = cache
        dx = np.empty((B, H * W, C), dtype=dy.dtype)
        _gap_bwd(_c(dy), dx)
        return dx.reshape(cache)
