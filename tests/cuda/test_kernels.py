"""Every CUDA kernel against its NumPy reference op (the specification), forward and
backward, on small awkward shapes: sizes that are not multiples of the tiles, B = 1,
one head, odd N. ``be_small`` uses tiny tiles so that loops over several tiles and
ragged edges run; ``be_both`` adds the production tiles.

float32 tolerances: rtol 1e-5 / atol 1e-5 for single passes (sums of a few dozen
terms); float64: 1e-12.
"""
import inspect
import math

import numpy as np
import pytest

from minivit import ops
from minivit.backends.numpy_ops import NumpyBackend
from minivit.errors import ConfigError

F32 = dict(rtol=1e-5, atol=1e-5)
F64 = dict(rtol=1e-12, atol=1e-12)


def up(be, a, dtype=np.float32):
    return be.asarray(np.asarray(a), dtype)


def down(be, a):
    return be.to_host(a)


def close(be, dev, ref, tol=F32):
    np.testing.assert_allclose(down(be, dev), ref, **tol)


# ---------------------------------------------------------------------- interface
def test_every_numpy_backend_method_exists_with_the_same_signature(be_small):
    for name, ref in inspect.getmembers(NumpyBackend):
        if name.startswith("_"):
            continue
        assert hasattr(be_small, name), f"CudaBackend lacks {name}"
        if callable(ref):
            want = list(inspect.signature(ref).parameters)
            got = list(inspect.signature(getattr(type(be_small), name)).parameters)
            if want and want[0] != "self":             # staticmethods bound from ops
                want = ["self"] + want
            assert got == want, f"{name}: {got} != {want}"


# ---------------------------------------------------------------------- matmul
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (5, 7, 3), (13, 9, 17)])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_tiles_and_transposes(be_small, rng, M, N, K, ta, tb):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    ref = (a.T if ta else a) @ (b.T if tb else b) + bias
    c = be_small.zeros((M, N), np.float32)
    be_small._matmul(up(be_small, a), up(be_small, b), c, ta, tb, bias=up(be_small, bias))
    close(be_small, c, ref)


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False)])
def test_matmul_default_tiles(be_default, rng, ta, tb):
    M, N, K = 67, 5, 19                                # two row tiles, ragged everywhere
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    c = be_default.zeros((M, N), np.float32)
    be_default._matmul(up(be_default, a), up(be_default, b), c, ta, tb)
    close(be_default, c, (a.T if ta else a) @ (b.T if tb else b))


# ---------------------------------------------------------------------- dense layers
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_forward_backward(be_small, rng, has_bias):
    x = rng.standard_normal((2, 5, 7)).astype(np.float32)
    W = rng.standard_normal((7, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32) if has_bias else None
    dy = rng.standard_normal((2, 5, 6)).astype(np.float32)
    y_ref, c_ref = ops.linear_forward(x, W, b)
    dx_ref, dW_ref, db_ref = ops.linear_backward(dy, c_ref)
    be = be_small
    y, c = be.linear_forward(up(be, x), up(be, W), None if b is None else up(be, b))
    close(be, y, y_ref)
    dx, dW, db = be.linear_backward(up(be, dy), c)
    close(be, dx, dx_ref)
    close(be, dW, dW_ref)
    if has_bias:
        close(be, db, db_ref)
    else:
        assert db is None
    dx, _, _ = be.linear_backward(up(be, dy), c, need_dx=False)
    assert dx is None


@pytest.fixture
def be_split():
    """Small tiles, and a backend that splits every reduction it can (as a real GPU
    does for the weight gradients, whose few output tiles cannot fill it): split-K
    matmuls and row-chunked column sums, with ragged slices. Records each split."""
    from minivit.backends.cuda_backend import CudaBackend
    from minivit.backends.cuda_kernels import SMALL_TILES

    class Recording(CudaBackend):
        def _splits(self, blocks, length, align=1):
            n, per = super()._splits(blocks, length, align)
            assert n == 1 or (per % align == 0 and (n - 1) * per < length <= n * per)
            self.splits.append(n)
            return n, per
    be = Recording(tiles=SMALL_TILES)
    be.min_blocks, be.min_split, be.splits = 64, 4, []
    return be


@pytest.mark.parametrize("dtype,tol", [(np.float32, F32), (np.float64, F64)])
def test_split_k_and_row_chunks_match_numpy(be_split, rng, dtype, tol):
    """dW = xᵀ dy split along the tokens (K), db and LayerNorm's dγ, dβ summed in row
    chunks: the same values as the NumPy reference."""
    be = be_split
    x = rng.standard_normal((3, 15, 7)).astype(dtype)          # R = 45 tokens
    W = rng.standard_normal((7, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    dy = rng.standard_normal((3, 15, 6)).astype(dtype)
    _, c_ref = ops.linear_forward(x, W, b)
    _, c = be.linear_forward(up(be, x, dtype), up(be, W, dtype), up(be, b, dtype))
    for got, want in zip(be.linear_backward(up(be, dy, dtype), c),
                         ops.linear_backward(dy, c_ref)):
        close(be, got, want, tol)
    assert max(be.splits) > 1                                   # the split path ran
    g = rng.standard_normal(7).astype(dtype)
    _, c_ref = ops.layernorm_forward(x, g, b[:1].repeat(7), 1e-6)
    _, c = be.layernorm_forward(up(be, x, dtype), up(be, g, dtype),
                                up(be, b[:1].repeat(7), dtype), 1e-6)
    be.splits.clear()
    got = be.layernorm_backward(up(be, dy[..., :1].repeat(7, -1), dtype), c)
    want = ops.layernorm_backward(dy[..., :1].repeat(7, -1), c_ref)
    for gd, wd in zip(got, want):
        close(be, gd, wd, tol if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4))
    assert max(be.splits) > 1


@pytest.mark.parametrize("form", ["tanh", "erf"])
def test_linear_gelu_fused(be_small, rng, form):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    W = rng.standard_normal((5, 9)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    du = rng.standard_normal((3, 9)).astype(np.float32)
    nb = NumpyBackend()
    u_ref, c_ref = nb.linear_gelu_forward(x, W, b, form)
    g_ref = nb.linear_gelu_backward(du, c_ref)
    be = be_small
    u, c = be.linear_gelu_forward(up(be, x), up(be, W), up(be, b), form)
    close(be, u, u_ref)
    for got, want in zip(be.linear_gelu_backward(up(be, du), c), g_ref):
        close(be, got, want, dict(rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize("form", ["tanh", "erf"])
def test_gelu(be_small, rng, form):
    x = (3 * rng.standard_normal((4, 11))).astype(np.float32)
    dy = rng.standard_normal((4, 11)).astype(np.float32)
    y_ref, c_ref = ops.gelu_forward(x, form)
    be = be_small
    y, c = be.gelu_forward(up(be, x), form)
    close(be, y, y_ref)
    close(be, be.gelu_backward(up(be, dy), c), ops.gelu_backward(dy, c_ref))
    with pytest.raises(ValueError):
        be.gelu_forward(up(be, x), "sigmoid")


def test_tanh(be_small, rng):
    x = rng.standard_normal((3, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 7)).astype(np.float32)
    y_ref, c_ref = ops.tanh_forward(x)
    be = be_small
    y, c = be.tanh_forward(up(be, x))
    close(be, y, y_ref)
    close(be, be.tanh_backward(up(be, dy), c), ops.tanh_backward(dy, c_ref))


# ---------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 13), (1, 1, 1)])
def test_layernorm(be_small, rng, shape):
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    D = shape[-1]
    g = rng.standard_normal(D).astype(np.float32)
    b = rng.standard_normal(D).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y_ref, c_ref = ops.layernorm_forward(x, g, b, 1e-6)
    be = be_small
    y, c = be.layernorm_forward(up(be, x), up(be, g), up(be, b), 1e-6)
    close(be, y, y_ref, dict(rtol=1e-4, atol=1e-5))
    for got, want in zip(be.layernorm_backward(up(be, dy), c), ops.layernorm_backward(dy, c_ref)):
        close(be, got, want, dict(rtol=1e-4, atol=1e-4))


def test_layernorm_default_tiles(be_default, rng):
    x = rng.standard_normal((3, 130)).astype(np.float32)   # D > 128 threads: strided rows
    g = rng.standard_normal(130).astype(np.float32)
    b = rng.standard_normal(130).astype(np.float32)
    dy = rng.standard_normal((3, 130)).astype(np.float32)
    y_ref, c_ref = ops.layernorm_forward(x, g, b)
    be = be_default
    y, c = be.layernorm_forward(up(be, x), up(be, g), up(be, b))
    close(be, y, y_ref, dict(rtol=1e-4, atol=1e-5))
    for got, want in zip(be.layernorm_backward(up(be, dy), c), ops.layernorm_backward(dy, c_ref)):
        close(be, got, want, dict(rtol=1e-4, atol=1e-4))


# ---------------------------------------------------------------------- attention
ATTN_CASES = [(2, 5, 2, 4), (1, 7, 1, 3), (2, 1, 2, 2), (1, 9, 3, 5)]


def _attention_check(be, rng, B, N, H, Dh, dtype=np.float32, tol=None):
    D = H * Dh
    qkv = rng.standard_normal((B, N, 3 * D)).astype(dtype)
    dout = rng.standard_normal((B, N, D)).astype(dtype)
    out_ref, c_ref = ops.mhsa_core_forward(qkv, H)
    dqkv_ref = ops.mhsa_core_backward(dout, c_ref)
    tol = tol or dict(rtol=1e-4, atol=1e-5)
    out, c = be.mhsa_core_forward(up(be, qkv, dtype), H)
    close(be, out, out_ref, tol)
    np.testing.assert_allclose(be.attention_probs(c), c_ref["A"], **tol)
    close(be, be.mhsa_core_backward(up(be, dout, dtype), c), dqkv_ref, tol)


@pytest.mark.parametrize("B,N,H,Dh", ATTN_CASES)
def test_fused_attention_small_tiles(be_small, rng, B, N, H, Dh):
    _attention_check(be_small, rng, B, N, H, Dh)


def test_fused_attention_default_tiles(be_default, rng):
    _attention_check(be_default, rng, 2, 5, 2, 4)


def test_fused_attention_large_scores(be_small, rng):
    """Scores of ±60 would overflow a naive exp in float32; the online softmax must not."""
    B, N, H, Dh = 1, 6, 1, 4
    qkv = (rng.standard_normal((B, N, 3 * H * Dh)) * 8).astype(np.float32)
    out_ref, c_ref = ops.mhsa_core_forward(qkv.astype(np.float64), H)
    out, _ = be_small.mhsa_core_forward(up(be_small, qkv), H)
    close(be_small, out, out_ref, dict(rtol=1e-4, atol=1e-4))


# ---------------------------------------------------------------------- loss
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
def test_softmax_cross_entropy(be_small, rng, smoothing, soft):
    B, C = 3, 11                                   # C > the 8 threads of a row block
    logits = (rng.standard_normal((B, C)) * 3).astype(np.float32)
    if soft:
        labels = rng.random((B, C)).astype(np.float32)
        labels /= labels.sum(axis=1, keepdims=True)
    else:
        labels = np.array([0, 10, 4])
    loss_ref, d_ref = ops.softmax_cross_entropy(logits, labels, smoothing)
    loss, d = be_small.softmax_cross_entropy(up(be_small, logits), labels, smoothing)
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    close(be_small, d, d_ref)


def test_softmax_cross_entropy_rejects_bad_labels(be_small):
    logits = be_small.zeros((2, 3), np.float32)
    with pytest.raises(ConfigError, match="lie in"):
        be_small.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ConfigError):
        be_small.softmax_cross_entropy(logits, np.array([0.5, 1.0]))
    with pytest.raises(ConfigError):
        be_small.softmax_cross_entropy(logits, np.array([0, 1]), smoothing=1.0)


# ---------------------------------------------------------------------- Eq. 1
@pytest.mark.parametrize("B,H,C,P,S", [(2, 8, 3, 4, 4), (1, 7, 2, 3, 2), (1, 5, 1, 2, 3)])
def test_patches(be_small, rng, B, H, C, P, S):
    img = rng.standard_normal((B, H, H, C)).astype(np.float32)
    p_ref, c_ref = ops.patches_forward(img, P, S)
    dp = rng.standard_normal(p_ref.shape).astype(np.float32)
    p, c = be_small.patches_forward(up(be_small, img), P, S)
    close(be_small, p, p_ref, F64)                  # pure data movement: exact
    close(be_small, be_small.patches_backward(up(be_small, dp), c),
          ops.patches_backward(dp, c_ref))


def test_patches_rejects_bad_stride(be_small):
    with pytest.raises(ConfigError, match="stride"):
        be_small.patches_forward(be_small.zeros((1, 8, 8, 3), np.float32), 4, 3)


@pytest.mark.parametrize("with_pos", [True, False])
def test_tokens(be_small, rng, with_pos):
    B, N, D = 2, 5, 3
    e = rng.standard_normal((B, N, D)).astype(np.float32)
    cls = rng.standard_normal((1, 1, D)).astype(np.float32)
    pos = rng.standard_normal((1, N + 1, D)).astype(np.float32) if with_pos else None
    dz = rng.standard_normal((B, N + 1, D)).astype(np.float32)
    z_ref, c_ref = ops.tokens_forward(e, cls, pos)
    be = be_small
    z, c = be.tokens_forward(up(be, e), up(be, cls), None if pos is None else up(be, pos))
    close(be, z, z_ref)
    got = be.tokens_backward(up(be, dz), c)
    for g, w in zip(got, ops.tokens_backward(dz, c_ref)):
        if w is None:
            assert g is None
        else:
            close(be, g, w)


def test_pos2d(be_small, rng):
    gh, gw, half = 3, 2, 2
    pcls = rng.standard_normal((1, 2 * half)).astype(np.float32)
    row = rng.standard_normal((gh, half)).astype(np.float32)
    col = rng.standard_normal((gw, half)).astype(np.float32)
    p_ref, c_ref = ops.pos2d_forward(pcls, row, col)
    dpos = rng.standard_normal(p_ref.shape).astype(np.float32)
    be = be_small
    p, c = be.pos2d_forward(up(be, pcls), up(be, row), up(be, col))
    close(be, p, p_ref)
    for g, w in zip(be.pos2d_backward(up(be, dpos), c), ops.pos2d_backward(dpos, c_ref)):
        close(be, g, w)


def test_take_cls(be_small, rng):
    z = rng.standard_normal((3, 4, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5)).astype(np.float32)
    nb = NumpyBackend()
    be = be_small
    close(be, be.take_cls(up(be, z)), nb.take_cls(z))
    close(be, be.take_cls_backward(up(be, dy), (3, 4, 5)), nb.take_cls_backward(dy, (3, 4, 5)))


# ---------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamw_update(be_small, rng, wd):
    nb, be = NumpyBackend(), be_small
    p = rng.standard_normal((3, 7)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    dp, dm, dv = up(be, p), be.zeros_like(up(be, p)), be.zeros((3, 7), np.float32)
    for step in (1, 2, 3):
        g = rng.standard_normal(p.shape).astype(np.float32)
        nb.adamw_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, step)
        be.adamw_update(dp, up(be, g), dm, dv, 1e-2, 0.9, 0.999, 1e-8, wd, step)
    close(be, dp, p, dict(rtol=1e-5, atol=1e-6))
    close(be, dm, m, dict(rtol=1e-5, atol=1e-6))
    close(be, dv, v, dict(rtol=1e-5, atol=1e-7))


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.0, 0.0, False), (0.9, 0.01, False),
                                                  (0.9, 0.0, True)])
def test_sgd_update(be_small, rng, momentum, wd, nesterov):
    nb, be = NumpyBackend(), be_small
    p = rng.standard_normal(13).astype(np.float32)
    buf = np.zeros_like(p) if momentum else None
    dp = up(be, p)
    dbuf = be.zeros_like(dp) if momentum else None
    for _ in range(2):
        g = rng.standard_normal(13).astype(np.float32)
        nb.sgd_update(p, g, buf, 0.1, momentum, wd, nesterov)
        be.sgd_update(dp, up(be, g), dbuf, 0.1, momentum, wd, nesterov)
    close(be, dp, p)
    if momentum:
        close(be, dbuf, buf)


def test_reductions_and_glue(be_small, rng):
    be = be_small
    x = rng.standard_normal((37, 29)).astype(np.float32)   # more than one reduce block
    dx = up(be, x)
    assert be.sum_squares(dx) == pytest.approx(float(np.dot(x.ravel(), x.ravel())), rel=1e-5)
    assert be.all_finite(dx)
    be.scale_(dx, 0.5)
    close(be, dx, 0.5 * x)
    y = x.copy()
    y[3, 4] = np.nan
    assert not be.all_finite(up(be, y))
    y[3, 4] = -np.inf
    assert not be.all_finite(up(be, y))
    close(be, be.add(up(be, x), up(be, x)), 2 * x)
    close(be, be.copy(up(be, x)), x)
    np.testing.assert_array_equal(down(be, be.zeros((2, 3), np.float64)), np.zeros((2, 3)))
    assert be.asarray(dx) is dx                          # device arrays pass through
    d64 = be.asarray(dx, np.float64)
    assert d64.dtype == np.float64
    close(be, d64, 0.5 * x.astype(np.float64))


# ---------------------------------------------------------------------- float64
def test_float64_kernels(be_small, rng):
    be = be_small
    x = rng.standard_normal((2, 5, 7))
    W = rng.standard_normal((7, 6))
    b = rng.standard_normal(6)
    y_ref, c_ref = ops.linear_forward(x, W, b)
    y, c = be.linear_forward(up(be, x, np.float64), up(be, W, np.float64), up(be, b, np.float64))
    close(be, y, y_ref, F64)
    g, bb = rng.standard_normal(7), rng.standard_normal(7)
    yl_ref, _ = ops.layernorm_forward(x, g, bb)
    yl, _ = be.layernorm_forward(up(be, x, np.float64), up(be, g, np.float64),
                                 up(be, bb, np.float64))
    close(be, yl, yl_ref, F64)
    _attention_check(be, rng, 2, 5, 2, 3, np.float64, F64)


# ---------------------------------------------------------------------- attention tiling
def test_attention_tiles_fit_static_shared_memory():
    """Float64 and wide heads get smaller tiles (or more threads per row) so that every
    attention kernel fits 48 KiB of static shared memory and its per-thread accumulators
    fit registers: the sizes the compile gate (tests/test_cuda_compile.py) assembles."""
    from minivit.backends.cuda_kernels import (DEFAULT_TILES, SMALL_TILES, _attn_smem_bytes,
                                               attention_tile)
    want = {(np.float32, 32): (32, 4), (np.float32, 64): (32, 4), (np.float32, 80): (16, 4),
            (np.float64, 32): (16, 4), (np.float64, 64): (16, 4), (np.float64, 80): (16, 8),
            (np.float64, 128): (8, 8)}
    for (dt, dh), tg in want.items():
        T, G = attention_tile(dt, dh, DEFAULT_TILES)
        assert (T, G) == tg, (dt, dh)
        dw = -(-dh // G) * G + 1
        assert _attn_smem_bytes(T, dw, np.dtype(dt).itemsize) <= 48 * 1024
        assert -(-dh // G) * np.dtype(dt).itemsize <= 128       # accumulator row bytes
    # the simulator's tiny tiles shrink in float64 too, so the tests run that path
    assert attention_tile(np.float32, 3, SMALL_TILES) == (4, 2)
    assert attention_tile(np.float64, 3, SMALL_TILES) == (2, 2)


# ---------------------------------------------------------------------- masked patch prediction
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_patch_corruption_matches_numpy(be_small, rng, dtype):
    """The [mask] / random-copy corruption of masked patch prediction and its adjoint
    (including a source copied to several positions, and positions whose own embedding
    is replaced) against minivit.ops.masked."""
    from minivit.ops import masked
    B, N, D = 2, 6, 5
    plan = masked.corruption_plan(B, N, rng, mask_ratio=0.9, p_mask=0.4, p_random=0.5)
    plan.source.reshape(-1)[np.flatnonzero(plan.kind == masked.RANDOM)[:2]] = 3
    assert (plan.kind == masked.MASK).any() and (plan.kind == masked.RANDOM).sum() >= 2
    e = rng.standard_normal((B, N, D))
    mask = rng.standard_normal(D)
    dout = rng.standard_normal((B, N, D))
    out_ref, c_ref = masked.corruption_forward(e, mask, plan)
    de_ref, dmask_ref = masked.corruption_backward(dout, c_ref)
    tol = F64 if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    out, c = be_small.corruption_forward(up(be_small, e, dtype), up(be_small, mask, dtype),
                                         plan)
    close(be_small, out, out_ref, tol)
    de, dmask = be_small.corruption_backward(up(be_small, dout, dtype), c)
    close(be_small, de, de_ref, tol)
    close(be_small, dmask, dmask_ref, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_patch_loss_and_token_slices_match_numpy(be_small, rng, dtype):
    """The MPP head's patch-token slice (and its adjoint) and the loss over the
    corrupted patches only, against minivit.ops.masked and NumPy slicing."""
    from minivit.ops import masked
    be = be_small
    B, N, K, D = 2, 5, 7, 3
    tol = F64 if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    z = rng.standard_normal((B, N + 1, D))
    close(be, be.take_patch_tokens(up(be, z, dtype)), z[:, 1:], tol)
    dz = be.take_patch_tokens_backward(up(be, z[:, 1:], dtype), z.shape)
    want = z.copy()
    want[:, 0] = 0.0
    close(be, dz, want, tol)
    logits = rng.standard_normal((B, N, K)) * 3
    targets = rng.integers(0, K, (B, N))
    corrupted = rng.random((B, N)) < 0.5
    corrupted[0, 0], corrupted[1, 4] = True, False
    loss_ref, d_ref = masked.masked_patch_loss(logits, targets, corrupted)
    loss, d = be.masked_patch_loss(up(be, logits, dtype), targets, corrupted)
    assert loss == pytest.approx(loss_ref, rel=1e-10 if dtype == np.float64 else 1e-5)
    close(be, d, d_ref, tol)
    loss0, d0 = be.masked_patch_loss(up(be, logits, dtype), targets, np.zeros((B, N), bool))
    assert loss0 == 0.0 and not be.to_host(d0).any()
    with pytest.raises(ConfigError, match="targets"):
        be.masked_patch_loss(up(be, logits, dtype), targets[:1], corrupted)
