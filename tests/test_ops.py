"""Every reference op: backward against centred finite differences in float64, and the
float32 forward against the float64 one."""
import math

import numpy as np
import pytest

from minivit import ops
from minivit.gradcheck import check_gradient

TOL = 1e-6        # the bar for float64 gradient checks (correct code gives ~1e-9)


def _check(f_out, x, analytic, dout):
    err = check_gradient(lambda: f_out(), x, analytic, dout=dout)
    assert err < TOL, err


@pytest.mark.parametrize("P,S,H", [(4, 4, 8), (4, 2, 8), (3, 1, 7), (2, 3, 8)])
def test_patches_adjoint_and_layout(rng, P, S, H):
    x = rng.standard_normal((2, H, H, 3))
    p, cache = ops.patches_forward(x, P, S)
    g = (H - P) // S + 1
    assert p.shape == (2, g * g, P * P * 3)
    # patch (i, j) in row-major grid order, flattened (h, w, c)
    i, j = g - 1, min(1, g - 1)
    np.testing.assert_array_equal(p[1, i * g + j], x[1, i * S:i * S + P, j * S:j * S + P].reshape(-1))
    # backward is the adjoint: <patches(x), y> == <x, patches_backward(y)>
    y = rng.standard_normal(p.shape)
    dx = ops.patches_backward(y, cache)
    assert math.isclose((p * y).sum(), (x * dx).sum(), rel_tol=1e-12)


def test_patches_bad_stride():
    with pytest.raises(ValueError, match=r"\(H - P\) = \(8 - 4\) = 4 is not divisible by the stride S=3"):
        ops.patches_forward(np.zeros((1, 8, 8, 3)), 4, 3)


def test_linear_grad(rng):
    x, W, b = rng.standard_normal((2, 5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    y, cache = ops.linear_forward(x, W, b)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = ops.linear_backward(dy, cache)
    f = lambda: ops.linear_forward(x, W, b)[0]
    _check(f, x, dx, dy); _check(f, W, dW, dy); _check(f, b, db, dy)


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_layernorm_grad(rng, eps):
    x = rng.standard_normal((3, 4, 6)) * 2 + 1
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    y, cache = ops.layernorm_forward(x, g, b, eps)
    # definition check
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dg, db = ops.layernorm_backward(dy, cache)
    f = lambda: ops.layernorm_forward(x, g, b, eps)[0]
    _check(f, x, dx, dy); _check(f, g, dg, dy); _check(f, b, db, dy)


@pytest.mark.parametrize("form", ["tanh", "erf"])
def test_gelu_grad_and_values(rng, form):
    x = rng.standard_normal((4, 7)) * 3
    y, cache = ops.gelu_forward(x, form)
    if form == "erf":
        ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)
        np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-15)
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.gelu_forward(x, form)[0], x, ops.gelu_backward(dy, cache), dy)


def test_gelu_forms_differ_by_small_amount():
    x = np.linspace(-6, 6, 10001)
    d = np.abs(ops.gelu_forward(x, "tanh")[0] - ops.gelu_forward(x, "erf")[0]).max()
    assert 1e-4 < d < 1e-3          # "they differ by up to ~5e-4" (REFERENCE.md §2)


def test_erf_matches_math(rng):
    x = np.concatenate([rng.standard_normal(2000) * 4, [0.0, 1.5, -1.5, 30.0, -31.0, 1e-9]])
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(ops.activations.erf(x) - ref).max() < 1e-15


def test_tanh_grad(rng):
    x = rng.standard_normal((3, 5))
    y, cache = ops.tanh_forward(x)
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.tanh_forward(x)[0], x, ops.tanh_backward(dy, cache), dy)


def test_softmax_grad(rng):
    x = rng.standard_normal((3, 2, 5)) * 3
    y, cache = ops.softmax_forward(x)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.softmax_forward(x)[0], x, ops.softmax_backward(dy, cache), dy)


def test_softmax_is_stable():
    y, _ = ops.softmax_forward(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("scale", [None, True, 0.37])
def test_attention_grad(rng, scale):
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    out, cache = ops.attention_forward(q, k, v, scale)
    dout = rng.standard_normal(out.shape)
    dq, dk, dv = ops.attention_backward(dout, cache)
    f = lambda: ops.attention_forward(q, k, v, scale)[0]
    _check(f, q, dq, dout); _check(f, k, dk, dout); _check(f, v, dv, dout)


def test_mhsa_grad(rng):
    B, N, D, H = 2, 5, 6, 3
    x = rng.standard_normal((B, N, D))
    Wqkv, bqkv = rng.standard_normal((D, 3 * D)) * 0.5, rng.standard_normal(3 * D)
    Wo, bo = rng.standard_normal((D, D)) * 0.5, rng.standard_normal(D)
    y, cache = ops.mhsa_forward(x, Wqkv, bqkv, Wo, bo, H)
    dy = rng.standard_normal(y.shape)
    grads = ops.mhsa_backward(dy, cache)
    f = lambda: ops.mhsa_forward(x, Wqkv, bqkv, Wo, bo, H)[0]
    for arr, g in zip((x, Wqkv, bqkv, Wo, bo), grads):
        _check(f, arr, g, dy)


def test_mhsa_scale_is_one_over_sqrt_head_width(rng):
    """Pin the scale to 1/√D_h (D_h = D/H), not 1/√D — the most repeated ViT bug."""
    B, N, D, H = 1, 4, 12, 3
    Dh = D // H
    qkv = rng.standard_normal((B, N, 3 * D)) * 2
    _, cache = ops.mhsa_core_forward(qkv, H)
    q = qkv[..., :D].reshape(B, N, H, Dh).transpose(0, 2, 1, 3)
    k = qkv[..., D:2 * D].reshape(B, N, H, Dh).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2)
    want = np.exp(s / math.sqrt(Dh)); want /= want.sum(-1, keepdims=True)
    wrong = np.exp(s / math.sqrt(D)); wrong /= wrong.sum(-1, keepdims=True)
    np.testing.assert_allclose(cache["A"], want, rtol=1e-12)
    assert np.abs(cache["A"] - wrong).max() > 1e-2


def test_mhsa_equals_per_head_concat(rng):
    """MSA(z) = [SA_1; …; SA_H] U_msa, each head a scaled single-head attention."""
    B, N, D, H = 2, 3, 8, 2
    Dh = D // H
    x = rng.standard_normal((B, N, D))
    Wqkv, Wo = rng.standard_normal((D, 3 * D)), rng.standard_normal((D, D))
    zb = np.zeros(3 * D)
    y, _ = ops.mhsa_forward(x, Wqkv, zb, Wo, np.zeros(D), H)
    heads = []
    for h in range(H):
        cols = lambda part: Wqkv[:, part * D + h * Dh: part * D + (h + 1) * Dh]
        out, _ = ops.attention_forward(x @ cols(0), x @ cols(1), x @ cols(2), scale=True)
        heads.append(out)
    np.testing.assert_allclose(y, np.concatenate(heads, -1) @ Wo, rtol=1e-10, atol=1e-12)


def test_tokens_and_pos2d_grad(rng):
    e = rng.standard_normal((2, 4, 6))
    cls = rng.standard_normal((1, 1, 6))
    pc, row, col = rng.standard_normal((1, 6)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))

    def f():
        pos, _ = ops.pos2d_forward(pc, row, col)
        return ops.tokens_forward(e, cls, pos)[0]
    pos, pcache = ops.pos2d_forward(pc, row, col)
    # patch at grid (r, c) gets [row_r ; col_c]
    np.testing.assert_array_equal(pos[0, 1 + 1 * 2 + 0], np.concatenate([row[1], col[0]]))
    z, cache = ops.tokens_forward(e, cls, pos)
    dz = rng.standard_normal(z.shape)
    de, dcls, dpos = ops.tokens_backward(dz, cache)
    dpc, drow, dcol = ops.pos2d_backward(dpos, pcache)
    for arr, g in ((e, de), (cls, dcls), (pc, dpc), (row, drow), (col, dcol)):
        _check(f, arr, g, dz)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_grad(rng, smoothing):
    logits = rng.standard_normal((4, 5)) * 2
    labels = np.array([0, 3, 4, 1])
    loss, dlogits = ops.softmax_cross_entropy(logits, labels, smoothing)
    f = lambda: np.array(ops.softmax_cross_entropy(logits, labels, smoothing)[0])
    _check(f, logits, dlogits, None)
    # value: smoothed targets (1 − ε)·onehot + ε/C
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = np.eye(5)[labels] * (1 - smoothing) + smoothing / 5
    assert math.isclose(loss, -(t * np.log(p)).sum() / 4, rel_tol=1e-12)


def test_cross_entropy_soft_targets_and_errors(rng):
    logits = rng.standard_normal((2, 3))
    soft = np.array([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]])
    loss, d = ops.softmax_cross_entropy(logits, soft)
    f = lambda: np.array(ops.softmax_cross_entropy(logits, soft)[0])
    _check(f, logits, d, None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        ops.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match="smoothing"):
        ops.softmax_cross_entropy(logits, np.array([0, 1]), smoothing=1.5)


@pytest.mark.parametrize("op", ["layernorm", "gelu", "attention", "softmax"])
def test_float32_matches_float64(rng, op):
    x = rng.standard_normal((2, 5, 8))
    if op == "layernorm":
        g, b = rng.standard_normal(8), rng.standard_normal(8)
        f = lambda a: ops.layernorm_forward(a, g.astype(a.dtype), b.astype(a.dtype))[0]
    elif op == "gelu":
        f = lambda a: ops.gelu_forward(a, "erf")[0]
    elif op == "softmax":
        f = lambda a: ops.softmax_forward(a)[0]
    else:
        f = lambda a: ops.attention_forward(a, a, a, True)[0]
    y32, y64 = f(x.astype(np.float32)), f(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
