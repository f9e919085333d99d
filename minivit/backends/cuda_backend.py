"""The CUDA backend: every method of :class:`~minivit.backends.numpy_ops.NumpyBackend`,
on ``numba.cuda`` device arrays.

Data stays where it lives: ``asarray`` uploads (parameters once, a batch per step),
``to_host`` copies down, and everything in between — activations, caches, gradients,
optimizer state — is a device array. The only device→host copies a training step makes
are the scalars the API returns as Python numbers (the loss; ``sum_squares`` and
``all_finite`` when clipping or checking), plus ``attention_probs`` when asked for.

Every array a method returns comes from a :class:`Workspace`: device buffers keyed by
(shape, dtype) that go back to a free list when the last handle to them is dropped, so
after the first two steps (the previous step's gradients are still held while the new
ones are computed) a training step allocates no device memory.

The kernels and what each computes are in :mod:`minivit.backends.cuda_kernels`; this
module only checks shapes, picks launch configurations and manages buffers.
"""
from __future__ import annotations

import math
import weakref

import numba
import numpy as np
from numba import cuda

from .. import ops
from ..errors import ConfigError
from ..ops.losses import check_labels
from ..ops.masked import MASK, RANDOM
from .cuda_kernels import (ACT_GELU_ERF, ACT_GELU_TANH, ACT_NONE, DEFAULT_TILES, RED_NONFINITE,
                           RED_SUM, RED_SUMSQ, Tiles, attention_kernels, kernels)

_ACTS = {"tanh": ACT_GELU_TANH, "erf": ACT_GELU_ERF}
# Grid-stride kernels: enough blocks to fill any GPU. Under the CUDA simulator (every
# thread a Python thread) two blocks keep the tests fast and still exercise the strides.
_MAX_EW_BLOCKS = 2 if numba.config.ENABLE_CUDASIM else 4096
_MAX_ROW_BLOCKS = 2 if numba.config.ENABLE_CUDASIM else 2 ** 30   # one block per row


def is_device_array(x) -> bool:
    """True for a numba.cuda device array (or the simulator's stand-in)."""
    return bool(getattr(x, "__cuda_ndarray__", False))


def _cdiv(a, b):
    return (a + b - 1) // b


class Workspace:
    """A pool of device buffers keyed by (shape, dtype).

    ``get`` returns a fresh *handle* (a device-array object viewing the same memory) on a
    pooled buffer; when the handle is garbage-collected the buffer returns to the free
    list. A buffer is therefore reused exactly when nobody holds its previous handle any
    more — the model dropping last step's cache and gradients frees them. Contents of a
    returned buffer are undefined: kernels overwrite every element.

    Caveat: a *view* taken of a handle (slicing, reshape) does not keep the buffer out of
    the pool; keep the handle itself alive while using views of it.
    """

    def __init__(self):
        self._free: dict[tuple, list] = {}
        self.allocations = 0        # device allocations made so far
        self.bytes = 0              # bytes allocated so far

    def get(self, shape, dtype):
        """A device buffer of ``shape`` and ``dtype`` (contents undefined)."""
        shape = tuple(int(s) for s in shape)
        dt = np.dtype(dtype)
        free = self._free.setdefault((shape, dt.str), [])
        if free:
            master = free.pop()
        else:
            master = cuda.device_array(shape, dtype=dt)
            self.allocations += 1
            self.bytes += int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        handle = master.reshape(shape)          # a new object on the same memory
        fin = weakref.finalize(handle, free.append, master)
        fin.atexit = False
        return handle

    def release(self):
        """Free the idle buffers (e.g. after a batch of a one-off shape); buffers still
        in use return to the pool as usual when dropped."""
        for free in self._free.values():
            free.clear()

    def free_count(self) -> int:
        """Number of buffers currently idle in the pool."""
        return sum(len(v) for v in self._free.values())


class CudaBackend:
    """GPU backend on ``numba.cuda`` device arrays, float32 (training) or float64
    (gradient checks).

    tiles: a :class:`~minivit.backends.cuda_kernels.Tiles` (compile-time tile sizes);
    the default suits a real GPU, the tests also use tiny tiles under the simulator.
    ``workspace`` is the buffer pool every returned array comes from.
    """

    name = "cuda"

    def __init__(self, tiles: Tiles | None = None):
        if not cuda.is_available():
            raise ConfigError("the cuda backend needs an NVIDIA GPU with a working CUDA "
                              "driver (or NUMBA_ENABLE_CUDASIM=1 for the slow simulator); "
                              "none was found — use backend='numpy' or 'numba'")
        self.tiles = DEFAULT_TILES if tiles is None else Tiles(*tiles)
        self.workspace = Workspace()
        self._dummies: dict = {}
        # A launch with fewer blocks than this leaves multiprocessors idle: the weight
        # gradient (split K) and column sums over long R (row chunks) are then cut into
        # more blocks. Two per SM on a GPU; 1 under the simulator (never split there,
        # unless a test asks, to keep the Python-thread simulation fast).
        self.min_blocks = 1 if numba.config.ENABLE_CUDASIM else \
            2 * int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
        # Shortest slice of K (split-K matmul) and of rows (chunked column sums) worth a
        # block of its own: shorter, the partials' extra traffic outweighs the parallelism.
        self.min_split = 256

    # ------------------------------------------------------------------ helpers
    def _k(self, dtype):
        return kernels(np.dtype(dtype), self.tiles)

    def _empty(self, shape, dtype):
        return self.workspace.get(shape, dtype)

    def _dummy(self, ndim, dtype):
        """A persistent 1-element array of ``ndim`` dims for unused kernel arguments."""
        key = (ndim, np.dtype(dtype).str)
        if key not in self._dummies:
            self._dummies[key] = cuda.device_array((1,) * ndim, dtype=np.dtype(dtype))
        return self._dummies[key]

    @staticmethod
    def _check(x, what="array"):
        if not is_device_array(x):
            raise TypeError(f"cuda backend: {what} must be a device array (use "
                            f"backend.asarray), got {type(x).__name__}")
        if not x.is_c_contiguous():
            raise ValueError(f"cuda backend: {what} must be C-contiguous")
        return x

    @staticmethod
    def _flat(x):
        """Contiguous device array → 1-D view (n,)."""
        return x.reshape(int(x.size))

    @staticmethod
    def _rows(x):
        """Contiguous (..., D) device array → 2-D view (R, D)."""
        d = tuple(x.shape)[-1]
        return x.reshape(int(x.size) // d if d else 0, d)

    def _ew(self, n):
        """Launch configuration of a grid-stride elementwise kernel over n items."""
        ew = self.tiles.ew
        return max(1, min(_cdiv(n, ew), _MAX_EW_BLOCKS)), ew

    def _reduce(self, x, mode) -> float:
        """Σ f(x) over a device array as a Python float (one scalar copied down)."""
        k = self._k(x.dtype)
        xf = self._flat(self._check(x))
        ew = self.tiles.ew
        g = max(1, min(_cdiv(xf.shape[0], ew), ew))
        part = self._empty((g,), x.dtype)
        out = self._empty((1,), x.dtype)
        k.reduce[g, ew](xf, part, mode)
        k.reduce[1, ew](part, out, RED_SUM)
        return float(out.copy_to_host()[0])

    # ------------------------------------------------------------------ glue
    def asarray(self, x, dtype=None):
        """Host array → device array of ``dtype`` (upload into a pooled buffer). A device
        array of the right dtype passes through unchanged (no copy); of another dtype it
        is cast on the device."""
        if is_device_array(x):
            if dtype is None or np.dtype(dtype) == x.dtype:
                return x
            self._check(x)
            out = self._empty(x.shape, dtype)
            k = self._k(dtype)
            g, b = self._ew(int(x.size))
            k.copy[g, b](self._flat(x), self._flat(out))
            return out
        h = np.ascontiguousarray(x, dtype=dtype)
        out = self._empty(h.shape, h.dtype)
        if h.size:
            out.copy_to_device(h)
        return out

    def to_host(self, x):
        """Device array → numpy array (copies down); a host array passes through."""
        if is_device_array(x):
            return x.copy_to_host()
        return np.asarray(x)

    def zeros(self, shape, dtype):
        """A zero-filled device array of ``shape``, ``dtype``."""
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        out = self._empty(shape, dtype)
        n = int(np.prod(shape, dtype=np.int64))
        if n:
            g, b = self._ew(n)
            self._k(dtype).fill[g, b](self._flat(out), np.dtype(dtype).type(0))
        return out

    def zeros_like(self, x):
        """Zeros of x's shape and dtype."""
        return self.zeros(tuple(x.shape), x.dtype)

    def copy(self, x):
        """A device copy of x (any shape)."""
        self._check(x)
        out = self._empty(x.shape, x.dtype)
        if x.size:
            g, b = self._ew(int(x.size))
            self._k(x.dtype).copy[g, b](self._flat(x), self._flat(out))
        return out

    def add(self, a, b):
        """a + b, same shape: the residual connections of Eq. 2–3."""
        self._check(a), self._check(b)
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"add: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        out = self._empty(a.shape, a.dtype)
        g, bl = self._ew(int(a.size))
        self._k(a.dtype).add[g, bl](self._flat(a), self._flat(b), self._flat(out))
        return out

    def take_cls(self, z):
        """z: (B, N+1, D) → the class token z[:, 0]: (B, D) (Eq. 4 reads only it)."""
        self._check(z)
        B, _, D = (int(s) for s in z.shape)
        out = self._empty((B, D), z.dtype)
        g, b = self._ew(B * D)
        self._k(z.dtype).copy2d[g, b](z[:, 0, :], out)
        return out

    def take_cls_backward(self, dy, z_shape):
        """dy: (B, D) → dz: (B, N+1, D), zero everywhere but the class token."""
        self._check(dy)
        z_shape = tuple(int(s) for s in z_shape)
        dz = self._empty(z_shape, dy.dtype)
        g, b = self._ew(int(np.prod(z_shape)))
        self._k(dy.dtype).cls_scatter[g, b](dy, dz)
        return dz

    def take_patch_tokens(self, z):
        """z: (B, N+1, D) → the patch tokens z[:, 1:]: (B, N, D) (the MPP head reads them)."""
        self._check(z)
        B, N1, D = (int(s) for s in z.shape)
        out = self._empty((B, N1 - 1, D), z.dtype)
        if out.size:
            g, b = self._ew(int(out.size))
            self._k(z.dtype).tokens_bwd_de[g, b](z, out)    # the same shift: out[b, n] = z[b, n+1]
        return out

    def take_patch_tokens_backward(self, dy, z_shape):
        """dy: (B, N, D) → dz: (B, N+1, D) = z_shape, zero on the class token."""
        self._check(dy)
        z_shape = tuple(int(s) for s in z_shape)
        dz = self._empty(z_shape, dy.dtype)
        D = z_shape[2]
        g, b = self._ew(int(np.prod(z_shape)))
        # tokens_fwd with a zero class token and no position embedding is exactly this
        self._k(dy.dtype).tokens_fwd[g, b](dy, self.zeros((D,), dy.dtype),
                                           self._dummy(2, dy.dtype), dz, False)
        return dz

    # ------------------------------------------------------------------ Eq. 1
    def patches_forward(self, images, P, S=None):
        """images: (B, H, W, C) → patches: (B, N, P·P·C), (h, w, c) order, and the cache."""
        S = P if S is None else S
        self._check(images, "images")
        B, H, W, C = (int(s) for s in images.shape)
        gh, gw = ops.patch_grid(H, W, P, S)
        out = self._empty((B, gh * gw, P * P * C), images.dtype)
        g, b = self._ew(int(out.size))
        self._k(images.dtype).patches_fwd[g, b](images, out, P, S, gw)
        return out, ((B, H, W, C), P, S)

    def patches_backward(self, dpatches, cache):
        """dpatches: (B, N, P·P·C) → dimages: (B, H, W, C), overlaps summed."""
        shape, P, S = cache
        self._check(dpatches)
        gh, gw = ops.patch_grid(shape[1], shape[2], P, S)
        dimg = self._empty(shape, dpatches.dtype)
        g, b = self._ew(int(dimg.size))
        self._k(dpatches.dtype).patches_bwd[g, b](dpatches, dimg, P, S, gh, gw)
        return dimg

    def tokens_forward(self, e, cls, pos=None):
        """e: (B, N, D); cls: (1, 1, D); pos: (1, N+1, D) or None → z0: (B, N+1, D), cache."""
        self._check(e), self._check(cls)
        B, N, D = (int(s) for s in e.shape)
        z = self._empty((B, N + 1, D), e.dtype)
        posv = self._check(pos).reshape(N + 1, D) if pos is not None else self._dummy(2, e.dtype)
        g, b = self._ew(int(z.size))
        self._k(e.dtype).tokens_fwd[g, b](e, cls.reshape(D), posv, z, pos is not None)
        return z, (pos is not None)

    def tokens_backward(self, dz, cache):
        """dz: (B, N+1, D) → de: (B, N, D), dcls: (1, 1, D), dpos: (1, N+1, D) or None."""
        has_pos = cache
        self._check(dz)
        B, N1, D = (int(s) for s in dz.shape)
        k = self._k(dz.dtype)
        de = self._empty((B, N1 - 1, D), dz.dtype)
        if de.size:
            g, b = self._ew(int(de.size))
            k.tokens_bwd_de[g, b](dz, de)
        dcls = self._empty((1, 1, D), dz.dtype)
        self._col_sum(dz[:, 0, :], dcls.reshape(D))
        dpos = None
        if has_pos:
            dpos = self._empty((1, N1, D), dz.dtype)
            self._col_sum(dz.reshape(B, N1 * D), dpos.reshape(N1 * D))
        return de, dcls, dpos

    def pos2d_forward(self, pos_cls, row, col):
        """pos_cls: (1, D); row: (G_h, D/2); col: (G_w, D/2) → E_pos: (1, 1+G_h·G_w, D), cache."""
        gh, half = (int(s) for s in row.shape)
        gw = int(col.shape[0])
        D = 2 * half
        pos = self._empty((1, 1 + gh * gw, D), row.dtype)
        g, b = self._ew(int(pos.size))
        self._k(row.dtype).pos2d_fwd[g, b](pos_cls, row, col, pos.reshape(1 + gh * gw, D))
        return pos, (gh, gw, half)

    def pos2d_backward(self, dpos, cache):
        """dpos: (1, 1+G_h·G_w, D) → dpos_cls: (1, D), drow: (G_h, D/2), dcol: (G_w, D/2)."""
        gh, gw, half = cache
        D = 2 * half
        dt = dpos.dtype
        dcls = self._empty((1, D), dt)
        drow = self._empty((gh, half), dt)
        dcol = self._empty((gw, half), dt)
        g, b = self._ew(D + (gh + gw) * half)
        self._k(dt).pos2d_bwd[g, b](dpos.reshape(1 + gh * gw, D), dcls, drow, dcol)
        return dcls, drow, dcol

    # ------------------------------------------------------------------ dense layers
    def _matmul(self, A, B, C, trans_a=False, trans_b=False, bias=None, act=ACT_NONE,
                hpre=None):
        """C (M, N) = act(op(A) op(B) + bias) with the tiled kernel (2-D device views).
        A product with too few output tiles to fill the GPU and a long K (the weight
        gradient xᵀ dy: M × N = D_in × D_out, K = every token) is split along K into S
        slices computed side by side, whose partial products are then summed."""
        k = self._k(C.dtype)
        M, N = (int(s) for s in C.shape)
        K = int(A.shape[0] if trans_a else A.shape[1])
        if M == 0 or N == 0:
            return C
        t = self.tiles
        grid = (_cdiv(N, k.BN), _cdiv(M, k.BM))
        S, kc = 1, max(K, 1)
        if bias is None and act == ACT_NONE and C.is_c_contiguous():
            # slices a whole number of BK-deep slabs long
            S, kc = self._splits(grid[0] * grid[1], K, align=t.mm_bk)
        out = C if S == 1 else self._empty((S * M, N), C.dtype)
        k.matmul[grid + (S,), (t.mm_tx, t.mm_ty)](
            A, B, bias if bias is not None else self._dummy(1, C.dtype), out,
            hpre if hpre is not None else self._dummy(2, C.dtype),
            M, N, K, kc, bool(trans_a), bool(trans_b), bias is not None, act)
        if S > 1:
            self._col_sum(out.reshape(S, M * N), C.reshape(M * N))
        return C

    def _splits(self, blocks, length, align=1):
        """Cut a reduction of ``length`` terms into pieces so that a launch of ``blocks``
        blocks per piece reaches ``min_blocks``, each piece at least ``min_split`` long
        and a multiple of ``align``: returns (pieces, terms per piece, the last one
        shorter); (1, length) when it is not worth splitting."""
        if blocks >= self.min_blocks or length < 2 * self.min_split:
            return 1, max(length, 1)
        n = min(_cdiv(self.min_blocks, blocks), length // self.min_split)
        per = _cdiv(_cdiv(length, n), align) * align
        return _cdiv(length, per), per

    def _col_sum(self, X, out):
        """out (C,) = Σ_r X[r, :], X: (R, C) device view. Narrow and long (few column
        blocks, many rows) it sums G row chunks side by side, then the G partials."""
        t = self.tiles
        R, C = (int(s) for s in X.shape)
        if C == 0:
            return out
        k = self._k(out.dtype)
        cols = _cdiv(C, t.col_x)
        G, rc = self._splits(cols, R)
        part = out.reshape(1, C) if G == 1 else self._empty((G, C), out.dtype)
        k.col_sum[(cols, G), (t.col_x, t.col_y)](X, part, rc)
        if G > 1:
            k.col_sum[(cols, 1), (t.col_x, t.col_y)](part, out.reshape(1, C), G)
        return out

    def linear_forward(self, x, W, b=None):
        """x: (..., D_in); W: (D_in, D_out); b: (D_out,) or None → y: (..., D_out), cache."""
        self._check(x), self._check(W)
        Dout = int(W.shape[1])
        y = self._empty(tuple(x.shape)[:-1] + (Dout,), x.dtype)
        self._matmul(self._rows(x), W, self._rows(y), bias=b)
        return y, (x, W, b is not None)

    def linear_backward(self, dy, cache, need_dx=True):
        """dy: (..., D_out) → dx: (..., D_in) (None unless need_dx), dW: (D_in, D_out),
        db: (D_out,) (None without bias). dW = xᵀ dy (transposed-A matmul), dx = dy Wᵀ
        (transposed-B matmul), db = column sums of dy."""
        x, W, has_b = cache
        self._check(dy)
        x2, dy2 = self._rows(x), self._rows(dy)
        dW = self._matmul(x2, dy2, self._empty(W.shape, dy.dtype), trans_a=True)
        db = self._col_sum(dy2, self._empty((dy2.shape[1],), dy.dtype)) if has_b else None
        dx = None
        if need_dx:
            dx = self._empty(x.shape, dy.dtype)
            self._matmul(dy2, W, self._rows(dx), trans_b=True)
        return dx, dW, db

    def linear_gelu_forward(self, x, W, b, approximate="tanh"):
        """fc1 of the MLP followed by GELU, fused: the bias and GELU are the matmul's
        epilogue. x: (..., D); W: (D, M); b: (M,) → GELU(x W + b): (..., M), cache (the
        pre-activation is kept for the backward)."""
        act = self._act(approximate)
        self._check(x), self._check(W)
        shape = tuple(x.shape)[:-1] + (int(W.shape[1]),)
        h = self._empty(shape, x.dtype)
        u = self._empty(shape, x.dtype)
        self._matmul(self._rows(x), W, self._rows(u), bias=b, act=act, hpre=self._rows(h))
        return u, ((x, W, b is not None), (h, act))

    def linear_gelu_backward(self, du, cache, need_dx=True):
        """du: (..., M) → dx: (..., D), dW: (D, M), db: (M,)."""
        c1, c2 = cache
        return self.linear_backward(self.gelu_backward(du, c2), c1, need_dx)

    # ------------------------------------------------------------------ LayerNorm
    def layernorm_forward(self, x, gamma, beta, eps=1e-6):
        """x: (..., D); gamma, beta: (D,) → y: (..., D), cache (x, per-row mean and 1/σ)."""
        self._check(x)
        x2 = self._rows(x)
        R, D = (int(s) for s in x2.shape)
        y = self._empty(x.shape, x.dtype)
        mean = self._empty((R,), x.dtype)
        rstd = self._empty((R,), x.dtype)
        c = x.dtype.type
        if R:
            self._k(x.dtype).layernorm_fwd[min(R, _MAX_ROW_BLOCKS), self.tiles.row](
                x2, gamma, beta, c(eps), c(1.0 / D), self._rows(y), mean, rstd)
        return y, (x, mean, rstd, gamma)

    def layernorm_backward(self, dy, cache):
        """dy: (..., D) → dx: (..., D), dgamma: (D,), dbeta: (D,)."""
        x, mean, rstd, gamma = cache
        self._check(dy)
        k = self._k(dy.dtype)
        x2, dy2 = self._rows(x), self._rows(dy)
        R, D = (int(s) for s in x2.shape)
        dx = self._empty(x.shape, dy.dtype)
        dgamma = self._empty((D,), dy.dtype)
        dbeta = self._empty((D,), dy.dtype)
        if R:
            k.layernorm_bwd[min(R, _MAX_ROW_BLOCKS), self.tiles.row](dy2, x2, mean, rstd, gamma,
                                               dy.dtype.type(1.0 / D), self._rows(dx))
        t = self.tiles
        cols = _cdiv(D, t.col_x)
        G, rc = self._splits(cols, R)      # row chunks, as in _col_sum
        # one chunk writes the gradients themselves; several, partials summed after
        pg, pb = ((dgamma.reshape(1, D), dbeta.reshape(1, D)) if G == 1 else
                  (self._empty((G, D), dy.dtype), self._empty((G, D), dy.dtype)))
        k.ln_param_grads[(cols, G), (t.col_x, t.col_y)](dy2, x2, mean, rstd, pg, pb, rc)
        if G > 1:
            self._col_sum(pg, dgamma)
            self._col_sum(pb, dbeta)
        return dx, dgamma, dbeta

    # ------------------------------------------------------------------ activations
    @staticmethod
    def _act(approximate):
        if approximate not in _ACTS:
            raise ValueError(f"approximate must be 'tanh' or 'erf', got {approximate!r}")
        return _ACTS[approximate]

    def gelu_forward(self, x, approximate="tanh"):
        """x: (...) → GELU(x): (...), cache (x and the form). approximate: "tanh" | "erf"."""
        act = self._act(approximate)
        self._check(x)
        out = self._empty(x.shape, x.dtype)
        g, b = self._ew(int(x.size))
        self._k(x.dtype).gelu_fwd[g, b](self._flat(x), self._flat(out), act)
        return out, (x, act)

    def gelu_backward(self, dy, cache):
        """dy: (...) → dx: (...)."""
        x, act = cache
        self._check(dy)
        dx = self._empty(x.shape, dy.dtype)
        g, b = self._ew(int(x.size))
        self._k(dy.dtype).gelu_bwd[g, b](self._flat(dy), self._flat(x), self._flat(dx), act)
        return dx

    def tanh_forward(self, x):
        """x: (...) → tanh(x): (...), cache (the output)."""
        self._check(x)
        y = self._empty(x.shape, x.dtype)
        g, b = self._ew(int(x.size))
        self._k(x.dtype).tanh_fwd[g, b](self._flat(x), self._flat(y))
        return y, y

    def tanh_backward(self, dy, cache):
        """dy: (...) → dx = dy·(1 − tanh²): (...)."""
        y = cache
        self._check(dy)
        dx = self._empty(y.shape, dy.dtype)
        g, b = self._ew(int(y.size))
        self._k(dy.dtype).tanh_bwd[g, b](self._flat(dy), self._flat(y), self._flat(dx))
        return dx

    # ------------------------------------------------------------------ attention
    def _attn(self, dtype, Dh):
        """The attention kernels specialised for head width D_h (compiled on first use)."""
        return attention_kernels(np.dtype(dtype), int(Dh), self.tiles)

    def mhsa_core_forward(self, qkv, H):
        """qkv: (B, N, 3D) from the fused projection → out: (B, N, D) (heads concatenated,
        before U_msa), cache. Fused flash-style kernel, scale 1/√D_h; the (B, H, N, N)
        matrix is never stored — the cache keeps the per-row log-sum-exp (B, H, N)."""
        self._check(qkv, "qkv")
        B, N, D3 = (int(s) for s in qkv.shape)
        if D3 % 3 or (D3 // 3) % H:
            raise ValueError(f"qkv width {D3} is not 3·D with D divisible by H={H}")
        D = D3 // 3
        Dh = D // H
        out = self._empty((B, N, D), qkv.dtype)
        lse = self._empty((B, H, N), qkv.dtype)
        scale = qkv.dtype.type(1.0 / math.sqrt(Dh))
        ak = self._attn(qkv.dtype, Dh)
        if N:
            ak.attn_fwd[(_cdiv(N, ak.T), H, B), ak.threads](qkv, out, lse, N, H, scale)
        return out, {"qkv": qkv, "out": out, "lse": lse, "H": H, "scale": scale}

    def mhsa_core_backward(self, dout, cache):
        """dout: (B, N, D) → dqkv: (B, N, 3D) in the fused [q | k | v] layout."""
        self._check(dout)
        qkv, out, lse, H, scale = (cache[k] for k in ("qkv", "out", "lse", "H", "scale"))
        B, N, D3 = (int(s) for s in qkv.shape)
        Dh = D3 // 3 // H
        ak = self._attn(qkv.dtype, Dh)
        delta = self._empty((B, H, N), qkv.dtype)
        dqkv = self._empty(qkv.shape, qkv.dtype)
        if N:
            g, b = self._ew(B * H * N)
            ak.attn_bwd_delta[g, b](dout, out, delta, N, H)
            grid = (_cdiv(N, ak.T), H, B)
            ak.attn_bwd_dkdv[grid, ak.threads](qkv, dout, lse, delta, dqkv, N, H, scale)
            ak.attn_bwd_dq[grid, ak.threads](qkv, dout, lse, delta, dqkv, N, H, scale)
        return dqkv

    def attention_probs(self, cache):
        """The attention matrices of a ``mhsa_core_forward``: (B, H, N, N) host array,
        recomputed on the device from q, k and the kept log-sum-exp, then copied down."""
        qkv, lse, H, scale = cache["qkv"], cache["lse"], cache["H"], cache["scale"]
        B, N, D3 = (int(s) for s in qkv.shape)
        Dh = D3 // 3 // H
        P = self._empty((B, H, N, N), qkv.dtype)
        if P.size:
            g, b = self._ew(int(P.size))
            self._attn(qkv.dtype, Dh).attn_probs[g, b](qkv, lse, P, N, H, scale)
        return P.copy_to_host()

    # ------------------------------------------------------------------ loss
    def softmax_cross_entropy(self, logits, labels, smoothing=0.0):
        """logits: (B, C) device; labels: host (B,) ints or (B, C) soft targets.
        Returns (mean loss as a Python float, dlogits: (B, C) device array)."""
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"label smoothing must lie in [0, 1), got {smoothing}")
        self._check(logits, "logits")
        B, C = (int(s) for s in logits.shape)
        dt = logits.dtype
        labels = self.to_host(labels) if is_device_array(labels) else np.asarray(labels)
        if labels.ndim == 1:
            check_labels(labels, C, B=B)    # the one label check of every loss
            lab, soft, use_soft = self.asarray(labels, np.int64), self._dummy(2, dt), False
        elif labels.ndim == 2 and labels.shape == (B, C):
            lab, soft, use_soft = self._dummy(1, np.int64), self.asarray(labels, dt), True
        else:
            raise ConfigError(f"labels must be (B,) ints or (B, {C}) soft targets, "
                              f"got shape {labels.shape}")
        dlogits = self._empty((B, C), dt)
        rowloss = self._empty((B,), dt)
        c = dt.type
        self._k(dt).softmax_xent[min(B, _MAX_ROW_BLOCKS), self.tiles.row](
            logits, lab, soft, use_soft, c(smoothing), c(smoothing / C), c(1.0 / B),
            dlogits, rowloss)
        return self._reduce(rowloss, RED_SUM) / B, dlogits

    # ------------------------------------------------------------------ optimizer updates
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """AdamW in place on device arrays p, m, v (same shape as g); torch's arithmetic.
        step: 1-based. p ← p·(1 − lr·wd), then p ← p − lr·m̂/(√v̂ + eps)."""
        for a in (p, g, m, v):
            self._check(a)
        c = p.dtype.type
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        decay = 1.0 - lr * weight_decay if weight_decay else 1.0
        gr, bl = self._ew(int(p.size))
        self._k(p.dtype).adamw[gr, bl](
            self._flat(p), self._flat(g), self._flat(m), self._flat(v), c(decay), c(beta1),
            c(beta2), c(1.0 - beta1), c(1.0 - beta2), c(1.0 / math.sqrt(bc2)), c(lr / bc1),
            c(eps))

    def sgd_update(self, p, g, buf, lr, momentum, weight_decay, nesterov=False):
        """SGD with momentum (torch semantics), in place on p and buf (device arrays).
        d = g + wd·p; buf ← momentum·buf + d; p ← p − lr·(d + momentum·buf if nesterov
        else buf). ``buf`` may be None when momentum is 0."""
        self._check(p), self._check(g)
        if momentum and buf is None:
            raise ValueError("sgd_update: momentum needs a buffer")
        c = p.dtype.type
        bufv = self._flat(self._check(buf)) if momentum else self._dummy(1, p.dtype)
        gr, bl = self._ew(int(p.size))
        self._k(p.dtype).sgd[gr, bl](self._flat(p), self._flat(g), bufv, c(lr), c(momentum),
                                     c(weight_decay or 0.0), bool(nesterov), bool(momentum))

    def sum_squares(self, x):
        """Σ x² as a Python float (for the global gradient norm); one scalar comes down."""
        return self._reduce(x, RED_SUMSQ)

    def scale_(self, x, s):
        """x ← s·x in place (gradient clipping)."""
        self._check(x)
        g, b = self._ew(int(x.size))
        self._k(x.dtype).scale[g, b](self._flat(x), x.dtype.type(s))

    def all_finite(self, x):
        """True when no element of x is NaN or ±inf (one scalar comes down)."""
        return self._reduce(x, RED_NONFINITE) == 0.0

    # ------------------------------------------------------------------ masked patch prediction
    def corruption_forward(self, e, mask_token, plan):
        """Masked patch prediction's corruption (paper §4.6) on the device, the
        :func:`minivit.ops.masked.corruption_forward` contract: e: (B, N, D) patch
        embeddings; mask_token: (D,) the learned [mask] embedding; plan: a host
        ``CorruptionPlan`` for (B, N). Returns e': (B, N, D) and the cache."""
        self._check(e), self._check(mask_token)
        B, N, D = (int(s) for s in e.shape)
        kind = np.asarray(plan.kind)
        if kind.shape != (B, N):
            raise ConfigError(f"corruption plan is for {kind.shape}, embeddings are {(B, N)}")
        if tuple(mask_token.shape) != (D,):
            raise ConfigError(f"mask token must have shape ({D},), got {tuple(mask_token.shape)}")
        kind = kind.astype(np.int8).reshape(-1)
        source = np.asarray(plan.source, dtype=np.int64).reshape(-1)
        kind_d = self.asarray(kind)
        out = self._empty((B, N, D), e.dtype)
        g, b = self._ew(B * N * D)
        self._k(e.dtype).corrupt_fwd[g, b](self._rows(e), mask_token, kind_d,
                                           self.asarray(source), self._rows(out))
        return out, (kind, source, kind_d)

    def corruption_backward(self, dout, cache):
        """dout: (B, N, D) gradient w.r.t. e' → de: (B, N, D), dmask: (D,), as
        :func:`minivit.ops.masked.corruption_backward` (a copied embedding receives the
        gradient of every position it was copied to)."""
        kind, source, kind_d = cache
        self._check(dout)
        B, N, D = (int(s) for s in dout.shape)
        k = self._k(dout.dtype)
        # copies of each source p as CSR (positions q sorted by p), for a gather kernel
        q = np.flatnonzero(kind == RANDOM)
        p = source[q]
        order = np.argsort(p, kind="stable")
        rptr = np.zeros(B * N + 1, dtype=np.int64)
        np.cumsum(np.bincount(p, minlength=B * N), out=rptr[1:])
        rsrc = np.ascontiguousarray(q[order], dtype=np.int64)
        de = self._empty((B, N, D), dout.dtype)
        g, b = self._ew(B * N * D)
        k.corrupt_bwd[g, b](self._rows(dout), kind_d, self.asarray(rptr),
                            self.asarray(rsrc), self._rows(de))
        dmask = self._empty((D,), dout.dtype)
        masked = np.flatnonzero(kind == MASK).astype(np.int64)
        g, b = self._ew(D)
        k.rows_sum[g, b](self._rows(dout), self.asarray(masked), dmask)
        return de, dmask

    def masked_patch_loss(self, logits, targets, corrupted):
        """logits: (B, N, 512) device; targets: host (B, N) ints; corrupted: host (B, N)
        bool → (mean cross-entropy over the M corrupted patches, dlogits (B, N, 512) =
        (p − onehot)/M on them, 0 elsewhere), as :func:`minivit.ops.masked.masked_patch_loss`.
        The corrupted rows are gathered, go through the softmax cross-entropy kernel,
        and their gradient is scattered back into zeros."""
        self._check(logits, "logits")
        B, N, K = (int(s) for s in logits.shape)
        targets = np.asarray(self.to_host(targets))
        corrupted = np.asarray(self.to_host(corrupted), dtype=bool)
        if targets.shape != (B, N) or corrupted.shape != (B, N):
            raise ConfigError(f"targets {targets.shape} and corrupted {corrupted.shape} must "
                              f"both be {(B, N)}")
        if targets.dtype.kind not in "iu":
            raise ConfigError(f"targets must be integers, got dtype {targets.dtype}")
        k = self._k(logits.dtype)
        dlogits = self.zeros((B, N, K), logits.dtype)
        rows = np.flatnonzero(corrupted.reshape(-1)).astype(np.int64)
        if rows.size == 0:
            return 0.0, dlogits
        rows_d = self.asarray(rows)
        Z = self._empty((rows.size, K), logits.dtype)
        g, b = self._ew(int(Z.size))
        k.gather_rows[g, b](self._rows(logits), rows_d, Z)
        loss, dZ = self.softmax_cross_entropy(Z, targets.reshape(-1)[rows])
        k.scatter_rows[g, b](dZ, rows_d, self._rows(dlogits))
        return loss, dlogits

    # ------------------------------------------------------------------ not yet on the GPU
    # The recipe-search knobs (issue 15) run on the numpy and numba backends; ViT and
    # TrainSettings refuse them for cuda up front, these are the backstop.
    @staticmethod
    def _unsupported(what):
        raise ConfigError(f"{what} is not supported on the cuda backend yet")

    def pos_add_forward(self, e, pos=None):
        """GAP embedding sum: refused (ConfigError) until a kernel exists."""
        self._unsupported("classifier='gap'")

    def pos_add_backward(self, dz, cache):
        """Refused, see :meth:`pos_add_forward`."""
        self._unsupported("classifier='gap'")

    def mean_tokens_forward(self, z):
        """GAP pooling: refused (ConfigError) until a kernel exists."""
        self._unsupported("classifier='gap'")

    def mean_tokens_backward(self, dy, cache):
        """Refused, see :meth:`mean_tokens_forward`."""
        self._unsupported("classifier='gap'")

    def dropout_forward(self, x, mask):
        """Dropout / drop path: refused (ConfigError) until a kernel exists."""
        self._unsupported("dropout / drop_path")

    def dropout_backward(self, dy, cache):
        """Refused, see :meth:`dropout_forward`."""
        self._unsupported("dropout / drop_path")

    def keep_tokens_forward(self, z, idx):
        """Patch dropout: refused (ConfigError) until a kernel exists."""
        self._unsupported("patch_keep")

    def keep_tokens_backward(self, dy, cache):
        """Refused, see :meth:`keep_tokens_forward`."""
        self._unsupported("patch_keep")

    def ema_update(self, s, p, decay):
        """The weight average's update: refused (ConfigError) until a kernel exists."""
        self._unsupported("ema_decay")
