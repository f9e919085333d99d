"""The Numba backend against the NumPy reference, op by op, forward and backward.

Tolerances (``close`` below): float64 rtol 1e-10 / atol 1e-12 (same maths, different
summation order); float32 rtol 1e-4 / atol 1e-5 × the reference's largest magnitude
(float32 sums in a different order, and the float32 exp/tanh are few-ulp approximations).
Shapes are deliberately awkward: B = 1, one head, odd N (5, 17, 65), widths that are not
multiples of 8 (D_h = 5, 3, 7).
"""
import numpy as np
import pytest

pytest.importorskip("numba")

from minivit import ViT, ViTConfig                      # noqa: E402
from minivit.backends import get_backend                # noqa: E402
from minivit.backends import threads                    # noqa: E402
from minivit.errors import ConfigError                  # noqa: E402
from minivit.gradcheck import check_gradient            # noqa: E402
from minivit.ops import softmax_cross_entropy           # noqa: E402

from conftest import perturbed_model, tiny_config       # noqa: E402

NB = get_backend("numba")
NP = get_backend("numpy")
DTYPES = [np.float32, np.float64]


def close(actual, ref, dtype, rtol=None, atol=None):
    """assert_allclose with the per-dtype tolerances stated in the module docstring."""
    ref = np.asarray(ref)
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    if dtype == np.float64:
        rtol, atol = rtol or 1e-10, (atol or 1e-12) * scale
    else:
        rtol, atol = rtol or 1e-4, (atol or 1e-5) * scale
    assert np.asarray(actual).dtype == ref.dtype
    np.testing.assert_allclose(actual, ref, rtol=rtol, atol=atol)


def rand(rng, shape, dtype, s=1.0):
    return (s * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------------- linear layers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dout", [((1, 5, 7), 3), ((2, 17, 13), 9), ((6, 10), 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(dtype, shape, dout, bias):
    rng = np.random.default_rng(1)
    x, W = rand(rng, shape, dtype), rand(rng, (shape[-1], dout), dtype)
    b = rand(rng, (dout,), dtype) if bias else None
    y1, c1 = NB.linear_forward(x, W, b)
    y2, c2 = NP.linear_forward(x, W, b)
    close(y1, y2, dtype)
    dy = rand(rng, y2.shape, dtype)
    for need_dx in (True, False):
        g1 = NB.linear_backward(dy, c1, need_dx)
        g2 = NP.linear_backward(dy, c2, need_dx)
        for a, r in zip(g1, g2):
            assert (a is None) == (r is None)
            if r is not None:
                close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["tanh", "erf"])
@pytest.mark.parametrize("shape,M", [((1, 5, 7), 11), ((2, 17, 16), 32)])
def test_linear_gelu(dtype, form, shape, M):
    rng = np.random.default_rng(2)
    x, W, b = rand(rng, shape, dtype), rand(rng, (shape[-1], M), dtype, 0.5), rand(rng, (M,), dtype)
    u1, c1 = NB.linear_gelu_forward(x, W, b, form)
    u2, c2 = NP.linear_gelu_forward(x, W, b, form)
    close(u1, u2, dtype)
    du = rand(rng, u2.shape, dtype)
    for a, r in zip(NB.linear_gelu_backward(du, c1), NP.linear_gelu_backward(du, c2)):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["tanh", "erf"])
def test_gelu_and_tanh(dtype, form):
    rng = np.random.default_rng(3)
    x = rand(rng, (3, 17, 9), dtype, 3.0)
    x.flat[:4] = [0.0, 12.0, -12.0, 1e-4]                 # 0, saturation, tiny
    y1, c1 = NB.gelu_forward(x, form)
    y2, c2 = NP.gelu_forward(x, form)
    close(y1, y2, dtype)
    dy = rand(rng, x.shape, dtype)
    close(NB.gelu_backward(dy, c1), NP.gelu_backward(dy, c2), dtype)
    t1, d1 = NB.tanh_forward(x)
    t2, d2 = NP.tanh_forward(x)
    close(t1, t2, dtype)
    close(NB.tanh_backward(dy, d1), NP.tanh_backward(dy, d2), dtype)


# ---------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5, 7), (2, 17, 13), (4, 16), (3, 65, 24)])
def test_layernorm(dtype, shape):
    rng = np.random.default_rng(4)
    D = shape[-1]
    x = rand(rng, shape, dtype, 2.0) + dtype(0.5)
    g, b = rand(rng, (D,), dtype), rand(rng, (D,), dtype)
    y1, c1 = NB.layernorm_forward(x, g, b, 1e-6)
    y2, c2 = NP.layernorm_forward(x, g, b, 1e-6)
    close(y1, y2, dtype)
    dy = rand(rng, shape, dtype)
    for a, r in zip(NB.layernorm_backward(dy, c1), NP.layernorm_backward(dy, c2)):
        close(a, r, dtype)


# ---------------------------------------------------------------------- big matmuls
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("M,K,N", [(1, 3, 2), (130, 7, 9), (65, 32, 65), (3, 129, 5)])
@pytest.mark.parametrize("in_pool", [True, False])
def test_matmul_transposes_and_blocks(dtype, ta, tb, M, K, N, in_pool, monkeypatch):
    """NumbaBackend._matmul (one BLAS gemm per row block from Numba's threads, or NumPy's
    ``@``) equals op(a) @ op(b) for every transpose the linear layers use, with row counts
    that do not split evenly into blocks."""
    monkeypatch.setattr(NB, "blas_in_pool", in_pool and threads.HAVE_CBLAS)
    rng = np.random.default_rng(20)
    a = rand(rng, (K, M) if ta else (M, K), dtype)
    b = rand(rng, (N, K) if tb else (K, N), dtype)
    ref = (a.T if ta else a) @ (b.T if tb else b)
    close(NB._matmul(a, b, ta=ta, tb=tb), ref, dtype)
    bias = rand(rng, (N,), dtype)
    close(NB._matmul(a, b, ta=ta, tb=tb, bias=bias), ref + bias, dtype)
    for form in ("tanh", "erf"):                        # fc1's epilogue: c + b kept, GELU(c)
        h, u = NB._matmul(a, b, ta=ta, tb=tb, bias=bias, gelu=form)
        close(h, ref + bias, dtype)
        close(u, NP.gelu_forward(ref + bias, form)[0], dtype)


@pytest.mark.skipif(not threads.HAVE_CBLAS, reason="NumPy's BLAS is not OpenBLAS")
def test_kernels_leave_the_users_blas_thread_count_alone():
    """The backend runs BLAS single-threaded inside its own kernels only: afterwards
    NumPy's OpenBLAS has the thread count it had before."""
    before = threads.get_threads()["blas"]
    with threads.blas_single_thread():
        assert threads.get_threads()["blas"] == 1
    assert threads.get_threads()["blas"] == before
    rng = np.random.default_rng(21)
    c = NB.mhsa_core_forward(rand(rng, (2, 9, 24), np.float32), 2)[1]
    NB.mhsa_core_backward(rand(rng, (2, 9, 8), np.float32), c)
    NB.linear_forward(rand(rng, (4, 6), np.float32), rand(rng, (6, 5), np.float32))
    assert threads.get_threads()["blas"] == before


def test_set_threads_sets_numba_and_blas_and_refuses_bad_counts():
    old = threads.get_threads()
    try:
        assert threads.set_threads(1) == 1
        got = threads.get_threads()
        assert got["numba"] == 1 and got["blas"] in (1, None)
        assert threads.set_threads(None) == threads.numba.config.NUMBA_NUM_THREADS
    finally:
        threads.set_threads(old["numba"])
        if old["blas"] is not None:
            threads._set_blas(old["blas"])
    for bad in (0, -2, 2.0, "2", True, threads.numba.config.NUMBA_NUM_THREADS + 1):
        with pytest.raises(ConfigError):
            threads.set_threads(bad)


# ---------------------------------------------------------------------- attention
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,N,D,H", [(1, 5, 8, 1), (2, 17, 15, 3), (2, 65, 16, 2),
                                     (1, 17, 7, 1), (3, 9, 32, 4)])
@pytest.mark.parametrize("attn_blas", [True, False])
def test_mhsa_core(dtype, B, N, D, H, attn_blas, monkeypatch):
    """Both attention paths (strided BLAS gemms per head, and the hand-written loops used
    when NumPy's BLAS is not OpenBLAS) against the reference."""
    monkeypatch.setattr(NB, "attn_blas", attn_blas)
    rng = np.random.default_rng(5)
    qkv = rand(rng, (B, N, 3 * D), dtype, 1.5)
    o1, c1 = NB.mhsa_core_forward(qkv, H)
    o2, c2 = NP.mhsa_core_forward(qkv, H)
    close(o1, o2, dtype)
    A = NB.attention_probs(c1)
    assert A.shape == (B, H, N, N)
    close(A, NP.attention_probs(c2), dtype)
    dout = rand(rng, (B, N, D), dtype)
    close(NB.mhsa_core_backward(dout, c1), NP.mhsa_core_backward(dout, c2), dtype)


# ---------------------------------------------------------------------- Eq. 1 glue
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("HW,C,P,S", [(8, 3, 2, None), (9, 1, 3, None), (7, 2, 3, 2),
                                      (32, 3, 4, 4)])
def test_patches(dtype, HW, C, P, S):
    rng = np.random.default_rng(6)
    img = rand(rng, (2, HW, HW, C), dtype)
    p1, c1 = NB.patches_forward(img, P, S)
    p2, c2 = NP.patches_forward(img, P, S)
    np.testing.assert_array_equal(p1, p2)
    dp = rand(rng, p2.shape, dtype)
    close(NB.patches_backward(dp, c1), NP.patches_backward(dp, c2), dtype)


def test_patches_bad_stride_raises():
    with pytest.raises(ConfigError):
        NB.patches_forward(np.zeros((1, 8, 8, 3)), 3, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_pos", [True, False])
def test_tokens_cls_add(dtype, with_pos):
    rng = np.random.default_rng(7)
    B, N, D = 3, 17, 13
    e, cls = rand(rng, (B, N, D), dtype), rand(rng, (1, 1, D), dtype)
    pos = rand(rng, (1, N + 1, D), dtype) if with_pos else None
    z1, c1 = NB.tokens_forward(e, cls, pos)
    z2, c2 = NP.tokens_forward(e, cls, pos)
    close(z1, z2, dtype)
    dz = rand(rng, z2.shape, dtype)
    for a, r in zip(NB.tokens_backward(dz, c1), NP.tokens_backward(dz, c2)):
        assert (a is None) == (r is None)
        if r is not None:
            close(a, r, dtype)
    close(NB.take_cls(z1), NP.take_cls(z2), dtype)
    dy = rand(rng, (B, D), dtype)
    close(NB.take_cls_backward(dy, z2.shape), NP.take_cls_backward(dy, z2.shape), dtype)
    close(NB.add(z1, dz), NP.add(z2, dz), dtype)


# ---------------------------------------------------------------------- loss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
def test_softmax_cross_entropy(dtype, smoothing, soft):
    rng = np.random.default_rng(8)
    B, C = 7, 5
    logits = rand(rng, (B, C), dtype, 4.0)
    labels = rng.integers(0, C, size=B)
    if soft:
        labels = rng.dirichlet(np.ones(C), size=B)
    l1, d1 = NB.softmax_cross_entropy(logits, labels, smoothing)
    l2, d2 = NP.softmax_cross_entropy(logits, labels, smoothing)
    assert isinstance(l1, float)
    close(np.array(l1, dtype), np.array(l2, dtype), dtype)
    close(d1, d2, dtype)


def test_softmax_cross_entropy_bad_labels_raise():
    with pytest.raises(ConfigError):
        NB.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


# ---------------------------------------------------------------------- optimizer glue
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamw_update(dtype, wd):
    rng = np.random.default_rng(9)
    shape = (13, 7)
    p, m, v = rand(rng, shape, dtype), rand(rng, shape, dtype, 0.1), np.abs(rand(rng, shape, dtype, 0.01))
    state = [p.copy(), m.copy(), v.copy()]
    for step in (1, 2, 3):
        g = rand(rng, shape, dtype)
        NB.adamw_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, wd, step)
        NP.adamw_update(*state[:1], g, *state[1:], 1e-3, 0.9, 0.999, 1e-8, wd, step)
    for a, r in zip((p, m, v), state):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-4),
                                                  (0.9, True, 0.0)])
def test_sgd_update(dtype, momentum, nesterov, wd):
    rng = np.random.default_rng(10)
    p = rand(rng, (5, 3), dtype)
    buf = np.zeros_like(p) if momentum else None
    p2, buf2 = p.copy(), (None if buf is None else buf.copy())
    for _ in range(3):
        g = rand(rng, p.shape, dtype)
        NB.sgd_update(p, g, buf, 0.1, momentum, wd, nesterov)
        NP.sgd_update(p2, g, buf2, 0.1, momentum, wd, nesterov)
    close(p, p2, dtype)
    if buf is not None:
        close(buf, buf2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_and_scale(dtype):
    rng = np.random.default_rng(11)
    x = rand(rng, (17, 5), dtype)
    assert abs(NB.sum_squares(x) - NP.sum_squares(x)) <= 1e-5 * NP.sum_squares(x)
    y, y2 = x.copy(), x.copy()
    NB.scale_(y, 0.3)
    NP.scale_(y2, 0.3)
    close(y, y2, dtype)
    assert NB.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        z = x.copy()
        z[3, 2] = bad
        assert not NB.all_finite(z)


# ---------------------------------------------------------------------- whole model
@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_five_adamw_steps_match_numpy(gelu):
    """5 AdamW steps of a small ViT (random head, so every gradient is non-trivial) on the
    numba and numpy backends in float32: losses and every parameter agree."""
    cfg = ViTConfig(image_size=8, patch_size=2, dim=16, depth=2, heads=2, mlp_dim=32,
                    num_classes=5, gelu=gelu)
    rng = np.random.default_rng(12)
    models = {}
    for name in ("numba", "numpy"):
        m = ViT(cfg, seed=3, dtype="float32", backend=name)
        hp = m.state_dict()
        r = np.random.default_rng(13)
        hp["head.weight"] = 0.2 * r.standard_normal(hp["head.weight"].shape)
        hp["head.bias"] = 0.1 * r.standard_normal(hp["head.bias"].shape)
        hp["cls_token"] = 0.1 * r.standard_normal(hp["cls_token"].shape)
        m.load_params(hp)
        models[name] = m
    state = {n: {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in m.params.items()}
             for n, m in models.items()}
    for step in range(1, 6):
        images = rng.standard_normal((4, 8, 8, 3))
        labels = rng.integers(0, 5, size=4)
        losses = {}
        for name, m in models.items():
            losses[name], _ = m.loss_and_grads(images, labels)
            for k, p in m.params.items():
                mo, ve = state[name][k]
                m.be.adamw_update(p, m.grads[k], mo, ve, 1e-3, 0.9, 0.999, 1e-8, 0.05, step)
        assert abs(losses["numba"] - losses["numpy"]) < 1e-5 * max(1.0, abs(losses["numpy"]))
    pa, pb = models["numba"].state_dict(), models["numpy"].state_dict()
    assert pa.keys() == pb.keys()
    D = cfg.dim
    for k in pb:
        a, b = pa[k], pb[k]
        if k.endswith("attn.qkv.bias"):
            # The key bias's gradient is exactly zero in exact arithmetic (softmax is
            # invariant to a shift shared by all keys), so Adam's m/√v turns float32
            # rounding noise into ±lr steps: only bounded by 5 steps of size lr (+ decay).
            assert np.abs(a[D:2 * D] - b[D:2 * D]).max() <= 2 * 5 * 1e-3 + 1e-6
            a, b = np.delete(a, np.s_[D:2 * D]), np.delete(b, np.s_[D:2 * D])
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=k)


def test_model_gradients_on_numba_match_finite_differences():
    """The whole model on the numba backend in float64 (BLAS gemms, fused epilogues and
    attention included): every parameter's gradient and the image gradient agree with
    centred finite differences."""
    cfg = tiny_config(image_size=8, patch_size=2, dim=12, heads=3, mlp_dim=20)   # N = 17
    m = perturbed_model(cfg, seed=3, backend="numba")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 3))
    y = np.array([0, 2])

    def loss():
        return softmax_cross_entropy(m.be.to_host(m.forward(x)), y)

    _, dlogits = loss()
    dx = m.backward(dlogits, need_dimages=True)
    f = lambda: np.array(loss()[0])
    for n, p in m.params.items():
        err = check_gradient(f, p, m.grads[n], num_checks=8, seed=1)
        assert err < 1e-6, (n, err)
    assert check_gradient(f, x, dx, num_checks=12) < 1e-6


def test_cli_threads_option(capsys):
    """``minivit --threads N`` sets the thread count before the command runs; a bad count
    is one line on stderr and exit status 2."""
    from minivit import cli
    old = threads.get_threads()
    try:
        assert cli.main(["--threads", "1", "attention-example"]) == 0
        assert threads.get_threads()["numba"] == 1
        capsys.readouterr()
        assert cli.main(["--threads", "0", "attention-example"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "threads must be a positive integer" in err[0]
    finally:
        threads.set_threads(old["numba"])
        if old["blas"] is not None:
            threads._set_blas(old["blas"])
