"""Numba kernels for the convolutional op set (the NumPy ops in :mod:`minivit.ops.conv`,
``batchnorm``, ``pooling`` and ReLU are the specification; ``tests/test_conv_ops.py``
checks every kernel against them).

Same policy as :mod:`minivit.backends.numba_cpu`: ``@njit(parallel=True, cache=True)``
(its ``njit``: NumPy's error model) kernels specialised per dtype, safe fastmath flags only
(NaN/inf propagate), and every GEMM issued from Numba's own threads (single-threaded
OpenBLAS calls, :mod:`minivit.backends.threads`), so no second thread pool spins.

* conv2d works on blocks of a few images: a thread writes one block's im2col fields
  (padding is a bounds test, no padded copy) into a buffer that fits its L2 cache and
  multiplies it by the kernel at once. Backward rebuilds the fields rather than keeping
  the whole batch's (75 MB for a CIFAR ResNet's first stage at batch 128); dx is the
  transposed conv for stride 1, and a GEMM plus col2im otherwise. A 1×1 stride-1 conv
  needs no fields at all (x's rows are its fields).
* col2im is written as a *gather*: each input pixel sums the dcols entries of every
  field that covers it, so pixels are independent and blocks need no atomics.
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
from .numba_cpu import _FM, _add_bias, _blas, _c, _chunks, _colsum, _nt, njit
from .threads import HAVE_CBLAS, blas_single_thread
from .numpy_conv import NumpyConvOps


# ====================================================================== im2col / col2im
@njit(fastmath=_FM, cache=True)
def _fields(x, b0, b1, k, s, p, Ho, Wo, cols):
    # im2col of images b0 … b1−1 into rows 0 … of cols (serial: each thread's own block):
    # cols[((b − b0)·H_o + i)·W_o + j, (u·k + v)·C + c] = x[b, i·s − p + u, j·s − p + v, c]
    # (0 outside: padding is a bounds test, no padded copy).
    B, H, W, C = x.shape
    r = 0
    for b in range(b0, b1):
        for oh in range(Ho):
            for ow in range(Wo):
                row = cols[r]
                r += 1
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


@njit(fastmath=_FM, cache=True)
def _unfields(dcols, b0, b1, k, s, p, Ho, Wo, dx):
    # Adjoint of _fields for images b0 … b1−1 (dcols rows 0 … are theirs), in gather form:
    # dx[b, h, w] = Σ over fields (i, j, u, v) with i·s − p + u = h and j·s − p + v = w of
    # dcols[(b, i, j), (u, v)] — each pixel is written once, so blocks need no atomics.
    B, H, W, C = dx.shape
    for b in range(b0, b1):
        rb = (b - b0) * Ho * Wo
        for ih in range(H):
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
                        src = dcols[rb + oh * Wo + t2 // s]
                        base = (u * k + v) * C
                        for c in range(C):
                            out[c] += src[base + c]


@njit(parallel=True, fastmath=_FM, cache=True)
def _im2col(x, k, s, p, Ho, Wo, cols):
    # Whole-batch im2col, an image per iteration (the path without in-pool BLAS).
    HW = Ho * Wo
    for b in prange(x.shape[0]):
        _fields(x, b, b + 1, k, s, p, Ho, Wo, cols[b * HW:(b + 1) * HW])


@njit(parallel=True, fastmath=_FM, cache=True)
def _col2im(dcols, k, s, p, Ho, Wo, dx):
    # Whole-batch col2im, an image per iteration (the path without in-pool BLAS).
    HW = Ho * Wo
    for b in prange(dx.shape[0]):
        _unfields(dcols[b * HW:(b + 1) * HW], b, b + 1, k, s, p, Ho, Wo, dx)


# ====================================================================== conv, BLAS in the pool
# Why blocks of images: im2col of a whole batch is large (cifar ResNet's 16-channel convs:
# 128·32·32 rows × 144 = 75 MB), so writing cols, reading them back for the GEMM, and
# again for dW, ran at memory speed, not at GEMM speed. Here each Numba thread builds the
# fields of a few images at a time (a block that stays in its L2 cache), calls a
# single-threaded sgemm on it at once, and moves on; backward rebuilds them instead of
# keeping 75 MB alive. Only Numba's pool runs (threads.py says why that matters).
@njit(fastmath=_FM, cache=True)
def _block_fields(x, b0, b1, k, s, p, Ho, Wo):
    # The im2col rows of images b0 … b1−1 as a (rows, k²C) matrix: for a 1×1 stride-1
    # conv x's own rows (a view, no copy), otherwise freshly built by _fields.
    C = x.shape[3]
    if k == 1 and s == 1 and p == 0:
        return x[b0:b1].reshape((b1 - b0) * Ho * Wo, C)
    cols = np.empty(((b1 - b0) * Ho * Wo, k * k * C), dtype=x.dtype)
    _fields(x, b0, b1, k, s, p, Ho, Wo, cols)
    return cols


@njit(parallel=True, fastmath=_FM, cache=True)
def _conv_fwd(x, W2, bias, has_bias, k, s, p, Ho, Wo, nb, y, single):
    # y = im2col(x) · W2 (+ bias), blocks of nb images; x: (B, H, W, C), W2: (k²C, F),
    # y: (B·H_o·W_o, F).
    B = x.shape[0]
    KC, F = W2.shape
    HW = Ho * Wo
    yf = y.reshape(-1)
    for t in prange((B + nb - 1) // nb):
        b0 = t * nb
        b1 = min(B, b0 + nb)
        rows = (b1 - b0) * HW
        cols = _block_fields(x, b0, b1, k, s, p, Ho, Wo)
        _blas(single, False, False, rows, F, KC, 1.0, cols.ctypes, KC, W2.ctypes, F,
              yf[b0 * HW * F:].ctypes, F)
        if has_bias:
            for r in range(b0 * HW, b1 * HW):
                yr = y[r]
                for f in range(F):
                    yr[f] += bias[f]


@njit(parallel=True, fastmath=_FM, cache=True)
def _conv_bwd(x, dy, W2, Wt2, k, s, p, nb, nthreads, need_dx, dx, single):
    # dW = Σ_blocks im2col(x)ᵀ · dy (a partial per thread, summed at the end) and, when
    # need_dx, dx per block: for stride 1 the transposed conv — im2col of dy with padding
    # k − 1 − p times Wt2 (the kernel flipped in space, C_in and C_out swapped), a GEMM with
    # the forward's inner size k²·F instead of F; otherwise dcols = dy · W2ᵀ and col2im.
    # x: (B, H, W, C), dy: (B, H_o, W_o, F), W2: (k²C, F), Wt2: (k²F, C), dx: (B, H, W, C).
    B, H, W, C = x.shape
    Ho, Wo, F = dy.shape[1], dy.shape[2], dy.shape[3]
    KC = W2.shape[0]
    HW, HWo = H * W, Ho * Wo
    direct = k == 1 and s == 1 and p == 0
    transposed = s == 1 and p <= k - 1
    nch = (B + nb - 1) // nb
    T = max(1, min(nthreads, nch))
    per = (nch + T - 1) // T
    part = np.zeros((T, KC, F), dtype=x.dtype)
    df = dy.reshape(-1)
    dxf = dx.reshape(-1)
    for t in prange(T):
        tmp = np.empty((KC, F), dtype=x.dtype)
        pt = part[t]
        for ch in range(t * per, min(nch, (t + 1) * per)):
            b0 = ch * nb
            b1 = min(B, b0 + nb)
            rows = (b1 - b0) * HWo
            pd = df[b0 * HWo * F:].ctypes
            cols = _block_fields(x, b0, b1, k, s, p, Ho, Wo)
            _blas(single, True, False, KC, F, rows, 1.0, cols.ctypes, KC, pd, F, tmp.ctypes, F)
            for i in range(KC):
                for f in range(F):
                    pt[i, f] += tmp[i, f]
            if not need_dx:
                continue
            px = dxf[b0 * HW * C:].ctypes
            if direct:
                _blas(single, False, True, rows, C, F, 1.0, pd, F, W2.ctypes, F, px, C)
            elif transposed:
                rx = (b1 - b0) * HW
                dcols = np.empty((rx, k * k * F), dtype=x.dtype)
                _fields(dy, b0, b1, k, 1, k - 1 - p, H, W, dcols)
                _blas(single, False, False, rx, C, k * k * F, 1.0, dcols.ctypes, k * k * F,
                      Wt2.ctypes, C, px, C)
            else:
                dcols = np.empty((rows, KC), dtype=x.dtype)
                _blas(single, False, True, rows, KC, F, 1.0, pd, F, W2.ctypes, F,
                      dcols.ctypes, KC)
                _unfields(dcols, b0, b1, k, s, p, Ho, Wo, dx)
    dW = part[0].copy()
    for t in range(1, T):
        dW += part[t]
    return dW


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

    # Bytes of im2col fields per block of images (see _conv_fwd): about half a core's L2,
    # so a block's fields, its packed copy inside the GEMM and its output rows stay cached.
    block_bytes = 1 << 19

    def _images_per_block(self, B, row_bytes):
        """Images per block for a conv whose fields take row_bytes per image: as many as fit
        in ``block_bytes`` (at least one), then evened out so that every thread gets the
        same number of blocks when there are enough images."""
        T = _nt()
        nb = max(1, min(B, self.block_bytes // max(1, row_bytes)))
        n = -(-B // nb)
        if n % T and B >= T:
            n = min(B, -(-n // T) * T)
        return -(-B // n)

    def conv2d_forward(self, x, W, b=None, stride=1, padding=0):
        """x: (B, H, W, C_in); W: (k, k, C_in, C_out); b: (C_out,) or None →
        y: (B, H_o, W_o, C_out), cache (x itself, not its fields: backward rebuilds them;
        x must not be changed in place before backward, as for every cached activation).

        Blocks of images, each thread building one block's fields and calling a
        single-threaded GEMM on them while they are in its cache (_conv_fwd)."""
        B, _, _, C = x.shape
        k, _, _, F = W.shape
        Ho, Wo = conv_shapes(x.shape, W.shape, stride, padding)
        x = _c(x)
        W2 = _c(W).reshape(k * k * C, F)
        dt = x.dtype
        if not (HAVE_CBLAS and dt == W2.dtype and dt in (np.float32, np.float64)):
            return self._conv2d_forward_numpy_blas(x, W2, b, k, stride, padding, Ho, Wo)
        y = np.empty((B * Ho * Wo, F), dtype=dt)
        nb = self._images_per_block(B, Ho * Wo * k * k * C * dt.itemsize)
        bias = _c(b).astype(dt, copy=False) if b is not None else np.zeros(0, dtype=dt)
        with blas_single_thread():
            _conv_fwd(x, W2, bias, b is not None, k, stride, padding, Ho, Wo, nb, y,
                      dt == np.float32)
        return y.reshape(B, Ho, Wo, F), (x, W2, b is not None, k, stride, padding, True)

    def conv2d_backward(self, dy, cache, need_dx=True):
        """dy: (B, H_o, W_o, C_out) → dx: (B, H, W, C_in) or None, dW: (k, k, C_in, C_out),
        db: (C_out,) or None. Per block of images (_conv_bwd): the fields rebuilt, dW's
        GEMM, and dx as the transposed conv (stride 1) or a GEMM and col2im (stride 2)."""
        if not cache[-1]:
            return self._conv2d_backward_numpy_blas(dy, cache, need_dx)
        x, W2, has_b, k, stride, padding, _ = cache
        B, H, Wd, C = x.shape
        F = W2.shape[1]
        dy = _c(dy)
        dt = x.dtype
        dy2 = dy.reshape(-1, F)
        db = _colsum(dy2, _nt()) if has_b else None
        transposed = stride == 1 and padding <= k - 1
        Wt2 = (np.ascontiguousarray(W2.reshape(k, k, C, F)[::-1, ::-1].transpose(0, 1, 3, 2))
               .reshape(k * k * F, C) if need_dx and transposed else W2)
        row = dy.shape[1] * dy.shape[2] * k * k * C
        if need_dx and transposed:
            row = max(row, H * Wd * k * k * F)
        nb = self._images_per_block(B, row * dt.itemsize)
        dx = np.empty(x.shape if need_dx else (0, 0, 0, 0), dtype=dt)
        with blas_single_thread():
            dW = _conv_bwd(x, dy, W2, Wt2, k, stride, padding, nb, _nt(), need_dx, dx,
                           dt == np.float32)
        return (dx if need_dx else None), dW.reshape(k, k, C, F), db

    # -- the same op with NumPy's ``@`` (BLAS libraries other than OpenBLAS, where the
    #    gemm cannot be called from Numba's threads; see threads.py)
    def _conv2d_forward_numpy_blas(self, x, W2, b, k, stride, padding, Ho, Wo):
        B, _, _, C = x.shape
        F = W2.shape[1]
        if k == 1 and stride == 1 and padding == 0:
            cols = x.reshape(-1, C)                       # a 1×1 conv is a dense layer
        else:
            cols = np.empty((B * Ho * Wo, k * k * C), dtype=x.dtype)
            _im2col(x, k, stride, padding, Ho, Wo, cols)
        y = cols @ W2
        if b is not None:
            _add_bias(y, b)
        return y.reshape(B, Ho, Wo, F), (cols, W2, b is not None, k, stride, padding,
                                         x.shape, False)

    def _conv2d_backward_numpy_blas(self, dy, cache, need_dx):
        cols, W2, has_b, k, stride, padding, xshape, _ = cache
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
