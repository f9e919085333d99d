"""The convolutional ops and models, checked three ways:

* every NumPy op's backward against centred finite differences in float64 (conv with
  stride and padding, batch norm in train and eval mode, ReLU, max/average pooling,
  global average pooling), and whole ResNet / hybrid gradients on sampled entries;
* every op, and the whole ResNet and hybrid ViT (logits, every parameter gradient, the
  running statistics), against torch autograd on identical weights in float64 (1e-6);
* every Numba kernel against the NumPy reference (float32 and float64).
"""
import numpy as np
import pytest

from minivit.backends.conv_ops import get_conv_ops
from minivit.errors import ConfigError
from minivit.gradcheck import check_gradient
from minivit.hybrid import HybridViT
from minivit.ops import linear_forward, patches_forward, softmax_cross_entropy
from minivit.ops.activations import relu_backward, relu_forward
from minivit.ops.batchnorm import batchnorm_backward, batchnorm_forward
from minivit.ops.conv import col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col
from minivit.ops.pooling import (avgpool2d_backward, avgpool2d_forward, global_avgpool_backward,
                                 global_avgpool_forward, maxpool2d_backward, maxpool2d_forward)
from minivit.resnet import ResNet
from minivit.resnet_config import HybridConfig, ResNetConfig

TOL = 1e-6
# (H, k, stride, padding): same-size 3×3, stride 2 with padding, 1×1 stride-2 shortcut,
# patch-embedding-like k = s, a stride that leaves pixels unused, padding ≥ k/2.
CONV_CASES = [(7, 3, 1, 1), (8, 3, 2, 1), (7, 1, 2, 0), (6, 2, 2, 0), (9, 3, 2, 0), (5, 3, 1, 2)]
POOL_CASES = [(6, 2, 2), (7, 3, 2), (5, 3, 1), (6, 2, 1)]


def _check(f, x, analytic, dout):
    err = check_gradient(f, x, analytic, dout=dout)
    assert err < TOL, err


def tiny_resnet_config(**kw):
    """8×8 images; stage 0 has a projection block and an identity block, stage 1 a
    stride-2 projection block."""
    base = dict(image_size=8, channels=3, stem_width=3, widths=(4, 6), depths=(2, 1),
                num_classes=3)
    base.update(kw)
    return ResNetConfig(**base)


def tiny_hybrid_config(**kw):
    """8×8 images → 4×4×6 feature map → N = 16 tokens of a D = 8 encoder."""
    base = dict(image_size=8, channels=3, stem_width=3, widths=(4, 6), depths=(1, 1), dim=8,
                depth=2, heads=2, mlp_dim=16, num_classes=3)
    base.update(kw)
    return HybridConfig(**base)


def perturbed(model, seed=0, scale=0.3):
    """Perturb every parameter (the ViT head starts at zero) and the running statistics
    (variances kept positive), so every gradient and both BN modes are exercised."""
    rng = np.random.default_rng(seed)
    host = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            host[k] = v * np.exp(0.3 * rng.standard_normal(v.shape))
        else:
            host[k] = v + scale * rng.standard_normal(v.shape)
    model.load_params(host)
    return model


# ====================================================================== finite differences
@pytest.mark.parametrize("H,k,s,p", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_grad(rng, H, k, s, p, bias):
    x = rng.standard_normal((2, H, H + 1, 3))
    W = rng.standard_normal((k, k, 3, 4))
    b = rng.standard_normal(4) if bias else None
    y, cache = conv2d_forward(x, W, b, s, p)
    assert y.shape == (2, (H + 2 * p - k) // s + 1, (H + 1 + 2 * p - k) // s + 1, 4)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = conv2d_backward(dy, cache)
    f = lambda: conv2d_forward(x, W, b, s, p)[0]
    _check(f, x, dx, dy)
    _check(f, W, dW, dy)
    if bias:
        _check(f, b, db, dy)
    else:
        assert db is None
    assert conv2d_backward(dy, cache, need_dx=False)[0] is None


def test_conv2d_definition(rng):
    # y[b, i, j, f] = Σ x_pad[b, i·s + u, j·s + v, c] W[u, v, c, f] + b[f], by loops
    x, W, b = rng.standard_normal((2, 6, 5, 3)), rng.standard_normal((3, 3, 3, 2)), rng.standard_normal(2)
    y, _ = conv2d_forward(x, W, b, stride=2, padding=1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros(y.shape)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            ref[:, i, j] = np.einsum("buvc,uvcf->bf", xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], W) + b
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_conv_with_k_eq_stride_is_the_patch_embedding(rng):
    # Eq. 1's x_p E is a conv with k = s = P: same (h, w, c) flattening, same numbers.
    x, W, b = rng.standard_normal((2, 8, 8, 3)), rng.standard_normal((4, 4, 3, 5)), rng.standard_normal(5)
    y, _ = conv2d_forward(x, W, b, stride=4)
    e, _ = linear_forward(patches_forward(x, 4)[0], W.reshape(-1, 5), b)
    np.testing.assert_allclose(y.reshape(2, 4, 5), e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H,k,s,p", CONV_CASES)
def test_col2im_is_adjoint_of_im2col(rng, H, k, s, p):
    x = rng.standard_normal((2, H, H, 3))
    cols = im2col(x, k, s, p)
    c = rng.standard_normal(cols.shape)
    assert np.isclose((cols * c).sum(), (x * col2im(c, x.shape, k, s, p)).sum(), rtol=1e-12)


def test_conv_bad_arguments():
    x = np.zeros((1, 4, 4, 3))
    with pytest.raises(ConfigError, match="input has 3 channels, the conv kernel expects 2"):
        conv2d_forward(x, np.zeros((3, 3, 2, 4)))
    with pytest.raises(ConfigError, match=r"kernel size k=5 is larger than the padded input \(4 \+ 2·0 = 4\)"):
        conv2d_forward(x, np.zeros((5, 5, 3, 4)))
    with pytest.raises(ConfigError, match="stride must be an integer >= 1, got 0"):
        conv2d_forward(x, np.zeros((3, 3, 3, 4)), stride=0)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_grad_and_definition(rng, train):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    rm, rv = rng.standard_normal(6), np.exp(rng.standard_normal(6))
    rm0, rv0 = rm.copy(), rv.copy()
    y, cache = batchnorm_forward(x, g, b, rm, rv, train, momentum=0.2, eps=1e-3)
    if train:
        mu, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        np.testing.assert_allclose(rm, 0.8 * rm0 + 0.2 * mu, rtol=1e-12)
        np.testing.assert_allclose(rv, 0.8 * rv0 + 0.2 * var * 60 / 59, rtol=1e-12)   # unbiased
    else:
        mu, var = rm0, rv0
        np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * g + b, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dg, db = batchnorm_backward(dy, cache)
    f = lambda: batchnorm_forward(x, g, b, rm0.copy(), rv0.copy(), train, 0.2, 1e-3)[0]
    _check(f, x, dx, dy)
    _check(f, g, dg, dy)
    _check(f, b, db, dy)


def test_batchnorm_needs_two_values_per_channel():
    with pytest.raises(ConfigError, match="more than one value per channel"):
        batchnorm_forward(np.zeros((1, 1, 1, 3)), np.ones(3), np.zeros(3))


def test_relu_grad(rng):
    x = rng.standard_normal((3, 7))
    x[x.__abs__() < 1e-3] = 0.5                    # keep finite differences off the kink
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    dy = rng.standard_normal(y.shape)
    _check(lambda: relu_forward(x)[0], x, relu_backward(dy, cache), dy)


@pytest.mark.parametrize("H,k,s", POOL_CASES)
def test_maxpool_grad_and_definition(rng, H, k, s):
    x = rng.standard_normal((2, H, H, 3))
    y, cache = maxpool2d_forward(x, k, s)
    Ho = (H - k) // s + 1
    ref = np.array([[x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2)) for j in range(Ho)]
                    for i in range(Ho)]).transpose(2, 0, 1, 3)
    np.testing.assert_array_equal(y, ref)
    dy = rng.standard_normal(y.shape)
    _check(lambda: maxpool2d_forward(x, k, s)[0], x, maxpool2d_backward(dy, cache), dy)


@pytest.mark.parametrize("H,k,s", POOL_CASES)
def test_avgpool_grad_and_definition(rng, H, k, s):
    x = rng.standard_normal((2, H, H, 3))
    y, cache = avgpool2d_forward(x, k, s)
    np.testing.assert_allclose(y[:, 1, 0], x[:, s:s + k, :k].mean(axis=(1, 2)), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    _check(lambda: avgpool2d_forward(x, k, s)[0], x, avgpool2d_backward(dy, cache), dy)


def test_global_avgpool_grad(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, cache = global_avgpool_forward(x)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    _check(lambda: global_avgpool_forward(x)[0], x, global_avgpool_backward(dy, cache), dy)


@pytest.mark.parametrize("kind,trunk,classifier", [
    ("resnet", "resnet", None), ("resnet", "pool", None), ("hybrid", "resnet", "token"),
    ("hybrid", "pool", "token"), ("hybrid", "pool", "gap")])
def test_whole_model_grads_by_finite_differences(kind, trunk, classifier):
    # Training mode (batch statistics): sampled entries of every parameter and the images.
    if kind == "resnet":
        m = perturbed(ResNet(tiny_resnet_config(trunk=trunk), dtype="float64"))
    else:
        cfg = tiny_hybrid_config(trunk=trunk, classifier=classifier)
        m = perturbed(HybridViT(cfg, dtype="float64"))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 8, 3))
    y = np.array([0, 1, 2])
    m.forward(x, train=True)
    loss, dlogits = softmax_cross_entropy(m.forward(x, train=True), y)
    dx = m.backward(dlogits, need_dimages=True)
    grads = dict(m.grads)
    f = lambda: softmax_cross_entropy(m.forward(x, train=True), y)[0]
    for n, p in m.params.items():
        err = check_gradient(f, p, grads[n], num_checks=3, seed=len(n))
        assert err < TOL, (n, err)
    assert check_gradient(f, x, dx, num_checks=8) < TOL


# ====================================================================== torch parity
try:                    # the oracle extra; only the tests marked needs_torch use it
    import torch
    F = torch.nn.functional
    from torch_resnet import TorchResNet, TorchTrunk, from_torch, load_into
    from torch_vit import torch_forward
except ImportError:
    torch = None
HAVE_TORCH = torch is not None
needs_torch = pytest.mark.skipif(torch is None,
                                 reason="torch not installed: pip install -e '.[oracle]'")


def _nchw(a):
    return torch.tensor(a).permute(0, 3, 1, 2).contiguous().requires_grad_(True)


def _nhwc(t):
    return t.permute(0, 2, 3, 1).detach().numpy()


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@needs_torch
@pytest.mark.parametrize("H,k,s,p", CONV_CASES)
def test_conv2d_matches_torch(rng, H, k, s, p):
    x, W, b = rng.standard_normal((2, H, H, 3)), rng.standard_normal((k, k, 3, 4)), rng.standard_normal(4)
    y, cache = conv2d_forward(x, W, b, s, p)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = conv2d_backward(dy, cache)
    tx, tW = _nchw(x), torch.tensor(W).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    tb = torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tW, tb, stride=s, padding=p)
    ty.backward(_nchw(dy).detach())
    _close(y, _nhwc(ty))
    _close(dx, _nhwc(tx.grad))
    _close(dW, tW.grad.permute(2, 3, 1, 0).numpy())
    _close(db, tb.grad.numpy())


@needs_torch
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_torch(rng, train):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    rm, rv = rng.standard_normal(6), np.exp(rng.standard_normal(6))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y, cache = batchnorm_forward(x, g, b, rm, rv, train, 0.1, 1e-5)
    dy = rng.standard_normal(y.shape)
    dx, dg, db = batchnorm_backward(dy, cache)
    tx, tg, tb = _nchw(x), torch.tensor(g, requires_grad=True), torch.tensor(b, requires_grad=True)
    ty = F.batch_norm(tx, trm, trv, tg, tb, training=train, momentum=0.1, eps=1e-5)
    ty.backward(_nchw(dy).detach())
    _close(y, _nhwc(ty))
    _close(rm, trm.numpy())
    _close(rv, trv.numpy())
    _close(dx, _nhwc(tx.grad))
    _close(dg, tg.grad.numpy())
    _close(db, tb.grad.numpy())


@needs_torch
@pytest.mark.parametrize("op", ["relu", "max", "avg", "gap"])
@pytest.mark.parametrize("H,k,s", POOL_CASES)
def test_activation_and_pooling_match_torch(rng, op, H, k, s):
    x = rng.standard_normal((2, H, H, 3))
    tx = _nchw(x)
    if op == "relu":
        (y, c), ty = relu_forward(x), F.relu(tx)
        back = relu_backward
    elif op == "max":
        (y, c), ty = maxpool2d_forward(x, k, s), F.max_pool2d(tx, k, s)
        back = maxpool2d_backward
    elif op == "avg":
        (y, c), ty = avgpool2d_forward(x, k, s), F.avg_pool2d(tx, k, s)
        back = avgpool2d_backward
    else:
        (y, c), ty = global_avgpool_forward(x), tx.mean(dim=(2, 3))[:, :, None, None]
        back = global_avgpool_backward
    dy = rng.standard_normal(y.shape)
    dx = back(dy, c)
    y4, dy4 = (y[:, None, None], dy[:, None, None]) if op == "gap" else (y, dy)
    ty.backward(_nchw(dy4).detach())
    _close(y4, _nhwc(ty))
    _close(dx, _nhwc(tx.grad))


@needs_torch
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("trunk", ["resnet", "pool"])
def test_resnet_matches_torch(train, smoothing, trunk):
    cfg = tiny_resnet_config(trunk=trunk)
    m = perturbed(ResNet(cfg, dtype="float64"), seed=7)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 8, 8, 3)), np.array([0, 1, 2, 1])
    tm = load_into(TorchResNet(cfg), m.state_dict()).train(train)

    logits = m.forward(x, train=train)
    loss, dlogits = softmax_cross_entropy(logits, y, smoothing)
    m.backward(dlogits)
    tlogits = tm(torch.tensor(x).permute(0, 3, 1, 2))
    tloss = F.cross_entropy(tlogits, torch.tensor(y), label_smoothing=smoothing)
    tloss.backward()

    _close(logits, tlogits.detach().numpy())
    assert abs(loss - tloss.item()) < 1e-9
    tparams = dict(tm.named_parameters())
    assert set(tparams) == set(m.params)
    for n in m.params:
        np.testing.assert_allclose(m.grads[n], from_torch(n, tparams[n].grad), rtol=1e-6,
                                   atol=1e-9, err_msg=n)
    for n, b in tm.named_buffers():              # running statistics after the step
        if not n.endswith("num_batches_tracked"):
            np.testing.assert_allclose(m.buffers[n], b.numpy(), rtol=1e-12, err_msg=n)


@needs_torch
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("trunk,classifier", [("resnet", "token"), ("pool", "token"),
                                              ("pool", "gap")])
def test_hybrid_matches_torch(train, trunk, classifier):
    # classifier="gap" (Appendix D.3): no class token; the head reads the mean token.
    cfg = tiny_hybrid_config(head_type="pre-logits", trunk=trunk, classifier=classifier)
    m = perturbed(HybridViT(cfg, dtype="float64"), seed=5)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 8, 8, 3)), np.array([2, 0, 1])
    state = m.state_dict()
    trunk = load_into(TorchTrunk(cfg), state).train(train)
    vit = {k: torch.tensor(state[k], requires_grad=True) for k in cfg.vit.param_shapes()}

    logits = m.forward(x, train=train)
    loss, dlogits = softmax_cross_entropy(logits, y)
    m.backward(dlogits)
    fmap = trunk(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    tlogits = torch_forward(vit, cfg.vit, fmap)             # 1×1 patches of the feature map
    F.cross_entropy(tlogits, torch.tensor(y)).backward()

    _close(logits, tlogits.detach().numpy())
    tgrads = {n: from_torch(n, p.grad) for n, p in trunk.named_parameters()}
    tgrads.update({n: t.grad.numpy() for n, t in vit.items()})
    assert set(tgrads) == set(m.params) == set(m.grads)
    for n in m.params:
        np.testing.assert_allclose(m.grads[n], tgrads[n], rtol=1e-6, atol=1e-9, err_msg=n)


# ====================================================================== numba vs numpy
from test_numba_backend import close, rand  # noqa: E402

NB, NP = get_conv_ops("numba"), get_conv_ops("numpy")
DTYPES = [np.float32, np.float64]


def _same(r1, r2, dtype):
    for a, r in zip(r1, r2):
        assert (a is None) == (r is None)
        if r is not None:
            close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,k,s,p", CONV_CASES + [(5, 1, 1, 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_numba_conv2d(dtype, H, k, s, p, bias):
    rng = np.random.default_rng(0)
    x, W = rand(rng, (2, H, H + 2, 5), dtype), rand(rng, (k, k, 5, 7), dtype)
    b = rand(rng, (7,), dtype) if bias else None
    y1, c1 = NB.conv2d_forward(x, W, b, s, p)
    y2, c2 = NP.conv2d_forward(x, W, b, s, p)
    close(y1, y2, dtype)
    dy = rand(rng, y2.shape, dtype)
    for need_dx in (True, False):
        _same(NB.conv2d_backward(dy, c1, need_dx), NP.conv2d_backward(dy, c2, need_dx), dtype)


@pytest.mark.parametrize("H,k,s,p", [(7, 3, 1, 1), (8, 3, 2, 1), (5, 1, 1, 0)])
def test_numba_conv2d_without_in_pool_blas(monkeypatch, H, k, s, p):
    # BLAS other than OpenBLAS: the whole-batch im2col kernel and NumPy's @ instead.
    import minivit.backends.numba_conv as nc
    monkeypatch.setattr(nc, "HAVE_CBLAS", False)
    rng = np.random.default_rng(4)
    x, W, b = rand(rng, (3, H, H, 4), np.float64), rand(rng, (k, k, 4, 5), np.float64), \
        rand(rng, (5,), np.float64)
    y1, c1 = NB.conv2d_forward(x, W, b, s, p)
    y2, c2 = NP.conv2d_forward(x, W, b, s, p)
    assert c1[-1] is False                       # the cache says which path made it
    close(y1, y2, np.float64)
    dy = rand(rng, y2.shape, np.float64)
    _same(NB.conv2d_backward(dy, c1, True), NP.conv2d_backward(dy, c2, True), np.float64)


@pytest.mark.parametrize("H,k,s,p", [(7, 3, 1, 1), (8, 3, 2, 1), (5, 3, 1, 2), (5, 1, 1, 0),
                                     (5, 1, 1, 1), (7, 1, 2, 0)])
@pytest.mark.parametrize("images_per_block", [1, 2, 3])
def test_numba_conv2d_blocks(monkeypatch, H, k, s, p, images_per_block):
    # 7 images in blocks of 1, 2 or 3: several blocks per thread, a short last block, and
    # dW's per-thread partials summed — all must equal the one-GEMM reference.
    rng = np.random.default_rng(3)
    x, W = rand(rng, (7, H, H + 1, 4), np.float64), rand(rng, (k, k, 4, 6), np.float64)
    Ho, Wo = conv_output_size(H, k, s, p), conv_output_size(H + 1, k, s, p)
    rows = max(Ho * Wo * k * k * 4, H * (H + 1) * k * k * 6) * 8
    monkeypatch.setattr(NB, "block_bytes", rows * images_per_block)
    assert 1 <= NB._images_per_block(7, rows) <= images_per_block     # ≥ 3 blocks
    y1, c1 = NB.conv2d_forward(x, W, None, s, p)
    y2, c2 = NP.conv2d_forward(x, W, None, s, p)
    close(y1, y2, np.float64)
    dy = rand(rng, y2.shape, np.float64)
    _same(NB.conv2d_backward(dy, c1, True), NP.conv2d_backward(dy, c2, True), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 2, 3), (4, 9)])
def test_numba_batchnorm(dtype, train, shape):
    rng = np.random.default_rng(1)
    C = shape[-1]
    x = rand(rng, shape, dtype, 2.0) + 1
    g, b = rand(rng, (C,), dtype), rand(rng, (C,), dtype)
    stats = [rand(rng, (C,), dtype), np.exp(rand(rng, (C,), dtype))]
    s1, s2 = [a.copy() for a in stats], [a.copy() for a in stats]
    y1, c1 = NB.batchnorm_forward(x, g, b, *s1, train, 0.1, 1e-5)
    y2, c2 = NP.batchnorm_forward(x, g, b, *s2, train, 0.1, 1e-5)
    close(y1, y2, dtype)
    _same(s1, s2, dtype)
    dy = rand(rng, shape, dtype)
    _same(NB.batchnorm_backward(dy, c1), NP.batchnorm_backward(dy, c2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,k,s", POOL_CASES)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_numba_pooling(dtype, H, k, s, op):
    rng = np.random.default_rng(2)
    x = rand(rng, (3, H, H + 1, 5), dtype)
    fwd, bwd = f"{op}pool2d_forward", f"{op}pool2d_backward"
    y1, c1 = getattr(NB, fwd)(x, k, s)
    y2, c2 = getattr(NP, fwd)(x, k, s)
    close(y1, y2, dtype)
    dy = rand(rng, y2.shape, dtype)
    close(getattr(NB, bwd)(dy, c1), getattr(NP, bwd)(dy, c2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_relu_add_relu_gap(dtype):
    rng = np.random.default_rng(3)
    a, b = rand(rng, (2, 3, 4, 5), dtype), rand(rng, (2, 3, 4, 5), dtype)
    for r1, r2 in ((NB.relu_forward(a), NP.relu_forward(a)), (NB.add_relu(a, b), NP.add_relu(a, b))):
        close(r1[0], r2[0], dtype)
        close(NB.relu_backward(b, r1[1]), NP.relu_backward(b, r2[1]), dtype)
    y1, c1 = NB.global_avgpool_forward(a)
    y2, c2 = NP.global_avgpool_forward(a)
    close(y1, y2, dtype)
    dy = rand(rng, y2.shape, dtype)
    close(NB.global_avgpool_backward(dy, c1), NP.global_avgpool_backward(dy, c2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,trunk,classifier", [
    ("resnet", "resnet", None), ("resnet", "pool", None), ("hybrid", "resnet", "token"),
    ("hybrid", "pool", "token"), ("hybrid", "pool", "gap")])
def test_numba_whole_model(dtype, kind, trunk, classifier):
    cls, cfg = ((ResNet, tiny_resnet_config(trunk=trunk)) if kind == "resnet"
                else (HybridViT, tiny_hybrid_config(trunk=trunk, classifier=classifier)))
    host = perturbed(cls(cfg, dtype="float64")).state_dict()
    m1, m2 = cls(cfg, dtype=dtype, backend="numba", params=host), cls(cfg, dtype=dtype, params=host)
    x = np.random.default_rng(4).standard_normal((3, 8, 8, 3)).astype(dtype)
    y = np.array([0, 2, 1])
    l1, z1 = m1.loss_and_grads(x, y)
    l2, z2 = m2.loss_and_grads(x, y)
    close(z1, z2, dtype)
    for n in m2.params:
        close(m1.grads[n], m2.grads[n], dtype)
    for n in m2.buffers:
        close(m1.buffers[n], m2.buffers[n], dtype)
    close(m1.predict_proba(x), m2.predict_proba(x), np.float64 if dtype == np.float64 else dtype,
          **({} if dtype == np.float64 else dict(rtol=1e-3)))
