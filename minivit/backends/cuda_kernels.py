"""The ``numba.cuda`` kernels of the CUDA backend. Their NumPy reference ops in
:mod:`minivit.ops` are the specification; :mod:`minivit.backends.cuda_backend` holds the
host-side wrappers that pick launch configurations from shapes.

Kernels are built by themed factories (matmul, elementwise, reductions, row kernels,
embedding, masked patches), combined by :func:`kernels`, once per (dtype,
:class:`Tiles`): every constant inside a kernel is a scalar of the array dtype and every
accumulator is declared with it, so a float32 model computes in float32 on the GPU (a
bare ``0.5`` literal would silently promote to float64) and a float64 model (gradient
checks) in float64. The tile sizes are compile-time constants of the factory; the tests
build the same kernel source with tiny tiles as well, so that multi-tile loops and
ragged edges run under the CUDA simulator on shapes of a few elements.

Conventions: ``B`` batch, ``N`` tokens, ``D`` width, ``H`` heads, ``D_h = D/H``, ``P``
patch size, ``S`` stride, ``C`` classes (or channels for images), ``R`` rows of a 2-D
view. Elementwise kernels take flat 1-D views and use grid-stride loops.
"""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda

from ..ops import activations as _act


class Tiles(NamedTuple):
    """Compile-time tile sizes.

    mm_ty, mm_tx: threads per matmul block (rows, columns); mm_rm, mm_rn: outputs per
    thread (register block), so a block computes a (mm_ty·mm_rm) × (mm_tx·mm_rn) tile of C;
    mm_bk: depth of one K slab staged in shared memory.
    attn_t: rows (queries or keys) per attention tile, the most; halved for wide heads
    and float64 until the kernels fit attn_smem bytes of static shared memory (see
    :func:`attention_tile`); attn_g: threads per row, so an attention block has
    attn_t·attn_g threads (attn_t a multiple of attn_g, both powers of two).
    row: threads per block of the one-block-per-row kernels (LayerNorm, cross-entropy);
    a power of two. col_x, col_y: columns and row lanes per block of the column
    reductions. ew: threads per block of the elementwise / reduction kernels (power of 2).
    """
    mm_ty: int = 16
    mm_tx: int = 16
    mm_rm: int = 4
    mm_rn: int = 4
    mm_bk: int = 16
    attn_t: int = 32
    attn_g: int = 4
    attn_smem: int = 48 * 1024
    row: int = 128
    col_x: int = 32
    col_y: int = 8
    ew: int = 256


DEFAULT_TILES = Tiles()
#: Tiny tiles for the simulator tests: several tiles on shapes of 5–20 elements.
#: Its attention budget makes float64 tiles of D_h ≥ 4 shrink (T = 4 → 2), as on a GPU.
SMALL_TILES = Tiles(mm_ty=4, mm_tx=4, mm_rm=2, mm_rn=2, mm_bk=4, attn_t=4, attn_g=2,
                    attn_smem=800, row=8, col_x=4, col_y=2, ew=32)

# Activation codes of the matmul epilogue and of the GELU kernels.
ACT_NONE, ACT_GELU_TANH, ACT_GELU_ERF = 0, 1, 2
# Modes of the reduce kernel.
RED_SUM, RED_SUMSQ, RED_NONFINITE = 0, 1, 2

def _scalars(dt):
    """(F, ZERO, ONE, HALF, NEG_INF): the numba type of float dtype dt and the scalars
    every kernel uses, typed dt so no bare literal promotes a float32 kernel to float64."""
    if dt not in (np.float32, np.float64):
        raise TypeError(f"CUDA kernels support float32 and float64, got {dt}")
    c = dt.type
    return numba.from_dtype(dt), c(0.0), c(1.0), c(0.5), c(-np.inf)


@lru_cache(maxsize=None)
def _device(dt, tiles: Tiles) -> SimpleNamespace:
    """The device functions shared by the kernel factories: GELU (both forms) and its
    derivative, and the tree sum / max over a block of ``tiles.row`` threads."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)
    # The GELU constants of minivit.ops.activations (written once there), cast to dt.
    c = dt.type
    SQRT_2_OVER_PI = c(_act.SQRT_2_OVER_PI)
    INV_SQRT_2 = c(_act.INV_SQRT_2)
    INV_SQRT_2PI = c(_act.INV_SQRT_2PI)
    GC = c(_act.GELU_C)
    GC3 = c(3.0 * _act.GELU_C)
    RT = tiles.row

    @cuda.jit(device=True)
    def gelu_tanh(x):
        # GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
        return HALF * x * (ONE + math.tanh(SQRT_2_OVER_PI * (x + GC * x * x * x)))

    @cuda.jit(device=True)
    def gelu_erf(x):
        # GELU, exact form: x·Φ(x) = 0.5·x·(1 + erf(x/√2))
        return HALF * x * (ONE + math.erf(x * INV_SQRT_2))

    @cuda.jit(device=True)
    def dgelu_tanh(x):
        # d/dx of the tanh form: 0.5(1+t) + 0.5x(1−t²)·√(2/π)(1 + 3·0.044715x²)
        t = math.tanh(SQRT_2_OVER_PI * (x + GC * x * x * x))
        du = SQRT_2_OVER_PI * (ONE + GC3 * x * x)
        return HALF * (ONE + t) + HALF * x * (ONE - t * t) * du

    @cuda.jit(device=True)
    def dgelu_erf(x):
        # d/dx [x Φ(x)] = Φ(x) + x φ(x)
        cdf = HALF * (ONE + math.erf(x * INV_SQRT_2))
        return cdf + x * INV_SQRT_2PI * math.exp(-HALF * x * x)

    @cuda.jit(device=True)
    def block_sum(red, t, v):
        # Tree sum of one value per thread over a block of RT threads (red: shared (RT,)).
        red[t] = v
        cuda.syncthreads()
        s = RT // 2
        while s > 0:
            if t < s:
                red[t] += red[t + s]
            cuda.syncthreads()
            s //= 2
        r = red[0]
        cuda.syncthreads()
        return r

    @cuda.jit(device=True)
    def block_max(red, t, v):
        # Tree maximum over a block of RT threads (red: shared (RT,)).
        red[t] = v
        cuda.syncthreads()
        s = RT // 2
        while s > 0:
            if t < s:
                if red[t + s] > red[t]:
                    red[t] = red[t + s]
            cuda.syncthreads()
            s //= 2
        r = red[0]
        cuda.syncthreads()
        return r
    return SimpleNamespace(gelu_tanh=gelu_tanh, gelu_erf=gelu_erf, dgelu_tanh=dgelu_tanh,
                           dgelu_erf=dgelu_erf, block_sum=block_sum, block_max=block_max)


def _matmul(dt, tiles: Tiles) -> dict:
    """The tiled matmul with fused bias and GELU epilogue (Eq. 2–3's linear layers)."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)
    dev = _device(dt, tiles)
    gelu_tanh, gelu_erf = dev.gelu_tanh, dev.gelu_erf
    TY, TX, RM, RN, BK = tiles.mm_ty, tiles.mm_tx, tiles.mm_rm, tiles.mm_rn, tiles.mm_bk
    BM, BN = TY * RM, TX * RN
    # Shared-array shapes must be compile-time literals: numba types a closure integer
    # as a literal, but not an expression computed inside the kernel (BM + 1 there is
    # a plain int64 and `cuda.shared.array` refuses to compile).
    BM1 = BM + 1
    RMN = RM * RN
    NT = TY * TX
    A_LOADS = (BM * BK + NT - 1) // NT
    B_LOADS = (BK * BN + NT - 1) // NT

    # At most 65536 / (2·NT) registers per thread (launch bounds: NT threads, 2 resident
    # blocks per multiprocessor), so two 256-thread blocks fit an SM and one block's
    # K-slab loads overlap the other's arithmetic. The simulator takes no launch bounds.
    mm_opts = {} if numba.config.ENABLE_CUDASIM else dict(launch_bounds=(NT, 2))

    @cuda.jit(**mm_opts)
    def matmul(A, Bm, bias, C, Hpre, M, N, K, kc, trans_a, trans_b, has_bias, act):
        """C (M, N) = act(op(A) · op(B) + bias). op(A) = A (M, K) or, trans_a, Aᵀ with
        A (K, M); op(B) = B (K, N) or, trans_b, Bᵀ with B (N, K). bias: (N,) used when
        has_bias. act 1/2: GELU tanh/erf epilogue, pre-activation also written to Hpre.
        Split K (grid z = S > 1, kc < K): block z sums k in [z·kc, (z+1)·kc) and writes
        its partial product to rows z·M … z·M + M − 1 of C (S·M, N); no bias or act."""
        # Tiling: a block of TY×TX threads owns a BM×BN tile of C (BM = TY·RM, BN = TX·RN);
        # thread (ty, tx) keeps an RM×RN register block at rows ty + TY·i, cols tx + TX·j
        # (strided, so stores coalesce and shared reads are broadcast/conflict-free).
        # K is swept in BK-deep slabs: both operands are staged in shared memory as
        # As[k, m] and Bs[k, n] (A's rows padded by one against bank conflicts), loaded
        # coalesced along the operand's contiguous axis whatever the transposition, with
        # zeros outside the matrix, so any M, N, K work.
        # Split K: a weight gradient xᵀ dy has a small M × N (a few tiles) and a long K
        # (every token of the batch), so one block per tile would leave most
        # multiprocessors idle; grid z cuts K into slices summed later (col_sum).
        z = cuda.blockIdx.z
        k_lo = z * kc
        k_hi = min(K, k_lo + kc)
        row0 = z * M
        As = cuda.shared.array((BK, BM1), F)
        Bs = cuda.shared.array((BK, BN), F)
        acc = cuda.local.array(RMN, F)          # acc[i·RN + j], in registers
        af = cuda.local.array(RM, F)
        bf = cuda.local.array(RN, F)
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        for i in range(RMN):
            acc[i] = ZERO
        for k0 in range(k_lo, k_hi, BK):
            for r in range(A_LOADS):
                e = tid + r * NT
                if e < BM * BK:
                    if trans_a:                      # A: (K, M), contiguous along m
                        kk = e // BM
                        mm = e - kk * BM
                        gk = k0 + kk
                        gm = m0 + mm
                        As[kk, mm] = A[gk, gm] if (gk < k_hi and gm < M) else ZERO
                    else:                            # A: (M, K), contiguous along k
                        mm = e // BK
                        kk = e - mm * BK
                        gk = k0 + kk
                        gm = m0 + mm
                        As[kk, mm] = A[gm, gk] if (gk < k_hi and gm < M) else ZERO
            for r in range(B_LOADS):
                e = tid + r * NT
                if e < BK * BN:
                    if trans_b:                      # B: (N, K), contiguous along k
                        nn = e // BK
                        kk = e - nn * BK
                        gk = k0 + kk
                        gn = n0 + nn
                        Bs[kk, nn] = Bm[gn, gk] if (gk < k_hi and gn < N) else ZERO
                    else:                            # B: (K, N), contiguous along n
                        kk = e // BN
                        nn = e - kk * BN
                        gk = k0 + kk
                        gn = n0 + nn
                        Bs[kk, nn] = Bm[gk, gn] if (gk < k_hi and gn < N) else ZERO
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(RM):
                    af[i] = As[kk, ty + TY * i]
                for j in range(RN):
                    bf[j] = Bs[kk, tx + TX * j]
                for i in range(RM):
                    for j in range(RN):
                        acc[i * RN + j] += af[i] * bf[j]
            cuda.syncthreads()
        for i in range(RM):
            gm = m0 + ty + TY * i
            if gm < M:
                for j in range(RN):
                    gn = n0 + tx + TX * j
                    if gn < N:
                        v = acc[i * RN + j]
                        if has_bias:
                            v += bias[gn]
                        if act == 0:
                            C[row0 + gm, gn] = v
                        else:
                            Hpre[gm, gn] = v
        # GELU in a second pass over this thread's own outputs, read back from Hpre: with
        # the GELU inlined 16 times the loop above is too big to unroll (float64 erf),
        # and an acc indexed in a rolled loop lives in local memory, not registers.
        if act != 0:
            for i in range(RM):
                gm = m0 + ty + TY * i
                if gm < M:
                    for j in range(RN):
                        gn = n0 + tx + TX * j
                        if gn < N:
                            v = Hpre[gm, gn]
                            C[gm, gn] = gelu_tanh(v) if act == 1 else gelu_erf(v)
    return dict(matmul=matmul, BM=BM, BN=BN)


def _elementwise(dt, tiles: Tiles) -> dict:
    """Grid-stride kernels over flat (n,) views: copies, the residual add, the activations
    and the optimizer steps."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)
    dev = _device(dt, tiles)
    gelu_tanh, gelu_erf = dev.gelu_tanh, dev.gelu_erf
    dgelu_tanh, dgelu_erf = dev.dgelu_tanh, dev.dgelu_erf

    @cuda.jit
    def fill(x, val):
        """x: (n,) ← val."""
        # grid-stride, one element per thread per step
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            x[i] = val

    @cuda.jit
    def copy(x, out):
        """out: (n,) ← x: (n,) (casts when the dtypes differ)."""
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = x[i]

    @cuda.jit
    def copy2d(x, out):
        """out: (R, C) ← x: (R, C), x possibly a strided view (e.g. z[:, 0, :])."""
        # grid-stride over the R·C outputs, row-major so writes coalesce
        R, Cc = out.shape
        for i in range(cuda.grid(1), R * Cc, cuda.gridsize(1)):
            r = i // Cc
            out[r, i - r * Cc] = x[r, i - r * Cc]

    @cuda.jit
    def add(a, b, out):
        """out = a + b, all (n,): the residual connections of Eq. 2–3."""
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = a[i] + b[i]

    @cuda.jit
    def scale(x, s):
        """x ← s·x in place, (n,)."""
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            x[i] *= s

    @cuda.jit
    def gelu_fwd(x, out, act):
        """out = GELU(x), (n,); act 1: tanh form, 2: erf form."""
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = gelu_tanh(x[i]) if act == 1 else gelu_erf(x[i])

    @cuda.jit
    def gelu_bwd(dy, x, dx, act):
        """dx = dy · GELU'(x), (n,), the derivative recomputed from the pre-activation x."""
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            dx[i] = dy[i] * (dgelu_tanh(x[i]) if act == 1 else dgelu_erf(x[i]))

    @cuda.jit
    def tanh_fwd(x, out):
        """out = tanh(x), (n,)."""
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = math.tanh(x[i])

    @cuda.jit
    def tanh_bwd(dy, y, dx):
        """dx = dy·(1 − y²) with y = tanh(x), (n,)."""
        for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            dx[i] = dy[i] * (ONE - y[i] * y[i])

    @cuda.jit
    def adamw(p, g, m, v, decay, beta1, beta2, omb1, omb2, inv_sqrt_bc2, step_size, eps):
        """AdamW in place on p, m, v (all (n,)), torch's arithmetic:
        p ← p·decay; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
        p ← p − step_size · m / (√v · inv_sqrt_bc2 + eps), step_size = lr / bc1."""
        for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
            gi = g[i]
            mi = m[i] * beta1 + omb1 * gi
            vi = v[i] * beta2 + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            denom = math.sqrt(vi) * inv_sqrt_bc2 + eps
            p[i] = p[i] * decay - step_size * (mi / denom)

    @cuda.jit
    def sgd(p, g, buf, lr, momentum, wd, nesterov, has_buf):
        """SGD with momentum in place on p (and buf), all (n,), torch semantics:
        d = g + wd·p; buf ← momentum·buf + d; p ← p − lr·(d + momentum·buf if nesterov
        else buf). Without has_buf: p ← p − lr·d."""
        for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
            d = g[i] + wd * p[i]
            if has_buf:
                b = momentum * buf[i] + d
                buf[i] = b
                if nesterov:
                    d = d + momentum * b
                else:
                    d = b
            p[i] = p[i] - lr * d

    return dict(fill=fill, copy=copy, copy2d=copy2d, add=add, scale=scale, gelu_fwd=gelu_fwd,
                gelu_bwd=gelu_bwd, tanh_fwd=tanh_fwd, tanh_bwd=tanh_bwd, adamw=adamw, sgd=sgd)


def _reductions(dt, tiles: Tiles) -> dict:
    """The grid-wide reduce and the column sums (bias and LayerNorm parameter gradients)."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)
    EW = tiles.ew
    CX, CY = tiles.col_x, tiles.col_y

    @cuda.jit
    def reduce(x, partial, mode):
        """partial[block] = Σ over this block's grid-stride share of f(x), x: (n,),
        f = x (mode 0), x² (mode 1) or [x not finite] (mode 2). Launch once with G blocks
        and once more with one block on the G partials to get a scalar."""
        # EW threads per block, grid-stride accumulation then a shared-memory tree
        red = cuda.shared.array(EW, F)
        t = cuda.threadIdx.x
        acc = ZERO
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            if mode == 0:
                acc += v
            elif mode == 1:
                acc += v * v
            elif math.isnan(v) or math.isinf(v):
                acc += ONE
        red[t] = acc
        cuda.syncthreads()
        s = EW // 2
        while s > 0:
            if t < s:
                red[t] += red[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            partial[cuda.blockIdx.x] = red[0]

    # ------------------------------------------------------------------ column reductions
    @cuda.jit
    def col_sum(X, out, rc):
        """out (G, C): out[g] = Σ_r X[r, :] over rows g·rc … g·rc + rc − 1 of X (R, C)
        (any strides), g = blockIdx.y: bias gradients, dcls, dpos, split-K partials."""
        # Block = CX columns × CY row lanes: lane ty sums rows ty, ty+CY, … of its chunk
        # of column blockIdx.x·CX + tx (coalesced across tx), then lane 0 adds the CY
        # partials. Chunks (grid y > 1) keep the GPU busy when C is narrow and R long
        # (db of a linear layer: C = D, R = every token); their partial sums are added by
        # a second launch, in a fixed order, so the result does not vary run to run.
        part = cuda.shared.array((CY, CX), F)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        col = cuda.blockIdx.x * CX + tx
        g = cuda.blockIdx.y
        R, Cc = X.shape
        r_end = min(R, (g + 1) * rc)
        acc = ZERO
        if col < Cc:
            r = g * rc + ty
            while r < r_end:
                acc += X[r, col]
                r += CY
        part[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and col < Cc:
            s = ZERO
            for k in range(CY):
                s += part[k, tx]
            out[g, col] = s

    @cuda.jit
    def ln_param_grads(dy, x, mean, rstd, dgamma, dbeta, rc):
        """dgamma (G, D): dgamma[g] = Σ_r dy·x̂, dbeta (G, D): dbeta[g] = Σ_r dy, over rows
        g·rc … g·rc + rc − 1 of dy, x: (R, D), g = blockIdx.y; x̂ = (x − mean[r])·rstd[r]
        is recomputed, not stored."""
        # same CX × CY column-reduction tiling and row chunks as col_sum, two sums at once
        pg = cuda.shared.array((CY, CX), F)
        pb = cuda.shared.array((CY, CX), F)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        col = cuda.blockIdx.x * CX + tx
        g = cuda.blockIdx.y
        R, D = x.shape
        r_end = min(R, (g + 1) * rc)
        ag = ZERO
        ab = ZERO
        if col < D:
            r = g * rc + ty
            while r < r_end:
                d = dy[r, col]
                ag += d * (x[r, col] - mean[r]) * rstd[r]
                ab += d
                r += CY
        pg[ty, tx] = ag
        pb[ty, tx] = ab
        cuda.syncthreads()
        if ty == 0 and col < D:
            sg = ZERO
            sb = ZERO
            for k in range(CY):
                sg += pg[k, tx]
                sb += pb[k, tx]
            dgamma[g, col] = sg
            dbeta[g, col] = sb

    return dict(reduce=reduce, col_sum=col_sum, ln_param_grads=ln_param_grads)


def _row_kernels(dt, tiles: Tiles) -> dict:
    """One block per row: LayerNorm forward/backward and softmax cross-entropy."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)
    dev = _device(dt, tiles)
    block_sum, block_max = dev.block_sum, dev.block_max
    RT = tiles.row

    # ------------------------------------------------------------------ LayerNorm
    @cuda.jit
    def layernorm_fwd(x, gamma, beta, eps, inv_d, y, mean, rstd):
        """y = γ·(x − μ)/√(σ² + ε) + β over the rows of x: (R, D); also mean, rstd: (R,).
        inv_d = 1/D in the array dtype (an integer divisor would promote to float64)."""
        # One block of RT threads per row (grid-stride over rows if the grid is smaller);
        # two-pass mean/variance as the reference, each a strided per-thread sum and a
        # shared-memory tree.
        red = cuda.shared.array(RT, F)
        t = cuda.threadIdx.x
        D = x.shape[1]
        for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            s = ZERO
            for k in range(t, D, RT):
                s += x[r, k]
            mu = block_sum(red, t, s) * inv_d
            s = ZERO
            for k in range(t, D, RT):
                xc = x[r, k] - mu
                s += xc * xc
            var = block_sum(red, t, s) * inv_d
            rs = ONE / math.sqrt(var + eps)
            for k in range(t, D, RT):
                y[r, k] = (x[r, k] - mu) * rs * gamma[k] + beta[k]
            if t == 0:
                mean[r] = mu
                rstd[r] = rs

    @cuda.jit
    def layernorm_bwd(dy, x, mean, rstd, gamma, inv_d, dx):
        """dx = r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ, per row of dy, x: (R, D)."""
        # one block of RT threads per row (grid-stride over rows), two block sums
        red = cuda.shared.array(RT, F)
        t = cuda.threadIdx.x
        D = x.shape[1]
        for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            mu = mean[r]
            rs = rstd[r]
            s1 = ZERO
            s2 = ZERO
            for k in range(t, D, RT):
                g = dy[r, k] * gamma[k]
                s1 += g
                s2 += g * (x[r, k] - mu) * rs
            mg = block_sum(red, t, s1) * inv_d
            mgx = block_sum(red, t, s2) * inv_d
            for k in range(t, D, RT):
                g = dy[r, k] * gamma[k]
                dx[r, k] = rs * (g - mg - (x[r, k] - mu) * rs * mgx)

    # ------------------------------------------------------------------ cross-entropy
    @cuda.jit
    def softmax_xent(logits, labels, soft, use_soft, smoothing, smooth_c, inv_b, dlogits,
                     rowloss):
        """Row b of logits (B, C): p = softmax, t = one-hot(labels[b]) (labels: (B,) ints)
        or soft[b] (soft: (B, C)), smoothed t ← (1−ε)t + smooth_c (smooth_c = ε/C);
        dlogits = (p − t)/B and rowloss[b] = −Σ_c t·log p."""
        # one block of RT threads per row (grid-stride over rows): block max, block Σexp, then one pass writing
        # dlogits and accumulating the row loss
        red = cuda.shared.array(RT, F)
        t = cuda.threadIdx.x
        Cc = logits.shape[1]
        for b in range(cuda.blockIdx.x, logits.shape[0], cuda.gridDim.x):
            mx = NEG_INF
            for k in range(t, Cc, RT):
                if logits[b, k] > mx:
                    mx = logits[b, k]
            mx = block_max(red, t, mx)
            s = ZERO
            for k in range(t, Cc, RT):
                s += math.exp(logits[b, k] - mx)
            logse = math.log(block_sum(red, t, s))
            lab = labels[b] if not use_soft else -1
            acc = ZERO
            for k in range(t, Cc, RT):
                logp = logits[b, k] - mx - logse
                if use_soft:
                    tk = soft[b, k]
                else:
                    tk = ONE if k == lab else ZERO
                tk = (ONE - smoothing) * tk + smooth_c
                dlogits[b, k] = (math.exp(logp) - tk) * inv_b
                acc -= tk * logp
            tot = block_sum(red, t, acc)
            if t == 0:
                rowloss[b] = tot

    return dict(layernorm_fwd=layernorm_fwd, layernorm_bwd=layernorm_bwd,
                softmax_xent=softmax_xent)


def _embedding(dt, tiles: Tiles) -> dict:
    """Patch extraction, token assembly ([class]; patches + positions) and the 2-D position
    embedding (Eq. 1)."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)

    # ------------------------------------------------------------------ patches (Eq. 1)
    @cuda.jit
    def patches_fwd(img, out, P, S, gw):
        """out[b, n, (i·P + j)·C + c] = img[b, g_y·S + i, g_x·S + j, c], n = g_y·G_w + g_x;
        img: (B, H, W, C), out: (B, N, P·P·C)."""
        # one thread per output element, grid-stride, row-major so writes coalesce
        B, N, PPC = out.shape
        Cc = img.shape[3]
        for idx in range(cuda.grid(1), B * N * PPC, cuda.gridsize(1)):
            f = idx % PPC
            n = (idx // PPC) % N
            b = idx // (PPC * N)
            pi = f // (P * Cc)
            pj = (f // Cc) % P
            ch = f % Cc
            gy = n // gw
            gx = n - gy * gw
            out[b, n, f] = img[b, gy * S + pi, gx * S + pj, ch]

    @cuda.jit
    def patches_bwd(dp, dimg, P, S, gh, gw):
        """Adjoint of patches_fwd: dimg[b, y, x, c] = Σ over the patches covering pixel
        (y, x) of their gradient there; dp: (B, N, P·P·C), dimg: (B, H, W, C)."""
        # The scatter-add written as a gather: one thread per pixel visits the ≤ ⌈P/S⌉²
        # patches that cover it, so there are no atomics and the sum is deterministic.
        B, Hh, Ww, Cc = dimg.shape
        for idx in range(cuda.grid(1), B * Hh * Ww * Cc, cuda.gridsize(1)):
            ch = idx % Cc
            xx = (idx // Cc) % Ww
            yy = (idx // (Cc * Ww)) % Hh
            b = idx // (Cc * Ww * Hh)
            gy0 = 0 if yy - P + 1 <= 0 else (yy - P + S) // S
            gx0 = 0 if xx - P + 1 <= 0 else (xx - P + S) // S
            gy1 = min(gh - 1, yy // S)
            gx1 = min(gw - 1, xx // S)
            acc = ZERO
            for gy in range(gy0, gy1 + 1):
                for gx in range(gx0, gx1 + 1):
                    acc += dp[b, gy * gw + gx, ((yy - gy * S) * P + (xx - gx * S)) * Cc + ch]
            dimg[b, yy, xx, ch] = acc

    # ------------------------------------------------------------------ tokens (Eq. 1)
    @cuda.jit
    def tokens_fwd(e, cls, pos, z, has_pos):
        """z[b, 0] = cls (+ pos[0]); z[b, n+1] = e[b, n] (+ pos[n+1]).
        e: (B, N, D), cls: (D,), pos: (N+1, D), z: (B, N+1, D)."""
        B, N1, D = z.shape
        for idx in range(cuda.grid(1), B * N1 * D, cuda.gridsize(1)):
            d = idx % D
            n = (idx // D) % N1
            b = idx // (D * N1)
            v = cls[d] if n == 0 else e[b, n - 1, d]
            if has_pos:
                v += pos[n, d]
            z[b, n, d] = v

    @cuda.jit
    def tokens_bwd_de(dz, de):
        """de[b, n] = dz[b, n+1]: dz (B, N+1, D) → de (B, N, D)."""
        B, N, D = de.shape
        for idx in range(cuda.grid(1), B * N * D, cuda.gridsize(1)):
            d = idx % D
            n = (idx // D) % N
            b = idx // (D * N)
            de[b, n, d] = dz[b, n + 1, d]

    @cuda.jit
    def cls_scatter(dy, dz):
        """dz[b, 0] = dy[b], dz[b, n>0] = 0: dy (B, D) → dz (B, N+1, D)."""
        B, N1, D = dz.shape
        for idx in range(cuda.grid(1), B * N1 * D, cuda.gridsize(1)):
            d = idx % D
            n = (idx // D) % N1
            b = idx // (D * N1)
            dz[b, n, d] = dy[b, d] if n == 0 else ZERO

    @cuda.jit
    def pos2d_fwd(pcls, row, col, pos):
        """pos[0] = pcls[0]; pos[1 + r·G_w + c] = [row[r]; col[c]]. pcls: (1, D),
        row: (G_h, D/2), col: (G_w, D/2), pos: (1 + G_h·G_w, D)."""
        T, D = pos.shape
        half = row.shape[1]
        gw = col.shape[0]
        for idx in range(cuda.grid(1), T * D, cuda.gridsize(1)):
            d = idx % D
            n = idx // D
            if n == 0:
                v = pcls[0, d]
            else:
                r = (n - 1) // gw
                cc = (n - 1) - r * gw
                v = row[r, d] if d < half else col[cc, d - half]
            pos[n, d] = v

    @cuda.jit
    def pos2d_bwd(dpos, dcls, drow, dcol):
        """Adjoint of pos2d_fwd: dcls (1, D) = dpos[0]; drow[r, k] = Σ_c dpos[1+r·G_w+c, k];
        dcol[c, k] = Σ_r dpos[1+r·G_w+c, D/2+k]. dpos: (1 + G_h·G_w, D)."""
        # one thread per output scalar, each summing its row or column of the grid
        D = dpos.shape[1]
        gh, half = drow.shape
        gw = dcol.shape[0]
        for idx in range(cuda.grid(1), D + (gh + gw) * half, cuda.gridsize(1)):
            if idx < D:
                dcls[0, idx] = dpos[0, idx]
            elif idx < D + gh * half:
                r = (idx - D) // half
                k = (idx - D) - r * half
                s = ZERO
                for cc in range(gw):
                    s += dpos[1 + r * gw + cc, k]
                drow[r, k] = s
            else:
                cc = (idx - D - gh * half) // half
                k = (idx - D - gh * half) - cc * half
                s = ZERO
                for r in range(gh):
                    s += dpos[1 + r * gw + cc, half + k]
                dcol[cc, k] = s

    return dict(patches_fwd=patches_fwd, patches_bwd=patches_bwd, tokens_fwd=tokens_fwd,
                tokens_bwd_de=tokens_bwd_de, cls_scatter=cls_scatter, pos2d_fwd=pos2d_fwd,
                pos2d_bwd=pos2d_bwd)


def _masked(dt, tiles: Tiles) -> dict:
    """Masked patch prediction (§4.6): corruption and row gather/scatter/sum."""
    F, ZERO, ONE, HALF, NEG_INF = _scalars(dt)

    # ------------------------------------------------------------------ masked patches (§4.6)
    @cuda.jit
    def corrupt_fwd(e, mask, kind, source, out):
        """Patch corruption of masked patch prediction, rows p of e, out: (R, D), R = B·N:
        out[p] = mask (kind 1), e[source[p]] (kind 2: a random other patch's uncorrupted
        embedding) or e[p] (kinds 0, 3). mask: (D,); kind: (R,) int8; source: (R,)."""
        R, D = out.shape
        for idx in range(cuda.grid(1), R * D, cuda.gridsize(1)):
            p = idx // D
            d = idx - p * D
            k = kind[p]
            if k == 1:
                out[p, d] = mask[d]
            elif k == 2:
                out[p, d] = e[source[p], d]
            else:
                out[p, d] = e[p, d]

    @cuda.jit
    def corrupt_bwd(dout, kind, rptr, rsrc, de):
        """Adjoint of corrupt_fwd for the embeddings: de[p] = dout[p] where p was kept
        (kinds 0, 3), else 0, plus dout[q] of every q that copied p (kind 2). The copies
        of p are rsrc[rptr[p]:rptr[p+1]] (CSR built on the host), so the scatter-add is
        a gather: no atomics, a deterministic sum. dout, de: (R, D)."""
        R, D = de.shape
        for idx in range(cuda.grid(1), R * D, cuda.gridsize(1)):
            p = idx // D
            d = idx - p * D
            k = kind[p]
            acc = dout[p, d] if (k == 0 or k == 3) else ZERO
            for c in range(rptr[p], rptr[p + 1]):
                acc += dout[rsrc[c], d]
            de[p, d] = acc

    @cuda.jit
    def rows_sum(X, rows, out):
        """out (D,) = Σ_k X[rows[k], :], X: (R, D): the [mask] token's gradient, the sum
        over the masked positions. One thread per column (coalesced across threads)."""
        D = out.shape[0]
        for d in range(cuda.grid(1), D, cuda.gridsize(1)):
            acc = ZERO
            for k in range(rows.shape[0]):
                acc += X[rows[k], d]
            out[d] = acc

    @cuda.jit
    def gather_rows(X, rows, out):
        """out[k] = X[rows[k]]: X (R, C) → out (K, C), e.g. the corrupted patches' logits."""
        K, Cc = out.shape
        for idx in range(cuda.grid(1), K * Cc, cuda.gridsize(1)):
            k = idx // Cc
            out[k, idx - k * Cc] = X[rows[k], idx - k * Cc]

    @cuda.jit
    def scatter_rows(Y, rows, out):
        """out[rows[k]] = Y[k]: the adjoint of gather_rows for distinct rows (out zeroed
        first). Y: (K, C), out: (R, C)."""
        K, Cc = Y.shape
        for idx in range(cuda.grid(1), K * Cc, cuda.gridsize(1)):
            k = idx // Cc
            out[rows[k], idx - k * Cc] = Y[k, idx - k * Cc]

    return dict(corrupt_fwd=corrupt_fwd, corrupt_bwd=corrupt_bwd, rows_sum=rows_sum,
                gather_rows=gather_rows, scatter_rows=scatter_rows)


@lru_cache(maxsize=None)
def kernels(dtype, tiles: Tiles = DEFAULT_TILES) -> SimpleNamespace:
    """All kernels (except attention, see :func:`attention_kernels`) for one float dtype
    and tile configuration, as attributes of a namespace. Built and cached on first use."""
    dt = np.dtype(dtype)
    _scalars(dt)                                  # rejects other dtypes
    for name, v in (("row", tiles.row), ("ew", tiles.ew)):
        if v & (v - 1):
            raise ValueError(f"Tiles.{name} must be a power of two, got {v}")
    return SimpleNamespace(**_matmul(dt, tiles), **_elementwise(dt, tiles),
                           **_reductions(dt, tiles), **_row_kernels(dt, tiles),
                           **_embedding(dt, tiles), **_masked(dt, tiles), tiles=tiles, dtype=dt)


def _attn_smem_bytes(T, DW, itemsize):
    """Static shared memory of the largest attention kernel (dK/dV) with tiles of T rows:
    four (T, DW) row tiles (k, v, q, dO), two (T, T+1) score tiles (P, dS), two (T,)
    row vectors (lse, delta)."""
    return (4 * T * DW + 2 * T * (T + 1) + 2 * T) * itemsize


def attention_tile(dtype, dh: int, tiles: Tiles = DEFAULT_TILES) -> tuple[int, int]:
    """(T, G) of the attention kernels for head width ``dh``: T rows (queries or keys)
    per tile and G threads per row.

    G starts at ``tiles.attn_g`` and doubles while a thread's ⌈D_h/G⌉ accumulator
    entries would take more than 128 bytes of registers (the dK/dV kernel holds two such
    rows: float64 at D_h = 128 would otherwise spill). T starts at ``tiles.attn_t`` and
    halves until the kernels' static shared memory fits ``tiles.attn_smem`` (48 KiB, the
    static limit of every GPU): T = 16 for float64 at D_h = 64 or 80, 8 at D_h = 128."""
    isz = np.dtype(dtype).itemsize
    G = tiles.attn_g
    while -(-dh // G) * isz > 128 and 2 * G <= tiles.attn_t:
        G *= 2
    DW = -(-dh // G) * G + 1
    T = tiles.attn_t
    while T > G and _attn_smem_bytes(T, DW, isz) > tiles.attn_smem:
        T //= 2
    return T, G


@lru_cache(maxsize=None)
def attention_kernels(dtype, dh: int, tiles: Tiles = DEFAULT_TILES) -> SimpleNamespace:
    """Fused multi-head attention kernels for one dtype and head width ``dh`` (D_h, a
    compile-time constant: every loop over the head has a constant trip count and every
    per-thread accumulator a constant size, so they live in registers, not in local
    memory).

    Layout: qkv (B, N, 3D) from the fused projection, columns [q | k | v], head h at
    columns h·D_h … of each part; out, dout (B, N, D) with the heads concatenated (so
    split/merge of heads is pure indexing, no transposes are materialised); lse, delta
    (B, H, N). Scale s = 1/√D_h.

    Tiling (flash-attention, all three kernels alike): a block of NT = T·G threads owns
    T rows (queries, or keys for dK/dV) and sweeps the other side in tiles of T rows
    staged in shared memory. Thread t serves row i = t mod T as member g = t div T of
    its row's G threads: it computes the T/G score entries (i, g + G·k) of each tile and
    owns the R = ⌈D_h/G⌉ accumulator entries (i, g + G·r) in registers. Shared row
    tiles are padded to an odd width DW against bank conflicts.
    """
    dt = np.dtype(dtype)
    F = numba.from_dtype(dt)
    c = dt.type
    ZERO, ONE, NEG_INF = c(0.0), c(1.0), c(-np.inf)
    DH = int(dh)
    T, G = attention_tile(dt, DH, tiles)
    NT = T * G
    R = -(-DH // G)               # accumulator entries per thread
    KT = T // G                   # score entries per thread and tile
    DW = G * R + 1                # padded row width of the shared row tiles
    TW = T + 1                    # padded row width of the shared score tiles
    if T % G:
        raise ValueError(f"attention tile T={T} must be a multiple of Tiles.attn_g={G}")

    @cuda.jit(device=True)
    def stage_tile(X, Y, b, r0, xo, yo, N, Xs, Ys, t):
        """Xs[r, d] = X[b, r0 + r, xo + d] and Ys[r, d] = Y[b, r0 + r, yo + d] for the T
        rows of a tile and d < D_h, zeros past row N; by the NT threads of the block."""
        for e in range(t, T * DH, NT):
            r = e // DH
            d = e - r * DH
            ok = r0 + r < N
            Xs[r, d] = X[b, r0 + r, xo + d] if ok else ZERO
            Ys[r, d] = Y[b, r0 + r, yo + d] if ok else ZERO

    @cuda.jit(device=True)
    def stage_rows(lse, delta, b, h, r0, N, Ls, Dl, t):
        """Ls[r] = lse[b, h, r0 + r], Dl[r] = delta[b, h, r0 + r] (zeros past N)."""
        for r in range(t, T, NT):
            ok = r0 + r < N
            Ls[r] = lse[b, h, r0 + r] if ok else ZERO
            Dl[r] = delta[b, h, r0 + r] if ok else ZERO

    @cuda.jit
    def attn_fwd(qkv, out, lse, N, H, scale):
        """out[b, i, head h] = Σ_j softmax_j(s·q_i·k_j) v_j and lse[b, h, i] = log Σ_j
        exp(s·q_i·k_j), without ever forming the N×N matrix. Grid (⌈N/T⌉, H, B)."""
        # Online softmax (flash attention): per key tile the row owner (g = 0) updates
        # the running max m and denominator l, turns the scores into p = exp(s − m) in
        # place and publishes the rescale factor exp(m_old − m_new) for its row.
        Qs = cuda.shared.array((T, DW), F)
        Ks = cuda.shared.array((T, DW), F)
        Vs = cuda.shared.array((T, DW), F)
        Ss = cuda.shared.array((T, TW), F)
        Cs = cuda.shared.array(T, F)
        o = cuda.local.array(R, F)
        t = cuda.threadIdx.x
        i = t % T
        g = t // T
        h = cuda.blockIdx.y
        b = cuda.blockIdx.z
        i0 = cuda.blockIdx.x * T
        D = H * DH
        qo = h * DH
        ko = D + qo
        vo = 2 * D + qo
        for e in range(t, T * DH, NT):                 # the (scaled) query tile
            ii = e // DH
            d = e - ii * DH
            Qs[ii, d] = qkv[b, i0 + ii, qo + d] * scale if i0 + ii < N else ZERO
        for r in range(R):
            o[r] = ZERO
        m = NEG_INF
        l = ZERO
        for j0 in range(0, N, T):
            stage_tile(qkv, qkv, b, j0, ko, vo, N, Ks, Vs, t)   # key/value tile
            cuda.syncthreads()
            for k in range(KT):
                jj = g + G * k
                s = ZERO
                for d in range(DH):
                    s += Qs[i, d] * Ks[jj, d]
                Ss[i, jj] = s if j0 + jj < N else NEG_INF
            cuda.syncthreads()
            if g == 0:
                mt = m
                for jj in range(T):
                    if Ss[i, jj] > mt:
                        mt = Ss[i, jj]
                corr = math.exp(m - mt)                # 0 on the first tile (m = −inf)
                l *= corr
                for jj in range(T):
                    p = math.exp(Ss[i, jj] - mt)
                    Ss[i, jj] = p
                    l += p
                Cs[i] = corr
                m = mt
            cuda.syncthreads()
            corr = Cs[i]
            for r in range(R):
                o[r] *= corr
            for jj in range(T):
                p = Ss[i, jj]
                for r in range(R):
                    o[r] += p * Vs[jj, g + G * r]
            cuda.syncthreads()                         # before the next tile overwrites
        if g == 0:
            Cs[i] = ONE / l
            if i0 + i < N:
                lse[b, h, i0 + i] = m + math.log(l)
        cuda.syncthreads()
        inv = Cs[i]
        if i0 + i < N:
            for r in range(R):
                d = g + G * r
                if d < DH:
                    out[b, i0 + i, qo + d] = o[r] * inv

    @cuda.jit
    def attn_probs(qkv, lse, P, N, H, scale):
        """P[b, h, i, j] = exp(s·q_i·k_j − lse[b, h, i]): the (B, H, N, N) attention
        matrices, recomputed from the forward's log-sum-exp (only for inspection)."""
        # one thread per matrix entry, grid-stride
        B = P.shape[0]
        D = H * DH
        for idx in range(cuda.grid(1), B * H * N * N, cuda.gridsize(1)):
            j = idx % N
            i = (idx // N) % N
            h = (idx // (N * N)) % H
            b = idx // (N * N * H)
            s = ZERO
            for d in range(DH):
                s += qkv[b, i, h * DH + d] * qkv[b, j, D + h * DH + d]
            P[b, h, i, j] = math.exp(s * scale - lse[b, h, i])

    @cuda.jit
    def attn_bwd_delta(dout, out, delta, N, H):
        """delta[b, h, i] = dO_i · O_i  (= Σ_j P_ij dP_ij, the softmax-backward row term)."""
        # one thread per (b, h, i), grid-stride
        B = dout.shape[0]
        for idx in range(cuda.grid(1), B * H * N, cuda.gridsize(1)):
            i = idx % N
            h = (idx // N) % H
            b = idx // (N * H)
            s = ZERO
            for d in range(DH):
                s += dout[b, i, h * DH + d] * out[b, i, h * DH + d]
            delta[b, h, i] = s

    @cuda.jit
    def attn_bwd_dkdv(qkv, dout, lse, delta, dqkv, N, H, scale):
        """dk_j = s·Σ_i dS_ij q_i and dv_j = Σ_i P_ij dO_i, written into the k and v
        columns of dqkv (B, N, 3D); P_ij = exp(s q_i·k_j − lse_i), dS_ij = P_ij(dO_i·v_j
        − delta_i) are recomputed. Grid (⌈N/T⌉, H, B), a block per tile of T keys."""
        # Flash-attention-2 dK/dV: the block's keys and values stay in shared memory;
        # queries (q, dO, lse, delta) are swept in tiles. No atomics.
        Ks = cuda.shared.array((T, DW), F)
        Vs = cuda.shared.array((T, DW), F)
        Qs = cuda.shared.array((T, DW), F)
        dOs = cuda.shared.array((T, DW), F)
        Ps = cuda.shared.array((T, TW), F)
        dSs = cuda.shared.array((T, TW), F)
        Ls = cuda.shared.array(T, F)
        Dl = cuda.shared.array(T, F)
        dk = cuda.local.array(R, F)
        dv = cuda.local.array(R, F)
        t = cuda.threadIdx.x
        j = t % T
        g = t // T
        h = cuda.blockIdx.y
        b = cuda.blockIdx.z
        j0 = cuda.blockIdx.x * T
        D = H * DH
        qo = h * DH
        ko = D + qo
        vo = 2 * D + qo
        stage_tile(qkv, qkv, b, j0, ko, vo, N, Ks, Vs, t)      # the block's keys
        for r in range(R):
            dk[r] = ZERO
            dv[r] = ZERO
        for i0 in range(0, N, T):
            stage_tile(qkv, dout, b, i0, qo, qo, N, Qs, dOs, t)   # query tile
            stage_rows(lse, delta, b, h, i0, N, Ls, Dl, t)
            cuda.syncthreads()
            for k in range(KT):
                ii = g + G * k
                s = ZERO
                dp = ZERO
                for d in range(DH):
                    s += Qs[ii, d] * Ks[j, d]
                    dp += dOs[ii, d] * Vs[j, d]
                p = math.exp(s * scale - Ls[ii]) if i0 + ii < N else ZERO
                Ps[j, ii] = p
                dSs[j, ii] = p * (dp - Dl[ii])
            cuda.syncthreads()
            for ii in range(T):
                p = Ps[j, ii]
                ds = dSs[j, ii]
                for r in range(R):
                    dv[r] += p * dOs[ii, g + G * r]
                    dk[r] += ds * Qs[ii, g + G * r]
            cuda.syncthreads()
        if j0 + j < N:
            for r in range(R):
                d = g + G * r
                if d < DH:
                    dqkv[b, j0 + j, ko + d] = dk[r] * scale
                    dqkv[b, j0 + j, vo + d] = dv[r]

    @cuda.jit
    def attn_bwd_dq(qkv, dout, lse, delta, dqkv, N, H, scale):
        """dq_i = s·Σ_j dS_ij k_j, written into the q columns of dqkv (B, N, 3D).
        Grid (⌈N/T⌉, H, B), a block per tile of T queries."""
        # the block's q, dO, lse, delta stay in shared memory; keys/values swept in tiles
        Qs = cuda.shared.array((T, DW), F)
        dOs = cuda.shared.array((T, DW), F)
        Ks = cuda.shared.array((T, DW), F)
        Vs = cuda.shared.array((T, DW), F)
        dSs = cuda.shared.array((T, TW), F)
        Ls = cuda.shared.array(T, F)
        Dl = cuda.shared.array(T, F)
        dq = cuda.local.array(R, F)
        t = cuda.threadIdx.x
        i = t % T
        g = t // T
        h = cuda.blockIdx.y
        b = cuda.blockIdx.z
        i0 = cuda.blockIdx.x * T
        D = H * DH
        qo = h * DH
        ko = D + qo
        vo = 2 * D + qo
        stage_tile(qkv, dout, b, i0, qo, qo, N, Qs, dOs, t)       # the block's queries
        stage_rows(lse, delta, b, h, i0, N, Ls, Dl, t)
        for r in range(R):
            dq[r] = ZERO
        for j0 in range(0, N, T):
            stage_tile(qkv, qkv, b, j0, ko, vo, N, Ks, Vs, t)
            cuda.syncthreads()
            for k in range(KT):
                jj = g + G * k
                s = ZERO
                dp = ZERO
                for d in range(DH):
                    s += Qs[i, d] * Ks[jj, d]
                    dp += dOs[i, d] * Vs[jj, d]
                ok = j0 + jj < N
                dSs[i, jj] = math.exp(s * scale - Ls[i]) * (dp - Dl[i]) if ok else ZERO
            cuda.syncthreads()
            for jj in range(T):
                ds = dSs[i, jj]
                for r in range(R):
                    dq[r] += ds * Ks[jj, g + G * r]
            cuda.syncthreads()
        if i0 + i < N:
            for r in range(R):
                d = g + G * r
                if d < DH:
                    dqkv[b, i0 + i, qo + d] = dq[r] * scale

    return SimpleNamespace(attn_fwd=attn_fwd, attn_probs=attn_probs,
                           attn_bwd_delta=attn_bwd_delta, attn_bwd_dkdv=attn_bwd_dkdv,
                           attn_bwd_dq=attn_bwd_dq, T=T, threads=NT, dh=DH)
