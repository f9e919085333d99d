"""The Numba CPU backend: the reference ops of :mod:`minivit.ops`, fused and compiled.

Every kernel is ``@njit(cache=True)`` (a second run loads the machine code from
``__pycache__`` instead of recompiling) and is specialised by Numba per dtype, so float32
(training) and float64 (gradient checks) share one source. The NumPy ops remain the
specification; ``tests/test_numba_backend.py`` compares every op against them.

What is fused, and why (the big matmuls are memory-bound-free already; everything between
them is memory traffic):

* attention: per (batch, head), S = s·q kᵀ and A·v are two BLAS gemms that read q, k, v
  straight out of the fused qkv through strides (no split/merge transposes, no copies) and
  write S into the kept attention matrix and the head's output into its columns of
  (B, N, D); the row softmax runs in place in between. Backward: four strided gemms
  (dv, dA, dq, dk) and the softmax Jacobian, dq/dk/dv written into dqkv in place.
  (Hand-written 4-row register-blocked loops remain as the path when NumPy's BLAS is not
  OpenBLAS; ``benchmarks/ab_kernels.py --which attn`` compares the two.)
* LayerNorm forward/backward: one pass per row; dγ, dβ reduced in per-thread partials.
* fc1 bias + GELU (tanh or erf) in the gemm's epilogue, per block of rows right after its
  gemm; every linear layer's bias likewise; backward fuses GELU' with db.
* softmax + cross-entropy, AdamW / SGD updates in place, patch extraction and its adjoint.

Floating point: every kernel is compiled with NumPy's error model (see :func:`njit`: a
division by zero gives inf/nan instead of raising, so dividing loops vectorise), and
``fastmath`` is restricted to the *safe* flags (``reassoc``, ``contract``, ``arcp``:
reductions may be reordered and FMAs formed) — never ``nnan``/``ninf``, so NaN and inf
propagate exactly as in NumPy and ``all_finite`` stays truthful. In float32 the
exp of softmax and of GELU (tanh form, computed as x·σ(2u)) is a vectorisable Cephes-style
polynomial accurate to ~1 ulp (libm calls do not vectorise without SVML); float64 uses libm.

Matmuls and threads: one thread pool only — Numba's. Every gemm (x·W, dW = xᵀ·dy,
dx = dy·Wᵀ, and attention's per-head products) is a call to NumPy's own OpenBLAS
``cblas_?gemm`` made from inside a Numba ``prange`` region, one block of rows per call,
with OpenBLAS set to one thread for the duration (``threads.blas_single_thread``). When
OpenBLAS's pool and Numba's took turns instead, OpenBLAS's idle workers busy-waited on the
cores Numba's threads needed unless ``OPENBLAS_THREAD_TIMEOUT`` had been set before NumPy
was imported — so the speed depended on import order; now it does not
(``benchmarks/ab_kernels.py --which pool``). Thread count: ``threads.set_threads(n)`` (Numba and
BLAS together; the CLI's ``--threads``). Without OpenBLAS (MKL, Accelerate) the gemms fall
back to NumPy ``@`` (``NumbaBackend.blas_in_pool = False``).
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # only matters on the NumPy-@ fallback path

import numba
import numpy as np
from numba import prange

from .. import ops
from ..ops.activations import GELU_C as _GC
from ..ops.activations import INV_SQRT_2 as _INV_SQRT_2
from ..ops.activations import INV_SQRT_2PI as _INV_SQRT_2PI
from ..ops.activations import SQRT_2_OVER_PI as _SQRT_2_OVER_PI
from ..ops.losses import _targets
from .numpy_ops import NumpyBackend
from .threads import DGEMM, HAVE_CBLAS, NO_TRANS, ROW_MAJOR, SGEMM, TRANS, blas_single_thread

# reassociation + FMA contraction + reciprocal: safe for our reductions; NaN/inf semantics
# are kept (no nnan/ninf).
_FM = {"reassoc", "contract", "arcp"}
_F32 = np.float32          # float32 constants inside kernels (no promotion to float64)


def njit(*args, **kwargs):
    """``numba.njit`` with ``error_model="numpy"``: a float division by zero gives inf or
    nan, as in NumPy (the reference), instead of raising ZeroDivisionError. Numba's default
    check is a branch in every division, and it keeps LLVM from vectorising any loop that
    divides — GELU's σ(2u) ran 5× slower per element for it, AdamW's update likewise."""
    return numba.njit(*args, error_model="numpy", **kwargs)


# ====================================================================== scalar helpers
@njit(fastmath=_FM, cache=True)
def _exp_row(s, n, ibuf, fast):
    # s[:n] ← exp(s[:n]) for s ≤ 0 (softmax after max-subtraction). fast (float32 s only):
    # Cephes expf (range reduction x = k·ln2 + r, degree-6 polynomial, 2^k built from its
    # bits) — vectorises, unlike a libm call; ~1 ulp. Every constant is a float32 (_F32):
    # a bare Python float would promote the whole polynomial to float64 and halve the
    # vector width (measured 8.5× slower on (8320, 65) rows). ibuf: int32 scratch (≥ n).
    if fast:
        for j in range(n):
            x = max(s[j], _F32(-87.0))
            k = np.floor(x * _F32(1.44269504088896341) + _F32(0.5))
            r = x - k * _F32(0.693359375) + k * _F32(2.12194440e-4)
            p = _F32(1.9875691500e-4)
            p = p * r + _F32(1.3981999507e-3)
            p = p * r + _F32(8.3334519073e-3)
            p = p * r + _F32(4.1665795894e-2)
            p = p * r + _F32(1.6666665459e-1)
            p = p * r + _F32(5.0000001201e-1)
            s[j] = p * r * r + r + _F32(1.0)
            ibuf[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
        f = ibuf.view(np.float32)
        for j in range(n):
            s[j] *= f[j]
    else:
        for j in range(n):
            s[j] = math.exp(s[j])


# ====================================================================== small GEMMs
@njit(fastmath=_FM, cache=True)
def _gemm(a, b, c):
    # c = a @ b for small C-contiguous blocks inside one attention head: 4 rows of c share
    # every load of a row of b (the inner j loop vectorises), all in L1.
    M, K = a.shape
    N = b.shape[1]
    i = 0
    while i + 4 <= M:
        c0 = c[i]
        c1 = c[i + 1]
        c2 = c[i + 2]
        c3 = c[i + 3]
        for j in range(N):
            c0[j] = 0.0
            c1[j] = 0.0
            c2[j] = 0.0
            c3[j] = 0.0
        for k in range(K):
            a0 = a[i, k]
            a1 = a[i + 1, k]
            a2 = a[i + 2, k]
            a3 = a[i + 3, k]
            bk = b[k]
            for j in range(N):
                bkj = bk[j]
                c0[j] += a0 * bkj
                c1[j] += a1 * bkj
                c2[j] += a2 * bkj
                c3[j] += a3 * bkj
        i += 4
    while i < M:
        ci = c[i]
        for j in range(N):
            ci[j] = 0.0
        for k in range(K):
            a0 = a[i, k]
            bk = b[k]
            for j in range(N):
                ci[j] += a0 * bk[j]
        i += 1


# ====================================================================== attention
@njit(fastmath=_FM, cache=True)
def _softmax_rows(S, ibuf, fast):
    # Row softmax of the scores S: (N, N) in place (max-subtracted, Eq. 5 of Vaswani et al.).
    N = S.shape[1]
    for i in range(S.shape[0]):
        s = S[i]
        m = s[0]
        for j in range(1, N):
            m = max(m, s[j])
        for j in range(N):
            s[j] -= m
        _exp_row(s, N, ibuf, fast)
        t = 0.0
        for j in range(N):
            t += s[j]
        r = 1.0 / t
        for j in range(N):
            s[j] *= r


@njit(fastmath=_FM, cache=True)
def _softmax_bwd_rows(A, dS):
    # Softmax Jacobian per row, in place: dS ← A ⊙ (dA − rowsum(dA ⊙ A)), dS holding dA.
    N = A.shape[1]
    for i in range(A.shape[0]):
        a = A[i]
        ds = dS[i]
        t = 0.0
        for j in range(N):
            t += ds[j] * a[j]
        for j in range(N):
            ds[j] = a[j] * (ds[j] - t)


@njit(parallel=True, fastmath=_FM, cache=True)
def _attn_fwd(qkv, H, scale, out, A, fast):
    # Fused MSA core per (b, h): gather q·s, kᵀ, v from the fused qkv (no head transposes),
    # S = q kᵀ, row softmax, A v — all in L1/L2 scratch, one write of A and of out.
    B, N, D3 = qkv.shape
    D = D3 // 3
    Dh = D // H
    for bh in prange(B * H):
        b = bh // H
        h = bh - b * H
        c0 = h * Dh
        q = np.empty((N, Dh), dtype=qkv.dtype)
        kT = np.empty((Dh, N), dtype=qkv.dtype)
        v = np.empty((N, Dh), dtype=qkv.dtype)
        o = np.empty((N, Dh), dtype=qkv.dtype)
        ibuf = np.empty(N, dtype=np.int32)
        for i in range(N):
            row = qkv[b, i]
            for d in range(Dh):
                q[i, d] = row[c0 + d] * scale
                kT[d, i] = row[D + c0 + d]
                v[i, d] = row[2 * D + c0 + d]
        S = A[b, h]
        _gemm(q, kT, S)
        _softmax_rows(S, ibuf, fast)
        _gemm(S, v, o)
        for i in range(N):
            orow = out[b, i]
            for d in range(Dh):
                orow[c0 + d] = o[i, d]


@njit(parallel=True, fastmath=_FM, cache=True)
def _attn_bwd(dout, qkv, A, H, scale, dqkv):
    # Fused MSA-core backward per (b, h): dA = dO vᵀ, dv = Aᵀ dO, softmax backward,
    # dq = s·dS k, dk = s·dSᵀ q — scratch stays in cache; dq, dk, dv land in dqkv directly.
    B, N, D3 = qkv.shape
    D = D3 // 3
    Dh = D // H
    for bh in prange(B * H):
        b = bh // H
        h = bh - b * H
        c0 = h * Dh
        dt = qkv.dtype
        q = np.empty((N, Dh), dtype=dt)
        k = np.empty((N, Dh), dtype=dt)
        vT = np.empty((Dh, N), dtype=dt)
        dO = np.empty((N, Dh), dtype=dt)
        AT = np.empty((N, N), dtype=dt)
        dS = np.empty((N, N), dtype=dt)
        res = np.empty((N, Dh), dtype=dt)
        for i in range(N):
            row = qkv[b, i]
            drow = dout[b, i]
            for d in range(Dh):
                q[i, d] = row[c0 + d] * scale
                k[i, d] = row[D + c0 + d] * scale
                vT[d, i] = row[2 * D + c0 + d]
                dO[i, d] = drow[c0 + d]
        Abh = A[b, h]
        for i in range(N):
            for j in range(N):
                AT[j, i] = Abh[i, j]
        # dv = Aᵀ dO
        _gemm(AT, dO, res)
        for i in range(N):
            g = dqkv[b, i]
            for d in range(Dh):
                g[2 * D + c0 + d] = res[i, d]
        # dA = dO vᵀ, then dS = A ⊙ (dA − rowsum(dA ⊙ A))  (softmax Jacobian)
        _gemm(dO, vT, dS)
        _softmax_bwd_rows(Abh, dS)
        # dq = s·dS k  (s folded into k)
        _gemm(dS, k, res)
        for i in range(N):
            g = dqkv[b, i]
            for d in range(Dh):
                g[c0 + d] = res[i, d]
        # dk = s·dSᵀ q  (s folded into q); reuse AT for dSᵀ
        for i in range(N):
            for j in range(N):
                AT[j, i] = dS[i, j]
        _gemm(AT, q, res)
        for i in range(N):
            g = dqkv[b, i]
            for d in range(Dh):
                g[D + c0 + d] = res[i, d]


# ====================================================================== big GEMMs
@njit(cache=True)
def _blas(single, ta, tb, M, N, K, alpha, pa, lda, pb, ldb, pc, ldc):
    # One single-threaded cblas gemm, C = alpha·op(A)·op(B), row-major, on raw pointers
    # (strided sub-matrices of bigger arrays: ld* are their row strides in elements).
    if single:
        SGEMM(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, M, N, K,
              np.float32(alpha), pa, lda, pb, ldb, np.float32(0.0), pc, ldc)
    else:
        DGEMM(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, M, N, K,
              alpha, pa, lda, pb, ldb, 0.0, pc, ldc)


@njit(parallel=True, cache=True)
def _mm(a, b, c, ta, tb, nthreads, mode, bias, u, erf_form, single, epi_rows):
    # c = op(a) @ op(b) (op = transpose when ta / tb), every BLAS call made by Numba's own
    # threads: rows of c are split into blocks, one single-threaded cblas gemm per block
    # (see threads.py for why no second thread pool may run). The epilogue runs on each
    # block right after its gemm, while it is still in cache: mode 1: c += bias;
    # mode 2 (fc1): c += bias (kept as the pre-activation) and u = GELU(c).
    # single: float32 (sgemm, and the fast float32 exp in GELU), else float64 (dgemm).
    M, N = c.shape
    K = a.shape[0] if ta else a.shape[1]
    lda = a.shape[1]
    ldb = b.shape[1]
    # blocks: one per thread, or ~epi_rows rows when an epilogue wants its rows still in
    # cache (each gemm call re-packs op(b), so blocks must not be too small either)
    nb = max(1, min(M, nthreads))
    if mode != 0 and epi_rows > 0:
        nb = max(nb, (M + epi_rows - 1) // epi_rows)
        # a whole number of blocks per thread: 5 blocks on 2 threads leave one thread
        # idle for a fifth of the gemm (cifar10-tiny's 4,160 rows did exactly that)
        nb = min(M, (nb + nthreads - 1) // nthreads * nthreads)
    ch = (M + nb - 1) // nb
    nb = (M + ch - 1) // ch
    af = a.reshape(-1)
    cf = c.reshape(-1)
    for t in prange(nb):
        r0 = t * ch
        r1 = min(M, r0 + ch)
        # block of op(a): rows r0.. of a, or columns r0.. of a when transposed
        pa = af[r0:].ctypes if ta else af[r0 * lda:].ctypes
        pc = cf[r0 * N:].ctypes
        _blas(single, ta, tb, r1 - r0, N, K, 1.0, pa, lda, b.ctypes, ldb, pc, N)
        if mode == 1:
            for r in range(r0, r1):
                cr = c[r]
                for j in range(N):
                    cr[j] += bias[j]
        elif mode == 2:
            e = np.empty(N, dtype=c.dtype)
            ibuf = np.empty(N, dtype=np.int32)
            for r in range(r0, r1):
                _gelu_row(c[r], bias, u[r], e, e, e, ibuf, erf_form, single, False)


@njit(parallel=True, fastmath=_FM, cache=True)
def _attn_fwd_blas(qkv, H, scale, out, A, single):
    # MSA core per (b, h) with the two products as BLAS gemms called from this Numba
    # thread, read and written in place through strides (q, k, v are column blocks of the
    # fused qkv rows, the head's output a column block of out — no gathers, no copies):
    # S = s·q kᵀ into A[b, h], row softmax in place, out_h = A v.
    B, N, D3 = qkv.shape
    D = D3 // 3
    Dh = D // H
    qf = qkv.reshape(-1)
    of = out.reshape(-1)
    Af = A.reshape(-1)
    for bh in prange(B * H):
        b = bh // H
        h = bh - b * H
        base = b * N * D3 + h * Dh
        pA = Af[bh * N * N:].ctypes
        _blas(single, False, True, N, N, Dh, scale, qf[base:].ctypes, D3,
              qf[base + D:].ctypes, D3, pA, N)
        ibuf = np.empty(N, dtype=np.int32)
        _softmax_rows(A[b, h], ibuf, single)
        _blas(single, False, False, N, Dh, N, 1.0, pA, N, qf[base + 2 * D:].ctypes, D3,
              of[b * N * D + h * Dh:].ctypes, D)


@njit(parallel=True, fastmath=_FM, cache=True)
def _attn_bwd_blas(dout, qkv, A, H, scale, dqkv, single):
    # Backward of _attn_fwd_blas per (b, h), four gemms in place through strides:
    # dv = Aᵀ dO, dA = dO vᵀ, dS = A ⊙ (dA − rowsum(dA ⊙ A)) (softmax Jacobian),
    # dq = s·dS k, dk = s·dSᵀ q; dq, dk, dv land in their columns of dqkv.
    B, N, D3 = qkv.shape
    D = D3 // 3
    Dh = D // H
    qf = qkv.reshape(-1)
    gf = dqkv.reshape(-1)
    df = dout.reshape(-1)
    Af = A.reshape(-1)
    for bh in prange(B * H):
        b = bh // H
        h = bh - b * H
        base = b * N * D3 + h * Dh
        pA = Af[bh * N * N:].ctypes
        pdO = df[b * N * D + h * Dh:].ctypes
        dS = np.empty((N, N), dtype=qkv.dtype)
        _blas(single, True, False, N, Dh, N, 1.0, pA, N, pdO, D,
              gf[base + 2 * D:].ctypes, D3)                                  # dv
        _blas(single, False, True, N, N, Dh, 1.0, pdO, D, qf[base + 2 * D:].ctypes, D3,
              dS.ctypes, N)                                                  # dA
        _softmax_bwd_rows(A[b, h], dS)
        _blas(single, False, False, N, Dh, N, scale, dS.ctypes, N, qf[base + D:].ctypes, D3,
              gf[base:].ctypes, D3)                                          # dq
        _blas(single, True, False, N, Dh, N, scale, dS.ctypes, N, qf[base:].ctypes, D3,
              gf[base + D:].ctypes, D3)                                      # dk


# ====================================================================== reductions
@njit(cache=True)
def _chunks(R, nthreads):
    # Row chunking for per-thread partial reductions: (number of chunks, rows per chunk).
    T = max(1, min(nthreads, R))
    return T, (R + T - 1) // T


@njit(parallel=True, fastmath=_FM, cache=True)
def _colsum(x, nthreads):
    # Σ over rows of x: (R, C) → (C,), float64 per-thread partials (bias gradients, dpos).
    R, C = x.shape
    T, ch = _chunks(R, nthreads)
    part = np.zeros((T, C))
    for t in prange(T):
        p = part[t]
        for r in range(t * ch, min(R, (t + 1) * ch)):
            xr = x[r]
            for c in range(C):
                p[c] += xr[c]
    out = np.empty(C, dtype=x.dtype)
    for c in range(C):
        s = 0.0
        for t in range(T):
            s += part[t, c]
        out[c] = s
    return out


# ====================================================================== elementwise
@njit(parallel=True, fastmath=_FM, cache=True)
def _add(a, b, out):
    # out = a + b (flat): the residual connections, one parallel pass.
    for i in prange(a.size):
        out[i] = a[i] + b[i]


@njit(parallel=True, fastmath=_FM, cache=True)
def _add_bias(y, b):
    # y[r, :] += b in place: the bias epilogue of a BLAS matmul.
    R, C = y.shape
    for r in prange(R):
        yr = y[r]
        for c in range(C):
            yr[c] += b[c]


@njit(fastmath=_FM, cache=True)
def _typed(buf, value):
    # value as a scalar of buf's dtype (buf: scratch, element 0 is overwritten). A bare
    # Python float in a float32 kernel promotes the arithmetic around it to float64 and
    # halves the vector width; np.float32 constants would cost float64 rows precision.
    buf[0] = value
    return buf[0]


@njit(fastmath=_FM, cache=True)
def _gelu_row(h, b, u, dh, du, e, ibuf, erf_form, fast, backward):
    # One row of fc1's epilogue. tanh form via 0.5(1 + tanh u) = σ(2u), with σ from one
    # exp(−2|u|) ≤ 1 per element (vectorised _exp_row: accurate even where 1 + tanh u
    # cancels). Forward: h ← h + b (kept), u = GELU(h). Backward: dh = du·GELU'(h).
    M = h.shape[0]
    if M == 0:
        return
    if erf_form:
        for c in range(M):
            x = h[c]
            if backward:
                dh[c] = du[c] * (0.5 * (1.0 + math.erf(x * _INV_SQRT_2))
                                 + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x))
            else:
                x = x + b[c]
                h[c] = x
                u[c] = x * (0.5 * (1.0 + math.erf(x * _INV_SQRT_2)))
        return
    # every constant in the row's dtype (see _typed); e is overwritten just below
    one = _typed(e, 1.0)
    gc = _typed(e, _GC)
    gc3 = _typed(e, 3.0 * _GC)
    k2 = _typed(e, 2.0 * _SQRT_2_OVER_PI)
    for c in range(M):
        x = h[c] if backward else h[c] + b[c]
        if not backward:
            h[c] = x
        z = k2 * (x + gc * x * x * x)
        e[c] = -abs(z)
    _exp_row(e, M, ibuf, fast)
    for c in range(M):
        x = h[c]
        z = x + gc * x * x * x
        ec = e[c]
        sig = (one if z >= 0 else ec) / (one + ec)          # σ(2u)
        if backward:
            dz = k2 * (one + gc3 * x * x)
            dh[c] = du[c] * (sig + x * sig * (one - sig) * dz)
        else:
            u[c] = x * sig


@njit(parallel=True, fastmath=_FM, cache=True)
def _bias_gelu_fwd(h, b, u, erf_form, fast, nthreads):
    # fc1 epilogue: h ← h + b (kept for backward), u = GELU(h); one pass over (R, M).
    R, M = h.shape
    T, ch = _chunks(R, nthreads)
    for t in prange(T):
        e = np.empty(M, dtype=h.dtype)
        ibuf = np.empty(M, dtype=np.int32)
        for r in range(t * ch, min(R, (t + 1) * ch)):
            _gelu_row(h[r], b, u[r], e, e, e, ibuf, erf_form, fast, False)


@njit(parallel=True, fastmath=_FM, cache=True)
def _gelu_bwd_db(du, h, dh, erf_form, fast, has_db, nthreads):
    # GELU' (recomputed from the pre-activation, nothing else stored) fused with db = Σ dh.
    R, M = h.shape
    T, ch = _chunks(R, nthreads)
    part = np.zeros((T, M))
    for t in prange(T):
        e = np.empty(M, dtype=h.dtype)
        ibuf = np.empty(M, dtype=np.int32)
        p = part[t]
        for r in range(t * ch, min(R, (t + 1) * ch)):
            dhr = dh[r]
            _gelu_row(h[r], h[r], e, dhr, du[r], e, ibuf, erf_form, fast, True)
            if has_db:
                for c in range(M):
                    p[c] += dhr[c]
    db = np.empty(M, dtype=h.dtype)
    for c in range(M):
        s = 0.0
        for t in range(T):
            s += part[t, c]
        db[c] = s
    return db


@njit(parallel=True, fastmath=_FM, cache=True)
def _tanh_fwd(x, y):
    # y = tanh(x), flat (pre-logits head; small, libm for exactness).
    for i in prange(x.size):
        y[i] = math.tanh(x[i])


@njit(parallel=True, fastmath=_FM, cache=True)
def _tanh_bwd(dy, y, dx):
    # dx = dy·(1 − y²), flat.
    for i in prange(y.size):
        dx[i] = dy[i] * (1.0 - y[i] * y[i])


# ====================================================================== LayerNorm
@njit(parallel=True, fastmath=_FM, cache=True)
def _ln_fwd(x, gamma, beta, eps, y, mu, rstd):
    # One pass per row: mean, variance (float64 accumulators), normalise, affine.
    R, D = x.shape
    for r in prange(R):
        xr = x[r]
        s = 0.0
        for d in range(D):
            s += xr[d]
        m = s / D
        v = 0.0
        for d in range(D):
            t = xr[d] - m
            v += t * t
        rs = 1.0 / math.sqrt(v / D + eps)
        yr = y[r]
        for d in range(D):
            yr[d] = (xr[d] - m) * rs * gamma[d] + beta[d]
        mu[r] = m
        rstd[r] = rs


@njit(parallel=True, fastmath=_FM, cache=True)
def _ln_bwd(dy, x, mu, rstd, gamma, dx, nthreads):
    # Per row: x̂ recomputed from x, μ, r; dx = r(g − mean g − x̂ mean(g x̂)), g = dy γ;
    # dγ = Σ dy x̂ and dβ = Σ dy in per-thread float64 partials (one pass over dy and x).
    R, D = x.shape
    T, ch = _chunks(R, nthreads)
    pg = np.zeros((T, D))
    pb = np.zeros((T, D))
    for t in prange(T):
        pgt = pg[t]
        pbt = pb[t]
        for r in range(t * ch, min(R, (t + 1) * ch)):
            xr = x[r]
            dyr = dy[r]
            m = mu[r]
            rs = rstd[r]
            sg = 0.0
            sgx = 0.0
            for d in range(D):
                xh = (xr[d] - m) * rs
                g = dyr[d] * gamma[d]
                sg += g
                sgx += g * xh
                pgt[d] += dyr[d] * xh
                pbt[d] += dyr[d]
            sg /= D
            sgx /= D
            dxr = dx[r]
            for d in range(D):
                xh = (xr[d] - m) * rs
                dxr[d] = rs * (dyr[d] * gamma[d] - sg - xh * sgx)
    dgamma = np.empty(D, dtype=x.dtype)
    dbeta = np.empty(D, dtype=x.dtype)
    for d in range(D):
        a = 0.0
        c = 0.0
        for t in range(T):
            a += pg[t, d]
            c += pb[t, d]
        dgamma[d] = a
        dbeta[d] = c
    return dgamma, dbeta


# ====================================================================== embedding glue
@njit(parallel=True, cache=True)
def _patches_fwd(img, P, S, gh, gw, out):
    # Gather every P×P window (stride S) into a row in (h, w, c) order; parallel over B.
    B, H, W, C = img.shape
    for b in prange(B):
        for gi in range(gh):
            for gj in range(gw):
                row = out[b, gi * gw + gj]
                for i in range(P):
                    for j in range(P):
                        src = img[b, gi * S + i, gj * S + j]
                        base = (i * P + j) * C
                        for c in range(C):
                            row[base + c] = src[c]


@njit(parallel=True, cache=True)
def _patches_bwd(dp, P, S, gh, gw, dimg):
    # Adjoint: scatter-add each patch row back to its pixels (overlaps sum); parallel
    # over B, so no two threads touch the same pixel.
    B, H, W, C = dimg.shape
    for b in prange(B):
        dimg[b] = 0.0
        for gi in range(gh):
            for gj in range(gw):
                row = dp[b, gi * gw + gj]
                for i in range(P):
                    for j in range(P):
                        dst = dimg[b, gi * S + i, gj * S + j]
                        base = (i * P + j) * C
                        for c in range(C):
                            dst[c] += row[base + c]


@njit(parallel=True, fastmath=_FM, cache=True)
def _tokens_fwd(e, cls, pos, has_pos, z):
    # z[b] = [cls; e[b]] + pos in one write (Eq. 1).
    B, N, D = e.shape
    for b in prange(B):
        for d in range(D):
            z[b, 0, d] = cls[d] + (pos[0, d] if has_pos else 0.0)
        for n in range(N):
            for d in range(D):
                z[b, n + 1, d] = e[b, n, d] + (pos[n + 1, d] if has_pos else 0.0)


@njit(parallel=True, cache=True)
def _copy_tokens(dz, de):
    # de = dz[:, 1:] (contiguous copy), parallel over B.
    B, N, D = de.shape
    for b in prange(B):
        for n in range(N):
            for d in range(D):
                de[b, n, d] = dz[b, n + 1, d]


# ====================================================================== loss
@njit(parallel=True, fastmath=_FM, cache=True)
def _softmax_xent(logits, t, dlogits):
    # Row softmax, −Σ t log p and dlogits = (p − t)/B in one pass per row.
    B, C = logits.shape
    losses = np.zeros(B)
    for b in prange(B):
        lr = logits[b]
        m = lr[0]
        for c in range(1, C):
            m = max(m, lr[c])
        s = 0.0
        for c in range(C):
            s += math.exp(lr[c] - m)
        ls = math.log(s)
        acc = 0.0
        for c in range(C):
            logp = (lr[c] - m) - ls
            acc -= t[b, c] * logp
            dlogits[b, c] = (math.exp(logp) - t[b, c]) / B
        losses[b] = acc
    total = 0.0
    for b in range(B):
        total += losses[b]
    return total / B


# ====================================================================== optimizer
@njit(parallel=True, fastmath=_FM, cache=True)
def _adamw(p, g, m, v, lr, beta1, beta2, eps, wd, bc1, sbc2):
    # AdamW in place, flat, one pass over p, g, m, v (decoupled decay first, as torch).
    decay = 1.0 - lr * wd
    step = lr / bc1
    for i in prange(p.size):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step * (mi / (math.sqrt(vi) / sbc2 + eps))


@njit(parallel=True, fastmath=_FM, cache=True)
def _sgd(p, g, buf, lr, mom, wd, nesterov, has_buf):
    # SGD + momentum (torch semantics) in place, flat, one pass.
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        if has_buf:
            bi = mom * buf[i] + d
            buf[i] = bi
            d = d + mom * bi if nesterov else bi
        p[i] = p[i] - lr * d


@njit(parallel=True, cache=True)
def _sum_squares(x):
    # Σ x² in float64 (global gradient norm).
    s = 0.0
    for i in prange(x.size):
        s += np.float64(x[i]) * np.float64(x[i])
    return s


@njit(parallel=True, fastmath=_FM, cache=True)
def _scale(x, s):
    # x ← s·x in place, flat.
    for i in prange(x.size):
        x[i] *= s


@njit(parallel=True, cache=True)
def _count_nonfinite(x):
    # Number of NaN/±inf entries (no fastmath: the test itself must not be optimised away).
    n = 0
    for i in prange(x.size):
        if not np.isfinite(x[i]):
            n += 1
    return n


# ====================================================================== the backend
def _flat(x):
    """A 1-D view of a C-contiguous array (None when x is not contiguous)."""
    return x.reshape(-1) if x.flags.c_contiguous else None


def _nt():
    """Numba's current thread count (NUMBA_NUM_THREADS or numba.set_num_threads)."""
    return numba.get_num_threads()


def _c(x):
    return np.ascontiguousarray(x)


class NumbaBackend(NumpyBackend):
    """Numba CPU backend: fused, parallel kernels; big matmuls through NumPy's BLAS.

    Same methods, signatures and semantics as :class:`NumpyBackend`; caches hold what these
    kernels need (they are not interchangeable with the NumPy backend's caches).
    """

    name = "numba"

    # ------------------------------------------------------------------ glue
    def add(self, a, b):
        """a + b, same shape (residual connections). a, b: (...). Returns a new array."""
        if a.shape != b.shape or a.dtype != b.dtype:
            return a + b
        a, b = _c(a), _c(b)
        out = np.empty_like(a)
        _add(a.reshape(-1), b.reshape(-1), out.reshape(-1))
        return out

    # take_cls / take_cls_backward: the reference versions are already copy-bound.

    # ------------------------------------------------------------------ patches, tokens
    def patches_forward(self, images, P, S=None):
        """images: (B, H, W, C) → patches: (B, N, P·P·C) in (h, w, c) order, cache."""
        S = P if S is None else S
        B, H, W, C = images.shape
        gh, gw = ops.patch_grid(H, W, P, S)
        out = np.empty((B, gh * gw, P * P * C), dtype=images.dtype)
        _patches_fwd(_c(images), P, S, gh, gw, out)
        return out, (images.shape, P, S)

    def patches_backward(self, dpatches, cache):
        """dpatches: (B, N, P·P·C) → dimages: (B, H, W, C) (overlapping pixels summed)."""
        shape, P, S = cache
        B, H, W, C = shape
        gh, gw = ops.patch_grid(H, W, P, S)
        dimg = np.empty(shape, dtype=dpatches.dtype)
        _patches_bwd(_c(dpatches), P, S, gh, gw, dimg)
        return dimg

    def tokens_forward(self, e, cls, pos=None):
        """e: (B, N, D); cls: (1, 1, D); pos: (1, N+1, D) or None → z0: (B, N+1, D), cache."""
        B, N, D = e.shape
        z = np.empty((B, N + 1, D), dtype=e.dtype)
        has_pos = pos is not None
        posa = _c(pos[0]).astype(e.dtype, copy=False) if has_pos else np.zeros((1, D), e.dtype)
        _tokens_fwd(_c(e), _c(cls).reshape(D).astype(e.dtype, copy=False), posa, has_pos, z)
        return z, has_pos

    def tokens_backward(self, dz, cache):
        """dz: (B, N+1, D) → de: (B, N, D), dcls: (1, 1, D), dpos: (1, N+1, D) or None."""
        has_pos = cache
        B, N1, D = dz.shape
        dz = _c(dz)
        de = np.empty((B, N1 - 1, D), dtype=dz.dtype)
        _copy_tokens(dz, de)
        if has_pos:
            dpos = _colsum(dz.reshape(B, N1 * D), _nt()).reshape(1, N1, D)
            dcls = dpos[:, :1].copy()
        else:
            dpos = None
            dcls = _colsum(_c(dz[:, 0]), _nt()).reshape(1, 1, D)
        return de, dcls, dpos

    # ------------------------------------------------------------------ linear layers
    # Issue the big matmuls from Numba's pool (threads.py); False: NumPy's ``@`` (then
    # OpenBLAS's own pool alternates with Numba's — the old path, kept for A/B timing and
    # for BLAS libraries other than OpenBLAS).
    blas_in_pool = HAVE_CBLAS
    # rows per gemm call when a bias/GELU epilogue follows (0: one block per thread)
    epi_rows = 1024
    # attention's per-head products as BLAS gemms (True) or the hand-written loops (False)
    attn_blas = True

    def _matmul(self, a, b, ta=False, tb=False, bias=None, gelu=None):
        """op(a) @ op(b) (+ bias, then GELU) for 2-D C-contiguous a, b of one float dtype.

        a: (M, K), or (K, M) when ta; b: (K, N), or (N, K) when tb. Returns c: (M, N) and,
        when gelu is "tanh"/"erf", also u = GELU(c) with c the pre-activation (c + bias).
        """
        a, b = _c(a), _c(b)              # the gemm calls address rows by pointer arithmetic
        M = a.shape[1] if ta else a.shape[0]
        N = b.shape[0] if tb else b.shape[1]
        dt = a.dtype
        K = a.shape[0] if ta else a.shape[1]
        if (self.blas_in_pool and dt == b.dtype and dt in (np.float32, np.float64)
                and min(M, N, K) > 0):
            c = np.empty((M, N), dtype=dt)
            u = np.empty_like(c) if gelu else c
            mode = 2 if gelu else (1 if bias is not None else 0)
            bb = bias if bias is not None else np.zeros(N if gelu else 0, dtype=dt)
            with blas_single_thread():
                _mm(a, b, c, ta, tb, _nt(), mode, bb, u, gelu == "erf", dt == np.float32,
                    self.epi_rows)
            return (c, u) if gelu else c
        c = (a.T if ta else a) @ (b.T if tb else b)
        if gelu:
            u = np.empty_like(c)
            bb = bias if bias is not None else np.zeros(N, dtype=c.dtype)
            _bias_gelu_fwd(c, bb, u, gelu == "erf", c.dtype == np.float32, _nt())
            return c, u
        if bias is not None:
            _add_bias(c, bias)
        return c

    def linear_forward(self, x, W, b=None):
        """x: (..., D_in); W: (D_in, D_out); b: (D_out,) or None → y = x W + b: (..., D_out).

        One gemm on the (rows, D_in) view with the bias added in its epilogue.
        """
        Din, Dout = W.shape
        x2 = _c(x).reshape(-1, Din)
        y = self._matmul(x2, _c(W), bias=b)
        return y.reshape(x.shape[:-1] + (Dout,)), (x2, W, b is not None, x.shape)

    def linear_backward(self, dy, cache, need_dx=True):
        """dy: (..., D_out) → dx: (..., D_in) or None, dW: (D_in, D_out), db: (D_out,) or None."""
        x2, W, has_b, xshape = cache
        dy2 = _c(dy).reshape(-1, W.shape[1])
        dW = self._matmul(x2, dy2, ta=True)
        db = _colsum(dy2, _nt()) if has_b else None
        dx = self._matmul(dy2, _c(W), tb=True).reshape(xshape) if need_dx else None
        return dx, dW, db

    def linear_gelu_forward(self, x, W, b, approximate="tanh"):
        """fc1 + GELU. x: (..., D); W: (D, M); b: (M,) → u = GELU(x W + b): (..., M), cache.

        One gemm with bias + GELU in its epilogue; the pre-activation is kept (in the
        gemm's own output buffer) and GELU' is recomputed from it in backward.
        """
        if approximate not in ("tanh", "erf"):
            raise ValueError(f"approximate must be 'tanh' or 'erf', got {approximate!r}")
        D, M = W.shape
        x2 = _c(x).reshape(-1, D)
        h, u = self._matmul(x2, _c(W), bias=b, gelu=approximate)
        return u.reshape(x.shape[:-1] + (M,)), (x2, W, h, approximate, b is not None, x.shape)

    def linear_gelu_backward(self, du, cache, need_dx=True):
        """du: (..., M) → dx: (..., D) or None, dW: (D, M), db: (M,)."""
        x2, W, h, form, has_b, xshape = cache
        du2 = _c(du).reshape(h.shape)
        dh = np.empty_like(h)
        db = _gelu_bwd_db(du2, h, dh, form == "erf", h.dtype == np.float32, has_b,
                          _nt())
        dW = self._matmul(x2, dh, ta=True)
        dx = self._matmul(dh, _c(W), tb=True).reshape(xshape) if need_dx else None
        return dx, dW, (db if has_b else None)

    def gelu_forward(self, x, approximate="tanh"):
        """x: (...) → GELU(x): (...), cache."""
        if approximate not in ("tanh", "erf"):
            raise ValueError(f"approximate must be 'tanh' or 'erf', got {approximate!r}")
        h = _c(x).reshape(-1, x.shape[-1] if x.ndim else 1).copy()
        u = np.empty_like(h)
        _bias_gelu_fwd(h, np.zeros(h.shape[1], h.dtype), u, approximate == "erf",
                       h.dtype == np.float32, _nt())
        return u.reshape(x.shape), (h, approximate, x.shape)

    def gelu_backward(self, dy, cache):
        """dy: (...) → dx: (...)."""
        h, form, shape = cache
        dh = np.empty_like(h)
        _gelu_bwd_db(_c(dy).reshape(h.shape), h, dh, form == "erf", h.dtype == np.float32,
                     False, _nt())
        return dh.reshape(shape)

    def tanh_forward(self, x):
        """x: (...) → tanh(x): (...), cache (the output)."""
        x = _c(x)
        y = np.empty_like(x)
        _tanh_fwd(x.reshape(-1), y.reshape(-1))
        return y, y

    def tanh_backward(self, dy, cache):
        """dy: (...) → dx = dy·(1 − y²): (...)."""
        y = cache
        dx = np.empty_like(y)
        _tanh_bwd(_c(dy).reshape(-1), y.reshape(-1), dx.reshape(-1))
        return dx

    # ------------------------------------------------------------------ LayerNorm
    def layernorm_forward(self, x, gamma, beta, eps=1e-6):
        """x: (..., D); gamma, beta: (D,) → y: (..., D), cache (x, μ, 1/σ, γ)."""
        D = x.shape[-1]
        x2 = _c(x).reshape(-1, D)
        R = x2.shape[0]
        y = np.empty_like(x2)
        mu = np.empty(R, dtype=x2.dtype)
        rstd = np.empty(R, dtype=x2.dtype)
        _ln_fwd(x2, gamma, beta, eps, y, mu, rstd)
        return y.reshape(x.shape), (x2, mu, rstd, gamma, x.shape)

    def layernorm_backward(self, dy, cache):
        """dy: (..., D) → dx: (..., D), dgamma: (D,), dbeta: (D,)."""
        x2, mu, rstd, gamma, shape = cache
        dx = np.empty_like(x2)
        dgamma, dbeta = _ln_bwd(_c(dy).reshape(x2.shape), x2, mu, rstd, gamma, dx,
                                _nt())
        return dx.reshape(shape), dgamma, dbeta

    # ------------------------------------------------------------------ attention
    def mhsa_core_forward(self, qkv, H):
        """qkv: (B, N, 3D) fused [q | k | v] → out: (B, N, D) (heads concatenated), cache.

        Scale 1/√D_h. The cache keeps qkv and the attention matrices A: (B, H, N, N).
        """
        qkv = _c(qkv)
        B, N, D3 = qkv.shape
        D = D3 // 3
        Dh = D // H
        scale = 1.0 / math.sqrt(Dh)
        out = np.empty((B, N, D), dtype=qkv.dtype)
        A = np.empty((B, H, N, N), dtype=qkv.dtype)
        if self.blas_in_pool and self.attn_blas:
            with blas_single_thread():
                _attn_fwd_blas(qkv, H, scale, out, A, qkv.dtype == np.float32)
        else:
            _attn_fwd(qkv, H, scale, out, A, qkv.dtype == np.float32)
        return out, {"qkv": qkv, "A": A, "H": H, "scale": scale}

    def mhsa_core_backward(self, dout, cache):
        """dout: (B, N, D) → dqkv: (B, N, 3D) in the fused [q | k | v] layout."""
        qkv, A, H, scale = cache["qkv"], cache["A"], cache["H"], cache["scale"]
        dqkv = np.empty_like(qkv)
        if self.blas_in_pool and self.attn_blas:
            with blas_single_thread():
                _attn_bwd_blas(_c(dout), qkv, A, H, scale, dqkv, qkv.dtype == np.float32)
        else:
            _attn_bwd(_c(dout), qkv, A, H, scale, dqkv)
        return dqkv

    # ------------------------------------------------------------------ loss
    def softmax_cross_entropy(self, logits, labels, smoothing=0.0):
        """logits: (B, C); labels: (B,) ints or (B, C) soft targets → (loss, dlogits (B, C))."""
        from ..errors import ConfigError
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"label smoothing must lie in [0, 1), got {smoothing}")
        logits = _c(logits)
        t = _c(_targets(labels, logits.shape[1], smoothing, logits.dtype))
        dlogits = np.empty_like(logits)
        loss = _softmax_xent(logits, t, dlogits)
        return float(loss), dlogits

    # ------------------------------------------------------------------ optimizer updates
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """AdamW in place on p, m, v (all the same shape); g: same shape. step ≥ 1."""
        fp, fg, fm, fv = _flat(p), _flat(_c(g)), _flat(m), _flat(v)
        if fp is None or fm is None or fv is None:
            return super().adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        _adamw(fp, fg, fm, fv, float(lr), float(beta1), float(beta2), float(eps),
               float(weight_decay or 0.0), bc1, math.sqrt(bc2))

    def sgd_update(self, p, g, buf, lr, momentum, weight_decay, nesterov=False):
        """SGD + momentum in place on p and buf (buf may be None when momentum is 0)."""
        fp, fg = _flat(p), _flat(_c(g))
        has_buf = bool(momentum)
        fb = _flat(buf) if has_buf else fp
        if fp is None or fb is None:
            return super().sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov)
        _sgd(fp, fg, fb, float(lr), float(momentum or 0.0), float(weight_decay or 0.0),
             bool(nesterov), has_buf)

    def sum_squares(self, x):
        """Σ x² as a Python float. x: any shape."""
        return float(_sum_squares(_c(x).reshape(-1)))

    def scale_(self, x, s):
        """x ← s·x in place. x: any shape (C-contiguous for the fast path)."""
        fx = _flat(x)
        if fx is None:
            x *= s
        else:
            _scale(fx, float(s))

    def all_finite(self, x):
        """True when no element of x is NaN or ±inf."""
        return _count_nonfinite(_c(x).reshape(-1)) == 0
