"""The whole model: gradients against finite differences (float64), every parameter gets
a gradient, Eq. 1–4 wiring, and a short synthetic training run."""
import numpy as np
import pytest

from minivit import ViT
from minivit.gradcheck import check_gradient
from minivit.ops import softmax_cross_entropy
from minivit.optim import SGD

from conftest import perturbed_model, tiny_config

VARIANTS = {
    "linear-1d-tanh": dict(),
    "prelogits-erf": dict(head_type="pre-logits", gelu="erf"),
    "2d-pos": dict(pos_embed="learned-2d"),
    "no-pos": dict(pos_embed="none"),
    "overlapping": dict(image_size=8, patch_size=4, stride=2),
    "one-head": dict(heads=1),
}


def _loss(model, x, y, smoothing):
    return softmax_cross_entropy(model.forward(x), y, smoothing)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_model_gradients_match_finite_differences(name, smoothing):
    cfg = tiny_config(**VARIANTS[name])
    m = perturbed_model(cfg, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cfg.image_size, cfg.image_size, 3))
    y = np.array([0, 2])
    loss, dlogits = _loss(m, x, y, smoothing)
    dx = m.backward(dlogits, need_dimages=True)
    assert set(m.grads) == set(m.params)
    f = lambda: np.array(_loss(m, x, y, smoothing)[0])
    for n, p in m.params.items():
        err = check_gradient(f, p, m.grads[n], num_checks=12, seed=1)
        assert err < 1e-6, (n, err)
        assert np.abs(m.grads[n]).max() > 0, f"{n} received no gradient"
    # and the gradient with respect to the input image (patches' adjoint)
    assert check_gradient(f, x, dx, num_checks=20) < 1e-6


def test_official_init_zero_head_blocks_gradients():
    """Why the checks above perturb the weights: with the zero head of the official
    initialisation only the head gets a gradient at step 0."""
    cfg = tiny_config()
    m = ViT(cfg, dtype="float64")
    assert not m.params["head.weight"].any() and not m.params["cls_token"].any()
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    _, d = _loss(m, x, np.array([0, 1]), 0.0)
    m.backward(d)
    assert np.abs(m.grads["head.weight"]).max() > 0
    assert np.abs(m.grads["blocks.0.attn.qkv.weight"]).max() == 0


def test_init_statistics():
    m = ViT("cifar10-small", seed=0, dtype="float64")
    D = m.config.dim
    assert abs(m.params["pos_embed"].std() - 0.02) < 0.001
    q = m.params["blocks.0.attn.qkv.weight"][:, :D]
    assert np.abs(q).max() <= np.sqrt(6 / (2 * D))          # Xavier-uniform, fan (D, D)
    assert abs(m.params["blocks.0.mlp.fc1.bias"].std() - 1e-6) < 2e-7
    assert not m.params["blocks.0.attn.qkv.bias"].any()
    np.testing.assert_array_equal(m.params["blocks.0.norm1.weight"], 1.0)


def test_seed_determinism_and_dtype():
    a, b = ViT("cifar10-tiny", seed=5), ViT("cifar10-tiny", seed=5)
    c = ViT("cifar10-tiny", seed=6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["pos_embed"], c.params["pos_embed"])
    assert a.params["pos_embed"].dtype == np.float32


def test_attention_kept_for_inspection():
    cfg = tiny_config()
    m = perturbed_model(cfg)
    m.forward(np.zeros((3, 8, 8, 3)), keep_attention=True)
    assert len(m.last_attention) == cfg.depth
    A = m.last_attention[0]
    assert A.shape == (3, cfg.heads, cfg.num_patches + 1, cfg.num_patches + 1)
    np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-12)


def test_synthetic_training_drives_loss_down():
    """200 steps of plain SGD on a learnable toy task: the class is which image quadrant
    is bright. Forward, backward and update must fit together for the loss to fall."""
    cfg = tiny_config(num_classes=4, dim=16, heads=2, mlp_dim=32)
    m = ViT(cfg, seed=0, dtype="float32")
    opt = SGD(m, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)

    def batch(n):
        y = rng.integers(0, 4, n)
        x = rng.standard_normal((n, 8, 8, 3)).astype(np.float32) * 0.3
        for i, c in enumerate(y):
            r, s = divmod(int(c), 2)
            x[i, r * 4:(r + 1) * 4, s * 4:(s + 1) * 4] += 1.5
        return x, y

    losses = []
    for _ in range(200):
        x, y = batch(32)
        loss, _ = m.loss_and_grads(x, y)
        opt.step()
        losses.append(loss)
    assert np.mean(losses[:10]) > 1.2            # starts near ln 4 = 1.386
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:10])
    xv, yv = batch(256)
    acc = (m.predict_proba(xv).argmax(1) == yv).mean()
    assert acc > 0.9
