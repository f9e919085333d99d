"""The recipe-search knobs (issue 15): GAP classifier, fixed 2-D sine-cosine position
embeddings, dropout, stochastic depth and patch dropout. Ops against finite differences (float64, fixed
masks), the whole model against finite differences with every knob on, the masks'
statistics and determinism, config validation and parameter counts, the numba backend
against numpy. (Torch autograd parity: tests/test_torch_parity.py.)"""
import math

import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit import ops
from minivit.errors import ConfigError
from minivit.gradcheck import check_gradient
from minivit.model import drop_path_rates, unsupported_on_cuda
from minivit.ops import softmax_cross_entropy

from conftest import perturbed_model, tiny_config


def _check(f, x, analytic, dout):
    assert check_gradient(f, x, analytic, dout) < 1e-7


# ---------------------------------------------------------------------- ops
def test_dropout_op_grad_with_fixed_mask(rng):
    x = rng.standard_normal((2, 5, 6))
    m = ops.dropout_mask(np.random.default_rng(0), x.shape, 0.4, np.float64)
    y, cache = ops.dropout_forward(x, m)
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.dropout_forward(x, m)[0], x, ops.dropout_backward(dy, cache), dy)
    # inverted dropout: kept entries scaled by 1/(1-p), dropped ones exactly 0
    kept = m != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-15)
    assert (y[~kept] == 0).all() and kept.any() and (~kept).any()


def test_drop_path_op_grad_broadcasts_per_sample(rng):
    x = rng.standard_normal((6, 4, 3))
    m = ops.drop_path_mask(np.random.default_rng(5), 6, 0.5, np.float64)
    assert m.shape == (6, 1, 1) and set(np.unique(m)) <= {0.0, 2.0}
    y, cache = ops.dropout_forward(x, m)
    for b in range(6):                       # a whole sample kept (×2) or dropped (0)
        np.testing.assert_array_equal(y[b], x[b] * m[b, 0, 0])
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.dropout_forward(x, m)[0], x, ops.dropout_backward(dy, cache), dy)


def test_dropout_mask_statistics_and_determinism():
    m = ops.dropout_mask(np.random.default_rng(1), (200, 500), 0.1, np.float32)
    assert m.dtype == np.float32
    assert abs((m == 0).mean() - 0.1) < 0.005            # 100k draws: σ ≈ 0.001
    assert abs(float(m.mean()) - 1.0) < 0.01             # E[m] = 1 (inverted scaling)
    np.testing.assert_array_equal(
        m, ops.dropout_mask(np.random.default_rng(1), (200, 500), 0.1, np.float32))


def test_keep_tokens_op_grad_and_indices(rng):
    """Patch dropout's gather: y[b, j] = z[b, idx[b, j]]; its backward scatters dy back
    and leaves the dropped tokens at zero."""
    idx = np.stack([ops.patch_keep_indices(np.random.default_rng(b), 6, 3) for b in range(2)])
    assert idx.shape == (2, 4) and (idx[:, 0] == 0).all()      # the class token stays
    for row in idx:                                             # 3 distinct patches, in order
        assert list(row) == sorted(set(row)) and 1 <= row[1] and row[-1] <= 6
    assert not np.array_equal(idx[0], idx[1])                   # each image draws its own
    z = rng.standard_normal((2, 7, 5))
    y, cache = ops.keep_tokens_forward(z, idx)
    for b in range(2):
        np.testing.assert_array_equal(y[b], z[b, idx[b]])
    dy = rng.standard_normal(y.shape)
    dz = ops.keep_tokens_backward(dy, cache)
    _check(lambda: ops.keep_tokens_forward(z, idx)[0], z, dz, dy)
    dropped = np.ones((2, 7), bool)
    dropped[np.arange(2)[:, None], idx] = False
    assert (dz[dropped] == 0).all() and dropped.sum() == 6
    # GAP (no class token): K positions among 0 … N−1; K = N keeps everything
    gap = ops.patch_keep_indices(np.random.default_rng(0), 6, 3, cls_first=False)
    assert gap.shape == (3,) and gap.max() < 6
    np.testing.assert_array_equal(
        ops.patch_keep_indices(np.random.default_rng(0), 6, 6, cls_first=False), np.arange(6))


def test_mean_tokens_grad(rng):
    z = rng.standard_normal((3, 5, 4))
    y, cache = ops.mean_tokens_forward(z)
    np.testing.assert_allclose(y, z.sum(axis=1) / 5, rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    _check(lambda: ops.mean_tokens_forward(z)[0], z, ops.mean_tokens_backward(dy, cache), dy)


def test_pos_add_and_pos2d_without_class_token_grad(rng):
    e = rng.standard_normal((2, 4, 6))
    row, col = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))

    def f():
        return ops.pos_add_forward(e, ops.pos2d_forward(None, row, col)[0])[0]
    pos, pcache = ops.pos2d_forward(None, row, col)
    assert pos.shape == (1, 4, 6)
    np.testing.assert_array_equal(pos[0, 1 * 2 + 1], np.concatenate([row[1], col[1]]))
    z, cache = ops.pos_add_forward(e, pos)
    dz = rng.standard_normal(z.shape)
    de, dpos = ops.pos_add_backward(dz, cache)
    dpc, drow, dcol = ops.pos2d_backward(dpos, pcache)
    assert dpc is None
    for arr, g in ((e, de), (row, drow), (col, dcol)):
        _check(f, arr, g, dz)


def test_sincos2d_values():
    """big_vision's posemb_sincos_2d, entry by entry from its formula."""
    gh, gw, D = 3, 5, 16
    pe = ops.sincos2d_pos_embed(gh, gw, D)
    assert pe.shape == (15, 16)
    q = D // 4
    for r in range(gh):
        for c in range(gw):
            n = r * gw + c                   # row-major: the patch order of minivit
            for k in range(q):
                w = 10000.0 ** (-k / (q - 1))
                assert pe[n, k] == pytest.approx(math.sin(c * w), abs=1e-15)
                assert pe[n, q + k] == pytest.approx(math.cos(c * w), abs=1e-15)
                assert pe[n, 2 * q + k] == pytest.approx(math.sin(r * w), abs=1e-15)
                assert pe[n, 3 * q + k] == pytest.approx(math.cos(r * w), abs=1e-15)
    # lowest frequency is 1/10000, the highest 1: patch (0, 1) has sin(1) first
    assert pe[1, 0] == pytest.approx(math.sin(1.0))


# ---------------------------------------------------------------------- config
def test_param_counts_for_gap_and_sincos():
    base = ViTConfig.preset("cifar10-tiny")
    D, N = base.dim, base.num_patches
    gap = base.replace(classifier="gap")
    # no class token (D) and one position embedding fewer (D)
    assert base.num_params() - gap.num_params() == 2 * D
    assert gap.param_shapes()["pos_embed"] == (1, N, D) and "cls_token" not in gap.param_shapes()
    sc = base.replace(pos_embed="sincos2d")
    assert base.num_params() - sc.num_params() == (N + 1) * D
    assert not any(k.startswith("pos_embed") for k in sc.param_shapes())
    gap2d = base.replace(classifier="gap", pos_embed="learned-2d")
    assert "pos_embed_cls" not in gap2d.param_shapes()
    for c in (gap, sc, gap2d, base.replace(pos_embed="sincos2d", classifier="gap")):
        assert ViT(c, dtype="float32").num_params() == c.num_params()
    # dropout and stochastic depth have no parameters
    assert base.replace(dropout=0.1, drop_path=0.1).num_params() == base.num_params()


def test_flops_count_the_issue_figure():
    """Issue 15: cifar10-tiny costs ~233 MFLOP per training image (matmuls and attention,
    forward + backward = 3 × forward); GAP has one token fewer."""
    c = ViTConfig.preset("cifar10-tiny")
    N1, D, M, L = 65, 128, 256, 4
    fwd = 2 * 64 * 48 * D + L * (2 * N1 * D * 3 * D + 2 * N1 * D * D + 4 * N1 * N1 * D
                                 + 4 * N1 * D * M) + 2 * D * 10
    assert c.flops_per_image() == fwd
    assert c.train_flops_per_image() == 3 * fwd
    assert round(c.train_flops_per_image() / 1e6) == 233
    assert c.replace(classifier="gap").flops_per_image() < fwd
    # patch dropout: a training image's encoder runs on K + 1 = 33 tokens (all 64 patches
    # are still embedded); evaluation stays at the full count
    h = c.replace(patch_keep=0.5)
    K1 = 33
    assert (h.train_num_patches, h.train_num_tokens) == (32, K1)
    assert h.train_flops_per_image() == 3 * (
        2 * 64 * 48 * D + L * (2 * K1 * D * 3 * D + 2 * K1 * D * D + 4 * K1 * K1 * D
                               + 4 * K1 * D * M) + 2 * D * 10)
    assert h.flops_per_image() == fwd
    assert 0.45 < h.train_flops_per_image() / c.train_flops_per_image() < 0.5


@pytest.mark.parametrize("kw,match", [
    (dict(classifier="mean"), "classifier must be one of"),
    (dict(dropout=1.0), r"dropout must be a rate in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), "dropout must be a rate"),
    (dict(drop_path=1.5), r"drop_path must be a rate in \[0, 1\), got 1.5"),
    (dict(drop_path="0.1"), "drop_path must be a rate"),
    (dict(patch_keep=0.0), r"patch_keep must be a fraction in \(0, 1\], got 0.0"),
    (dict(patch_keep=1.5), r"patch_keep must be a fraction in \(0, 1\], got 1.5"),
    (dict(patch_keep=True), "patch_keep must be a fraction"),
    (dict(pos_embed="sincos2d", dim=6, heads=2), "D divisible by 4 and >= 8.*D=6"),
    (dict(pos_embed="sincos2d", dim=4, heads=2), "D=4"),
    (dict(attn_init="orthogonal"), r"attn_init must be one of \('xavier', 'mimetic'\), got 'orthogonal'"),
])
def test_config_refuses_bad_knobs(kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(**kw)


def test_config_round_trips_new_fields():
    c = tiny_config(classifier="gap", pos_embed="sincos2d", dropout=0.1, drop_path=0.2,
                    attn_init="mimetic")
    assert ViTConfig.from_json(c.to_json()) == c
    # a config written before these fields existed still loads, with the defaults
    old = {k: v for k, v in c.to_dict().items()
           if k not in ("classifier", "dropout", "drop_path", "attn_init")}
    old["pos_embed"] = "learned-1d"
    d = ViTConfig.from_dict(old)
    assert (d.classifier, d.dropout, d.drop_path, d.attn_init) == ("token", 0.0, 0.0, "xavier")


@pytest.mark.parametrize("D,H", [(128, 4), (48, 3)])
def test_mimetic_init_products(D, H):
    """Trockman & Kolter's targets: each head's W_q·W_kᵀ is the best rank-D_h part of
    0.7·Z + 0.7·I (a positive diagonal), W_v·W_o = 0.4·Z − 0.4·I exactly, Z of variance
    1/D; every other parameter is the Xavier model's, draw for draw."""
    from minivit.model import init_params
    mim = init_params(tiny_config(dim=D, heads=H, depth=2, attn_init="mimetic"), seed=3)
    xav = init_params(tiny_config(dim=D, heads=H, depth=2), seed=3)
    Dh = D // H
    for layer in range(2):
        W = mim[f"blocks.{layer}.attn.qkv.weight"]
        Wq, Wk, Wv = W[:, :D], W[:, D:2 * D], W[:, 2 * D:]
        Wo = mim[f"blocks.{layer}.attn.proj.weight"]
        VO = Wv @ Wo
        off = VO - np.diag(np.diag(VO))
        assert np.trace(VO) / D == pytest.approx(-0.4, abs=0.4 * 3 / D)
        assert off.std() == pytest.approx(0.4 / math.sqrt(D), rel=0.1)
        for h in range(H):
            cols = slice(h * Dh, (h + 1) * Dh)
            P = Wq[:, cols] @ Wk[:, cols].T
            assert np.linalg.matrix_rank(P) == Dh
            # the rank-D_h part of 0.7·(Z + I) keeps the largest singular directions,
            # where I and Z align: a clearly positive mean diagonal (about 0.32 at
            # D = 128, D_h = 32), against about 0 for Xavier's independent q and k
            assert np.trace(P) / D > 0.2
            Xq, Xk = (xav[f"blocks.{layer}.attn.qkv.weight"][:, o:o + D][:, cols]
                      for o in (0, D))
            assert abs(np.trace(Xq @ Xk.T) / D) < 0.1
        # the two heads' Z are independent draws: their products differ
        assert not np.allclose(Wq[:, :Dh] @ Wk[:, :Dh].T, Wq[:, Dh:2 * Dh] @ Wk[:, Dh:2 * Dh].T)
    others = [k for k in xav if not k.endswith(("attn.qkv.weight", "attn.proj.weight"))]
    assert others and all(np.array_equal(mim[k], xav[k]) for k in others)
    again = init_params(tiny_config(dim=D, heads=H, depth=2, attn_init="mimetic"), seed=3)
    assert all(np.array_equal(again[k], mim[k]) for k in mim)


def test_drop_path_rates_linear_rule():
    assert drop_path_rates(tiny_config(depth=5, drop_path=0.2)) == \
        pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(tiny_config(depth=1, drop_path=0.2)) == [0.0]


def test_cuda_refusal_names_the_knob():
    assert unsupported_on_cuda(tiny_config()) is None
    assert unsupported_on_cuda(tiny_config(classifier="gap")) == "classifier='gap'"
    assert unsupported_on_cuda(tiny_config(pos_embed="sincos2d")) == "pos_embed='sincos2d'"
    assert unsupported_on_cuda(tiny_config(dropout=0.1)) == "dropout"
    assert unsupported_on_cuda(tiny_config(drop_path=0.1)) == "drop_path"
    assert unsupported_on_cuda(tiny_config(patch_keep=0.5)) == "patch_keep"
    # evaluation: only the knobs that change the forward pass without a training step
    assert unsupported_on_cuda(tiny_config(classifier="gap"), training=False) == "classifier='gap'"
    assert unsupported_on_cuda(tiny_config(pos_embed="sincos2d"), training=False) == \
        "pos_embed='sincos2d'"
    assert unsupported_on_cuda(tiny_config(dropout=0.1, drop_path=0.1, patch_keep=0.5),
                               training=False) is None


def test_cuda_training_knobs_refused_before_the_first_step_and_at_it():
    """A model trained with dropout / patch dropout evaluates on the GPU, but training it
    there is refused up front (the trainer) and, as a backstop, at a training forward."""
    from types import SimpleNamespace

    from minivit.objectives import Classification
    from minivit.settings import TrainSettings
    with pytest.raises(ConfigError, match="^patch_keep is not supported on the cuda backend"):
        Classification().build_model(tiny_config(patch_keep=0.5),
                                     TrainSettings(backend="cuda"))
    m = ViT(tiny_config(dropout=0.1), dtype="float64")
    m.be = SimpleNamespace(name="cuda")      # no GPU here: the refusal comes before any kernel
    with pytest.raises(ConfigError, match="^dropout is not supported on the cuda backend"):
        m.begin_forward(2, rng_key=(0, 1))
    m.begin_forward(2)                       # evaluation draws no masks: allowed


# ---------------------------------------------------------------------- whole model
ALL_ON = dict(classifier="gap", pos_embed="sincos2d", dropout=0.25, drop_path=0.5, depth=3)


@pytest.mark.parametrize("kw", [ALL_ON, dict(dropout=0.25, drop_path=0.5, depth=3,
                                            pos_embed="learned-2d", head_type="pre-logits"),
                                dict(classifier="gap"), dict(pos_embed="sincos2d"),
                                dict(patch_keep=0.5, dropout=0.25, depth=3),
                                dict(patch_keep=0.75, classifier="gap",
                                     pos_embed="learned-2d")],
                         ids=["gap-sincos-dropout-droppath", "token-2d-dropout-droppath",
                              "gap", "sincos", "patchkeep-dropout", "patchkeep-gap-2d"])
def test_model_gradients_with_knobs_match_finite_differences(kw):
    """The training-step masks are a function of rng_key alone, so every forward of the
    finite-difference probe sees the same masks: the model is a fixed function."""
    cfg = tiny_config(**kw)
    m = perturbed_model(cfg, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, cfg.image_size, cfg.image_size, 3))
    y = np.array([0, 2, 1])
    # a key whose drop-path masks keep every branch for at least one of the 3 images
    # (else that branch's parameters rightly get no gradient)
    key = (7, 43)
    assert all((mk.reshape(3, -1) != 0).any() for mk in m.draw_masks(key, 3).values())

    def loss():
        return softmax_cross_entropy(m.forward(x, rng_key=key), y, 0.1)
    _, dlogits = loss()
    dx = m.backward(dlogits, need_dimages=True)
    assert set(m.grads) == set(m.params)
    f = lambda: np.array(loss()[0])                                   # noqa: E731
    for n, p in m.params.items():
        err = check_gradient(f, p, m.grads[n], num_checks=12, seed=1)
        assert err < 1e-6, (n, err)
        assert np.abs(m.grads[n]).max() > 0, f"{n} received no gradient"
    assert check_gradient(f, x, dx, num_checks=20) < 1e-6


def test_dropout_only_in_training_steps_and_masks_from_key():
    cfg = tiny_config(dropout=0.3, drop_path=0.5, depth=3)
    m = perturbed_model(cfg, seed=2)
    plain = perturbed_model(cfg.replace(dropout=0.0, drop_path=0.0), seed=2)
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
    # evaluation (no key): exactly the model without dropout
    np.testing.assert_array_equal(m.forward(x), plain.forward(x))
    a = m.forward(x, rng_key=(0, 5))
    masks_a = dict(m.last_masks)
    b = m.forward(x, rng_key=(0, 5))
    np.testing.assert_array_equal(a, b)                      # same key, same masks
    c = m.forward(x, rng_key=(0, 6))
    assert not np.allclose(a, c)                             # next step, new masks
    assert not np.allclose(a, plain.forward(x))
    # sites and shapes: T = N + 1 = 5 tokens, D = 8, M = 16; block 0 has drop-path rate 0
    assert masks_a["embed"].shape == (4, 5, 8)
    assert masks_a["blocks.0.fc1"].shape == (4, 5, 16)
    assert masks_a["blocks.2.mlp"].shape == (4, 5, 8)
    # global numpy state is neither used nor disturbed
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    m.forward(x, rng_key=(0, 5))
    assert np.random.random() == before


def test_masks_of_a_shard_are_those_rows_of_the_global_batch():
    """An MPI rank draws the masks of its shard only, keyed by the shard's first row in
    the global batch: they equal those rows of a one-process draw, so K ranks train with
    exactly the masks of a single process."""
    cfg = tiny_config(dropout=0.3, drop_path=0.5, depth=3, patch_keep=0.5)
    m = perturbed_model(cfg, seed=2)
    full = m.draw_masks((3, 11), 6)
    assert full["keep"].shape == (6, 3)
    for first, n in ((0, 3), (3, 3), (2, 2), (5, 1)):
        shard = m.draw_masks((3, 11), n, first_row=first)
        assert set(shard) == set(full)
        for k in full:
            np.testing.assert_array_equal(shard[k], full[k][first:first + n], err_msg=k)
    x = np.random.default_rng(0).standard_normal((6, 8, 8, 3))
    whole = m.forward(x, rng_key=(3, 11))
    np.testing.assert_allclose(m.forward(x[4:], rng_key=(3, 11), first_row=4), whole[4:],
                               rtol=1e-12, atol=1e-14)
    assert not np.allclose(m.forward(x[4:], rng_key=(3, 11)), whole[4:])   # row 0's masks


def test_drop_path_drops_whole_samples_of_a_branch():
    """With drop_path only, a sample's MLP branch mask is constant over (N, D): 0 or 1/(1-p)."""
    cfg = tiny_config(drop_path=0.6, depth=2)
    m = perturbed_model(cfg, seed=0)
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 3))
    m.forward(x, rng_key=(1, 1))
    mk = m.last_masks["blocks.1.mlp"]
    assert mk.shape == (16, 1, 1)
    assert set(np.unique(mk)) == {0.0, 1 / 0.4}
    assert "blocks.0.mlp" not in m.last_masks and "embed" not in m.last_masks


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_backend_matches_numpy_with_every_knob(dtype):
    pytest.importorskip("numba")
    cfg = tiny_config(**ALL_ON)
    ref = perturbed_model(cfg, seed=4, dtype=dtype)
    nb = ViT(cfg, dtype=dtype, backend="numba", params=ref.state_dict())
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8, 8, 3))
    y = np.array([1, 0, 2])
    la, ga = ref.loss_and_grads(x, y, 0.1, rng_key=(0, 9))
    lb, gb = nb.loss_and_grads(x, y, 0.1, rng_key=(0, 9))
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(gb, ga, **tol)
    for n in ref.params:
        np.testing.assert_allclose(nb.grads[n], ref.grads[n], err_msg=n, **tol)


def test_patch_dropout_only_in_training_steps():
    """Evaluation (no key) sees every token: exactly the model without patch dropout. A
    training step keeps K + 1 tokens, so its attention matrices are (K+1)×(K+1), the
    same tokens for the same key, and the numba backend agrees with numpy."""
    cfg = tiny_config(patch_keep=0.5, image_size=12)            # N = 9 → K = 4 (round 4.5)
    m = perturbed_model(cfg, seed=2)
    full = perturbed_model(cfg.replace(patch_keep=1.0), seed=2)
    x = np.random.default_rng(0).standard_normal((3, 12, 12, 3))
    np.testing.assert_array_equal(m.forward(x), full.forward(x))
    a = m.forward(x, rng_key=(1, 2), keep_attention=True)
    assert m.last_attention[0].shape == (3, 2, 5, 5)
    kept = m.last_masks["keep"]
    np.testing.assert_array_equal(a, m.forward(x, rng_key=(1, 2)))
    assert not np.allclose(a, full.forward(x))
    np.testing.assert_array_equal(kept, m.draw_masks((1, 2), 3)["keep"])
    assert not np.array_equal(kept, m.draw_masks((1, 3), 3)["keep"])
    # a model whose unkept tokens are replaced gives the same training-step logits
    y = x.copy()
    cells = [(r, c) for r in range(3) for c in range(3)]
    dropped = sorted(set(range(1, 10)) - set(kept[0]))
    for t in dropped:
        r, c = cells[t - 1]
        y[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 5.0
    np.testing.assert_allclose(m.forward(y, rng_key=(1, 2))[0], a[0], rtol=1e-12)
    pytest.importorskip("numba")
    nb = ViT(cfg, dtype="float64", backend="numba", params=m.state_dict())
    la, ga = m.loss_and_grads(x, np.array([0, 1, 2]), 0.1, rng_key=(1, 2))
    lb, gb = nb.loss_and_grads(x, np.array([0, 1, 2]), 0.1, rng_key=(1, 2))
    np.testing.assert_allclose(gb, ga, rtol=1e-9, atol=1e-11)
    for n in m.params:
        np.testing.assert_allclose(nb.grads[n], m.grads[n], rtol=1e-9, atol=1e-11, err_msg=n)


# ---------------------------------------------------------------------- inspection of GAP models
def test_inspect_handles_gap_and_sincos_models():
    from minivit.inspect import (attention_maps, cls_rollout_map, mean_attention_distance,
                                 patch_position_embeddings)
    gap = perturbed_model(tiny_config(classifier="gap", image_size=12), seed=0)   # 3x3 grid
    pe = patch_position_embeddings(gap)
    np.testing.assert_array_equal(pe.reshape(9, 8), gap.state_dict()["pos_embed"][0])
    sc = perturbed_model(tiny_config(pos_embed="sincos2d", image_size=12), seed=0)
    np.testing.assert_array_equal(patch_position_embeddings(sc).reshape(9, 8),
                                  ops.sincos2d_pos_embed(3, 3, 8))
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3))
    atts = attention_maps(gap, x)
    assert atts[0].shape == (2, 2, 9, 9)                      # N tokens, no class token
    maps = cls_rollout_map(atts, gap.config.grid)
    assert maps.shape == (2, 3, 3)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0)    # the mean of stochastic rows
    d = mean_attention_distance(atts, (3, 3), 4)
    assert d.shape == (2, 2) and (d > 0).all()


def test_pretrain_refuses_gap_by_name():
    from minivit.pretrain import MPPModel
    with pytest.raises(ConfigError, match="classifier='gap' is not supported yet"):
        MPPModel(tiny_config(classifier="gap"))
    with pytest.raises(ConfigError, match="patch_keep=0.5 is not supported"):
        MPPModel(tiny_config(patch_keep=0.5))


def test_pretrain_uses_the_dropout_masks_of_its_key_and_refuses_ema():
    """Masked patch prediction runs the ViT's stages itself: a training step's key still
    reaches the dropout / drop-path masks (same key, same loss; no key: no dropout)."""
    from minivit.ops.masked import corruption_plan, mean_color_targets
    from minivit.pretrain import MaskedPatchPrediction, MPPModel
    from minivit.settings import TrainSettings
    cfg = tiny_config(dropout=0.3, drop_path=0.4, depth=2)
    mpp = MPPModel(cfg, seed=0, dtype="float64")
    mpp.vit.load_params(perturbed_model(cfg, seed=1).state_dict())
    extra = mpp.extra_state()                        # the zero-initialised head: perturbed
    extra["mpp_head.weight"] = np.random.default_rng(1).standard_normal(
        extra["mpp_head.weight"].shape)
    mpp.load_extra(extra)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    x = raw / 255.0
    targets = mean_color_targets(raw, cfg.patch_size)
    plan = corruption_plan(3, cfg.num_patches, 0)
    a, _ = mpp.loss_and_grads(x, targets, plan, rng_key=(0, 1))
    b, _ = mpp.loss_and_grads(x, targets, plan, rng_key=(0, 1))
    c, _ = mpp.loss_and_grads(x, targets, plan)
    assert a == b and a != c
    assert mpp.vit.last_masks == {}                  # the keyless step used none
    with pytest.raises(ConfigError, match="ema_decay is not supported by masked patch"):
        MaskedPatchPrediction().build_model(cfg, TrainSettings(ema_decay=0.9))
