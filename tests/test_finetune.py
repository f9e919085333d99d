"""Fine-tuning (paper §3.2): position-embedding resampling, new heads, the CLI recipe."""
import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.errors import ConfigError
from minivit.finetune import adapt_params
from minivit.ops.embedding import resample_pos_embed, resample_pos_embed_2d
from minivit.ops.resample import bilinear_resize, interp_matrix, resize_images


def _ramp_pos(g, D, a=0.7, b=-1.3, d=0.25):
    """(1, 1 + g², D) whose grid part is the linear ramp a·r + b·c + d (times k+1 per
    channel k) and whose class-token row is a marker."""
    r, c = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    grid = (a * r + b * c + d)[..., None] * (1.0 + np.arange(D))
    cls = np.full((1, D), 42.0)
    return np.concatenate([cls, grid.reshape(g * g, D)])[None], (a, b, d)


def test_same_grid_is_identity(rng):
    pos = rng.standard_normal((1, 65, 6))
    out = resample_pos_embed(pos, (8, 8))
    np.testing.assert_array_equal(out, pos)
    assert out is not pos


def test_interp_matrix_rows_sum_to_one():
    for n_in, n_out in ((8, 12), (12, 8), (1, 5), (5, 1), (7, 7)):
        for ac in (False, True):
            W = interp_matrix(n_in, n_out, ac)
            assert W.shape == (n_out, n_in)
            np.testing.assert_allclose(W.sum(1), 1.0)
            assert (W >= 0).all()


@pytest.mark.parametrize("align_corners", [True, False])
def test_linear_ramp_is_reproduced(align_corners):
    g, g2, D = 8, 12, 3
    pos, (a, b, d) = _ramp_pos(g, D)
    out = resample_pos_embed(pos, (g2, g2), align_corners=align_corners)
    assert out.shape == (1, 1 + g2 * g2, D)
    np.testing.assert_array_equal(out[0, 0], pos[0, 0])          # class token kept
    i = np.arange(g2, dtype=np.float64)
    if align_corners:
        src = i * (g - 1) / (g2 - 1)                  # first/last samples coincide
    else:
        src = (i + 0.5) * g / g2 - 0.5                # cell-centre convention
        # Outside [0, g−1] the border value is repeated (clamped): there the ramp
        # cannot continue, so the exact answer is the ramp at the clamped coordinate.
        assert (src < 0).any() and (src > g - 1).any()
        src = np.clip(src, 0, g - 1)
    R, C = np.meshgrid(src, src, indexing="ij")
    expect = (a * R + b * C + d)[..., None] * (1.0 + np.arange(D))
    got = out[0, 1:].reshape(g2, g2, D)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("new", [(12, 12), (5, 5), (6, 10)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_matches_torch(rng, new, align_corners):
    torch = pytest.importorskip("torch")
    grid = rng.standard_normal((8, 8, 4))
    ours = bilinear_resize(grid, new, align_corners)
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(t, size=new, mode="bilinear",
                                          align_corners=align_corners)
    np.testing.assert_allclose(ours, ref[0].permute(1, 2, 0).numpy(), atol=1e-12)


def test_resize_images_uint8_and_float(rng):
    x = rng.integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    y = resize_images(x, 48)
    assert y.shape == (2, 48, 48, 3) and y.dtype == np.uint8
    const = np.full((1, 32, 32, 3), 77, np.uint8)
    assert (resize_images(const, 48) == 77).all()
    assert resize_images(x, 32) is x


def test_adapt_32_to_48_pixels_new_zero_head(rng):
    old = ViTConfig.preset("cifar10-tiny", head_type="pre-logits", num_classes=100)
    new = old.replace(image_size=48, num_classes=10, head_type="linear")
    assert old.grid == (8, 8) and new.grid == (12, 12)
    m = ViT(old, seed=0)
    params = m.state_dict()
    params["head.weight"] += 1.0
    out = adapt_params(params, old, new)
    assert list(out) == list(new.param_shapes())
    for k, shape in new.param_shapes().items():
        assert out[k].shape == shape, k
    assert out["pos_embed"].shape == (1, 145, 128)
    assert not (out["head.weight"].any() or out["head.bias"].any())   # zero head
    assert "pre_logits.weight" not in out
    np.testing.assert_array_equal(out["blocks.2.mlp.fc1.weight"], params["blocks.2.mlp.fc1.weight"])
    np.testing.assert_array_equal(out["pos_embed"][0, 0], params["pos_embed"][0, 0])
    m2 = ViT(new, params=out)
    logits = m2.forward(rng.standard_normal((1, 48, 48, 3)).astype(np.float32))
    assert logits.shape == (1, 10) and not logits.any()            # zero head → 0 logits


def test_adapt_keeps_head_when_unchanged_and_2d_pos(rng):
    old = ViTConfig(image_size=16, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16,
                    pos_embed="learned-2d")
    new = old.replace(image_size=24)
    params = ViT(old).state_dict()
    params["head.weight"] = rng.standard_normal(params["head.weight"].shape)
    out = adapt_params(params, old, new)
    np.testing.assert_array_equal(out["head.weight"], params["head.weight"])
    assert out["pos_embed_row"].shape == (6, 4) and out["pos_embed_col"].shape == (6, 4)
    r2, c2 = resample_pos_embed_2d(params["pos_embed_row"], params["pos_embed_col"], (6, 6))
    np.testing.assert_array_equal(out["pos_embed_row"], r2)
    np.testing.assert_array_equal(out["pos_embed_cls"], params["pos_embed_cls"])
    ViT(new, params=out)                                           # shapes accepted


def test_adapt_refuses_backbone_changes():
    old = ViTConfig.preset("cifar10-tiny")
    with pytest.raises(ConfigError, match="patch_size"):
        adapt_params(ViT(old).state_dict(), old, old.replace(patch_size=8))
    with pytest.raises(ConfigError, match="square grid"):
        resample_pos_embed(np.zeros((1, 11, 4)), (4, 4))


def _tiny_data(rng, n=16, size=16, classes=10):
    return {"x_train": rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
            "y_train": rng.integers(0, classes, n), "classes": tuple(map(str, range(classes))),
            "x_test": rng.integers(0, 256, (n // 2, size, size, 3)).astype(np.uint8),
            "y_test": rng.integers(0, classes, n // 2)}


def test_finetune_uses_paper_recipe(tmp_path, monkeypatch, rng):
    """finetune adapts the checkpoint and calls minivit.train.train with the §4.1 recipe
    (SGD momentum 0.9, cosine, no weight decay, clip 1). The trainer is replaced by a
    recorder, so this tests only our side of the call."""
    from minivit.checkpoint import save_checkpoint
    from minivit.finetune import finetune
    cfg = ViTConfig(image_size=16, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16,
                    num_classes=5, head_type="pre-logits", patch_keep=0.5, dropout=0.1)
    save_checkpoint(tmp_path / "ck.npz", ViT(cfg))
    calls = []
    monkeypatch.setattr("minivit.train.train",
                        lambda config, **kw: calls.append((config, kw)) or {"ok": True})
    data = _tiny_data(rng)
    assert finetune(tmp_path / "ck.npz", tmp_path / "ft", image_size=24, num_classes=10,
                    epochs=2, lr=0.01, data=data, log=lambda *a: None) == {"ok": True}
    (config, kw), = calls
    assert config.image_size == 24 and config.num_classes == 10 and config.head_type == "linear"
    assert config.patch_keep == 1.0 and config.dropout == 0.1   # patch dropout off, dropout kept
    s = kw["settings"]
    assert s.optimizer == "sgd" and s.momentum == 0.9 and s.weight_decay == 0.0
    assert s.schedule == "cosine" and s.clip_norm == 1.0 and s.lr == 0.01
    assert s.epochs == 2 and s.warmup_epochs == pytest.approx(0.1)   # 5% of the run
    assert kw["out_dir"] == tmp_path / "ft" and kw["data"] is data
    assert kw["init_params"]["pos_embed"].shape == (1, 37, 8)
    assert not kw["init_params"]["head.weight"].any()


def test_train_resizes_images_to_the_model(rng):
    from minivit.train import _fit_images
    data = _tiny_data(rng)
    out = _fit_images(data, ViTConfig(image_size=24, patch_size=4, dim=8, depth=1, heads=2,
                                      mlp_dim=16), log=lambda *a: None)
    assert out["x_train"].shape == (16, 24, 24, 3) and out["x_test"].shape == (8, 24, 24, 3)


def test_finetune_runs_with_the_real_trainer(tmp_path, rng):
    """End to end through minivit.train (a few steps on random data, numpy backend)."""
    pytest.importorskip("minivit.train")
    from minivit.checkpoint import load_model, save_checkpoint
    from minivit.finetune import finetune
    cfg = ViTConfig(image_size=16, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16,
                    num_classes=5)
    save_checkpoint(tmp_path / "ck.npz", ViT(cfg))
    try:
        finetune(tmp_path / "ck.npz", tmp_path / "ft", image_size=24, num_classes=10,
                 epochs=1, lr=0.01, batch_size=8, data=_tiny_data(rng), backend="numpy",
                 progress=False, log=lambda *a, **k: None)
    except TypeError as e:                       # the trainer's API moved: say so clearly
        pytest.fail(f"minivit.train.train no longer accepts the fine-tuning call: {e}")
    m, _ = load_model(tmp_path / "ft" / "checkpoint.npz")
    assert m.config.image_size == 24 and m.config.num_classes == 10
