"""Masked patch prediction (paper §4.6, B.1.2): targets, corruption, loss, pre-training."""
import numpy as np
import pytest

from minivit import ViTConfig
from minivit.checkpoint import load_model
from minivit.errors import ConfigError
from minivit.gradcheck import check_gradient
from minivit.ops.masked import (KEEP, KEPT_CORRUPTED, MASK, RANDOM, CorruptionPlan,
                                PatchCorruption, corruption_backward, corruption_forward,
                                corruption_plan, masked_patch_loss, mean_color_targets)
from minivit.data.synthetic import make_synthetic
from minivit.pretrain import (MPPModel, load_pretrained, pretrain,
                              require_mpp_ops)
from minivit.settings import MPPSettings

from conftest import tiny_config


# ---------------------------------------------------------------------- targets
def _four_patch_image():
    """8×8 RGB, P = 4 → a 2×2 grid: white, black / pure red, half black half white."""
    img = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    img[0, :4, :4] = 255                      # patch 0: white
    img[0, 4:, :4] = (255, 0, 0)              # patch 2: pure red
    img[0, 4:, 4:6] = 255                     # patch 3: left half white → mean 0.5
    return img


def test_mean_color_targets_known_patches():
    t = mean_color_targets(_four_patch_image(), 4)
    # white → 7·64 + 7·8 + 7 = 511; black → 0; red → 7·64 = 448; mean 0.5 → level 4
    assert t.shape == (1, 4) and t.dtype.kind == "i"
    assert t.tolist() == [[511, 0, 448, 4 * 64 + 4 * 8 + 4]]


def test_mean_color_targets_float_input_and_bins():
    img = _four_patch_image()
    np.testing.assert_array_equal(mean_color_targets(img / 255.0, 4),
                                  mean_color_targets(img, 4))
    # Bin edges: channel mean m lands in level ⌊8 m⌋; exactly 1/8 is level 1.
    x = np.zeros((1, 4, 4, 3))
    x[..., 0], x[..., 1], x[..., 2] = 0.125, 0.124, 0.99
    assert mean_color_targets(x, 4)[0, 0] == 1 * 64 + 0 * 8 + 7
    with pytest.raises(ConfigError):
        mean_color_targets(img / 127.5 - 1.0, 4)     # standardised pixels are refused
    with pytest.raises(ConfigError):
        mean_color_targets(np.zeros((1, 8, 8, 1), np.uint8), 4)


def test_mean_color_targets_overlapping_patches():
    img = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    img[0, :, :4] = 255                         # left half white
    t = mean_color_targets(img, 4, S=2)         # 3×3 grid; middle column half white
    assert t.shape == (1, 9)
    assert t.reshape(3, 3)[:, 0].tolist() == [511] * 3
    assert t.reshape(3, 3)[:, 1].tolist() == [292] * 3
    assert t.reshape(3, 3)[:, 2].tolist() == [0] * 3


# ---------------------------------------------------------------------- corruption plan
def test_corruption_plan_proportions():
    B, N = 200, 256
    plan = corruption_plan(B, N, np.random.default_rng(0))
    assert plan.corrupted.shape == plan.kind.shape == plan.source.shape == (B, N)
    assert plan.kind.dtype == np.int8
    frac = plan.corrupted.mean()
    assert abs(frac - 0.5) <= 0.01
    np.testing.assert_array_equal(plan.corrupted, plan.kind != KEEP)
    k = plan.kind[plan.corrupted]
    assert abs((k == MASK).mean() - 0.8) <= 0.02
    assert abs((k == RANDOM).mean() - 0.1) <= 0.02
    assert abs((k == KEPT_CORRUPTED).mean() - 0.1) <= 0.02
    # sources: only for kind 2, never the patch itself, inside the batch
    flat = np.arange(B * N).reshape(B, N)
    rand = plan.kind == RANDOM
    assert (plan.source[~rand] == -1).all()
    assert (plan.source[rand] != flat[rand]).all()
    assert plan.source[rand].min() >= 0 and plan.source[rand].max() < B * N
    # the same seed gives the same plan
    again = corruption_plan(B, N, np.random.default_rng(0))
    np.testing.assert_array_equal(plan.kind, again.kind)


def test_corruption_forward_replaces_as_planned(rng):
    B, N, D = 3, 10, 5
    e = rng.standard_normal((B, N, D))
    mask = rng.standard_normal(D)
    plan = corruption_plan(B, N, rng)
    out, _ = corruption_forward(e, mask, plan)
    keep = (plan.kind == KEEP) | (plan.kind == KEPT_CORRUPTED)
    np.testing.assert_array_equal(out[keep], e[keep])
    np.testing.assert_array_equal(out[plan.kind == MASK], np.broadcast_to(mask, (int((plan.kind == MASK).sum()), D)))
    rand = plan.kind == RANDOM
    np.testing.assert_array_equal(out[rand], e.reshape(-1, D)[plan.source[rand]])


def _dense_plan(B, N, rng):
    """A plan with every kind present and a source drawn twice (scatter-add check)."""
    kind = np.array([[MASK, RANDOM, KEEP, KEPT_CORRUPTED, RANDOM, MASK]] * B, dtype=np.int8)[:, :N]
    source = np.full((B, N), -1, dtype=np.int64)
    source[kind == RANDOM] = [2, 2] + list(rng.integers(0, B * N, size=int((kind == RANDOM).sum()) - 2))
    return CorruptionPlan(kind != KEEP, kind, source)


def test_corruption_gradcheck(rng):
    B, N, D = 2, 6, 4
    e = rng.standard_normal((B, N, D))
    mask = rng.standard_normal(D)
    plan = _dense_plan(B, N, rng)
    dout = rng.standard_normal((B, N, D))
    _, cache = corruption_forward(e, mask, plan)
    de, dmask = corruption_backward(dout, cache)
    f = lambda: corruption_forward(e, mask, plan)[0]           # noqa: E731
    assert check_gradient(f, e, de, dout) < 1e-9
    assert check_gradient(f, mask, dmask, dout) < 1e-9
    # The hook object returns de only and accumulates the mask gradient.
    pc = PatchCorruption(mask)
    pc.set_plan(plan)
    out, c = pc.forward(e)
    de2 = pc.backward(dout, c)
    de2 = pc.backward(dout, c)
    np.testing.assert_allclose(de2, de)
    np.testing.assert_allclose(pc.grad, 2 * dmask)


# ---------------------------------------------------------------------- loss
def test_masked_patch_loss_value_and_gradcheck(rng):
    B, N, K = 2, 3, 512
    logits = rng.standard_normal((B, N, K))
    targets = rng.integers(0, K, size=(B, N))
    corrupted = np.array([[True, False, True], [False, False, True]])
    loss, dlogits = masked_patch_loss(logits, targets, corrupted)
    # independent value: mean over the 3 corrupted patches of −log softmax[target]
    ref = []
    for b, n in zip(*np.nonzero(corrupted)):
        z = logits[b, n]
        ref.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[targets[b, n]])
    assert abs(loss - np.mean(ref)) < 1e-12
    assert (dlogits[~corrupted] == 0).all()
    f = lambda: masked_patch_loss(logits, targets, corrupted)[0]   # noqa: E731
    assert check_gradient(f, logits, dlogits, num_checks=400) < 1e-7
    assert masked_patch_loss(logits, targets, np.zeros((B, N), bool))[0] == 0.0


def test_mpp_model_gradcheck_float64(rng):
    """The whole MPP pipeline (corruption → encoder → LN → token head → masked loss)
    against finite differences, for the extra parameters and a backbone one."""
    cfg = tiny_config(image_size=12)                   # 3×3 grid, N = 9
    m = MPPModel(cfg, seed=0, dtype="float64")
    hrng = np.random.default_rng(5)
    m.vit.load_params({k: v + 0.3 * hrng.standard_normal(v.shape)
                       for k, v in m.vit.state_dict().items()})
    m.extra["mpp_head.weight"][...] = 0.3 * hrng.standard_normal(m.extra["mpp_head.weight"].shape)
    x = rng.standard_normal((2, 12, 12, 3))
    targets = rng.integers(0, 512, size=(2, 9))
    plan = corruption_plan(2, 9, np.random.default_rng(3))
    plan.kind[0, :3] = (MASK, RANDOM, KEPT_CORRUPTED)      # make sure every kind occurs
    plan.corrupted[0, :3] = True
    plan.source[0, 1] = 5
    m.loss_and_grads(x, targets, plan)
    grads = {k: v.copy() for k, v in m.grads.items()}
    assert set(grads) == set(m.params)
    f = lambda: m.loss_and_grads(x, targets, plan)[0]     # noqa: E731
    params = m.params
    for name in ("mask_token", "mpp_head.weight", "mpp_head.bias", "norm.weight",
                 "patch_embed.weight", "blocks.0.attn.qkv.weight"):
        err = check_gradient(f, params[name], grads[name], num_checks=12, seed=1)
        assert err < 1e-6, (name, err)


# ---------------------------------------------------------------------- pre-training
CFG16 = ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64,
                  num_classes=10)
QUIET = dict(log=lambda *a: None, progress=False, backend="numpy")


def _images(n, seed=0):
    return make_synthetic(n_train=n, n_test=1, image_size=16, seed=seed)["x_train"]


def test_pretrain_lowers_loss_and_checkpoints(tmp_path):
    x = _images(64)
    r = pretrain(CFG16, x, out=tmp_path, epochs=6, batch_size=16, lr=3e-3, **QUIET)
    losses = [h["train_loss"] for h in r["history"]]
    assert len(losses) == 6 and r["history"][-1]["step"] == 24
    assert losses[-1] < losses[0] - 0.3, losses
    assert np.log(512) - 0.3 < losses[0] < np.log(512) + 0.1   # zero head: uniform start
    assert r["history"][0]["train_acc"] is None                 # not counted in training
    # backbone loads as an ordinary checkpoint; head + mask token are in the same file
    vit, meta = load_model(tmp_path / "checkpoint.npz")
    assert meta["pretrain"] == "masked-patch-prediction" and meta["epoch"] == 6
    assert meta["objective"] == "masked-patch-prediction"
    for k, v in r["model"].vit.state_dict().items():
        np.testing.assert_array_equal(vit.state_dict()[k], v)
    m2 = load_pretrained(tmp_path)
    for k, v in r["model"].extra_state().items():
        np.testing.assert_array_equal(m2.extra_state()[k], v)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 6


def test_pretrain_resume_is_bit_identical(tmp_path):
    """The shared loop gives pre-training exact resume: data order, flips and corruption
    plans all come from (seed, epoch, batch), and the head is saved with the backbone."""
    data = make_synthetic(n_train=48, n_test=16, image_size=16, seed=1)
    kw = dict(data=data, epochs=3, batch_size=16, lr=3e-3, **QUIET)
    a = pretrain(CFG16, out=tmp_path / "a", **kw)
    b1 = pretrain(CFG16, out=tmp_path / "b", stop_after_epochs=1, **kw)
    assert len(b1["history"]) == 1
    b = pretrain(out=tmp_path / "b", resume=True, data=data, **QUIET)
    for k, v in a["model"].vit.state_dict().items():
        np.testing.assert_array_equal(b["model"].vit.state_dict()[k], v)
    for k, v in a["model"].extra_state().items():
        np.testing.assert_array_equal(b["model"].extra_state()[k], v)
    assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
    assert 0 <= a["history"][-1]["test_acc"] <= 1


def test_pretrain_resume_refuses_other_mask_ratio_and_classification(tmp_path):
    data = make_synthetic(n_train=32, n_test=8, image_size=16, seed=1)
    pretrain(CFG16, out=tmp_path, data=data, epochs=1, batch_size=16, **QUIET)
    with pytest.raises(ConfigError, match="mask-ratio"):
        pretrain(out=tmp_path, resume=True, data=data, mpp=MPPSettings(mask_ratio=0.3),
                 **QUIET)
    from minivit.train import train
    with pytest.raises(ConfigError, match="is a masked-patch-prediction run"):
        train(out_dir=tmp_path, resume=True, data=data, **QUIET)


def test_pretrain_refuses_bad_input():
    cfg = ViTConfig(image_size=16, patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64)
    with pytest.raises(ConfigError):
        pretrain(cfg, np.zeros((4, 16, 16, 3), np.float32), log=None)
    with pytest.raises(ConfigError):
        MPPModel(cfg.replace(channels=1))
    with pytest.raises(ConfigError, match="mask_ratio"):
        pretrain(cfg, _images(16), mpp=MPPSettings(mask_ratio=2.0), **QUIET)


def test_backend_without_mpp_ops_is_named():
    class NoMPP:
        name = "cuda"
    with pytest.raises(ConfigError, match="cuda backend has no masked-patch-prediction ops"):
        require_mpp_ops(NoMPP())


def test_mpp_objective_takes_no_host_slices(rng):
    """The model's arrays go through the backend only: a backend that records calls sees
    the MPP-specific ops (the CUDA backend implements the same names)."""
    from minivit.backends.numpy_ops import NumpyBackend
    calls = []

    class Recording(NumpyBackend):
        name = "recording"

        def __getattribute__(self, n):
            if n in ("take_patch_tokens", "take_patch_tokens_backward", "corruption_forward",
                     "corruption_backward", "masked_patch_loss"):
                calls.append(n)
            return super().__getattribute__(n)

    m = MPPModel(tiny_config(image_size=8), backend=Recording())
    m.loss_and_grads(rng.standard_normal((2, 8, 8, 3)), rng.integers(0, 512, (2, 4)))
    assert set(calls) == {"take_patch_tokens", "take_patch_tokens_backward",
                          "corruption_forward", "corruption_backward", "masked_patch_loss"}


def test_checkpoint_extra_arrays_are_checked(tmp_path):
    """The objective's arrays live in the checkpoint (extra/…) and are validated like
    parameters: non-finite values are refused by name."""
    from minivit import ViT
    from minivit.checkpoint import load_checkpoint, save_checkpoint
    from minivit.errors import CheckpointError
    cfg = tiny_config()
    save_checkpoint(tmp_path / "ok.npz", ViT(cfg), extra={"mask_token": np.ones(8)})
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "ok.npz")["extra"]["mask_token"],
                                  np.ones(8))
    save_checkpoint(tmp_path / "bad.npz", ViT(cfg), extra={"mask_token": np.full(8, np.nan)})
    with pytest.raises(CheckpointError, match="extra/mask_token must hold finite floats"):
        load_checkpoint(tmp_path / "bad.npz")
