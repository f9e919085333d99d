"""Whole training steps on the CUDA backend: they match the NumPy reference, and they stay
on the device (only the batch goes up and the loss comes down)."""
import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.backends.cuda_backend import is_device_array

CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16,
                num_classes=3)
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05)


def perturbed_params(config, seed=0, scale=0.3):
    """Official init plus noise: the zero head would otherwise zero every gradient."""
    host = ViT(config, seed=seed, dtype="float64").state_dict()
    rng = np.random.default_rng(seed + 1)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in host.items()}


def batch(config, B=2, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, config.image_size, config.image_size,
                             config.channels)).astype(np.float32)
    return x, rng.integers(0, config.num_classes, size=B)


def train_step(model, state, x, y, step):
    """forward, loss, backward, AdamW over all parameters via the backend."""
    be = model.be
    logits = model.forward(x)
    loss, dlogits = be.softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    for name, p in model.params.items():
        if name not in state:
            state[name] = (be.zeros_like(p), be.zeros_like(p))
        m, v = state[name]
        be.adamw_update(p, model.grads[name], m, v, step=step, **ADAM)
    return loss


def test_three_adamw_steps_match_numpy(be_small):
    params = perturbed_params(CFG)
    ref = ViT(CFG, dtype="float32", backend="numpy", params=params)
    gpu = ViT(CFG, dtype="float32", backend=be_small, params=params)
    s_ref, s_gpu = {}, {}
    for step in (1, 2, 3):
        x, y = batch(CFG, seed=step)
        l_ref = train_step(ref, s_ref, x, y, step)
        l_gpu = train_step(gpu, s_gpu, x, y, step)
        assert l_gpu == pytest.approx(l_ref, rel=1e-5)
        for name, g in ref.grads.items():
            assert np.abs(g).max() > 0, f"{name} has a zero gradient: weak test"
            np.testing.assert_allclose(be_small.to_host(gpu.grads[name]), g, rtol=1e-3,
                                       atol=1e-5 * max(1.0, np.abs(g).max()), err_msg=name)
    D = CFG.dim
    for name, p in ref.params.items():
        got = be_small.to_host(gpu.params[name])
        if name.endswith("attn.qkv.bias"):
            # The key bias has an exactly zero gradient (q·b_k shifts every score of a
            # row equally; softmax ignores it), so both backends feed rounding noise to
            # AdamW, which turns noise into steps of ±lr. Compare it loosely, the rest
            # tightly.
            np.testing.assert_allclose(got[D:2 * D], p[D:2 * D], atol=2 * 3 * ADAM["lr"])
            got, p = np.delete(got, np.s_[D:2 * D]), np.delete(p, np.s_[D:2 * D])
        np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-5, err_msg=name)
        m_ref, v_ref = s_ref[name]
        np.testing.assert_allclose(be_small.to_host(s_gpu[name][0]), m_ref, rtol=1e-3,
                                   atol=1e-6, err_msg=name)


def test_model_variants_match_numpy(be_small):
    """Overlapping patches, 2-D position embeddings, erf GELU, pre-logits head, one head,
    odd N, input gradients and kept attention maps."""
    cfg = ViTConfig(image_size=7, patch_size=3, stride=2, dim=6, depth=1, heads=1,
                    mlp_dim=10, num_classes=4, gelu="erf", head_type="pre-logits",
                    pos_embed="learned-2d")
    params = perturbed_params(cfg)
    ref = ViT(cfg, dtype="float32", backend="numpy", params=params)
    gpu = ViT(cfg, dtype="float32", backend=be_small, params=params)
    x, y = batch(cfg, B=1)
    lr = ref.forward(x, keep_attention=True)
    lg = gpu.forward(x, keep_attention=True)
    np.testing.assert_allclose(be_small.to_host(lg), lr, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.last_attention[0], ref.last_attention[0], rtol=1e-4,
                               atol=1e-6)
    _, d = ref.be.softmax_cross_entropy(lr, y, 0.1)
    _, dg = be_small.softmax_cross_entropy(lg, y, 0.1)
    di_ref = ref.backward(d, need_dimages=True)
    di_gpu = gpu.backward(dg, need_dimages=True)
    np.testing.assert_allclose(be_small.to_host(di_gpu), di_ref, rtol=1e-3, atol=1e-5)
    for name, g in ref.grads.items():
        np.testing.assert_allclose(be_small.to_host(gpu.grads[name]), g, rtol=1e-3,
                                   atol=1e-5 * max(1.0, np.abs(g).max()), err_msg=name)


def test_model_trained_with_training_only_knobs_evaluates_on_the_gpu(be_small):
    """Dropout, stochastic depth and patch dropout act in training steps only: a model
    trained with them (like the shipped default) predicts on the GPU as on the CPU."""
    cfg = ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16,
                    num_classes=3, dropout=0.1, drop_path=0.1, patch_keep=0.5)
    params = perturbed_params(cfg)
    ref = ViT(cfg, dtype="float32", backend="numpy", params=params)
    gpu = ViT(cfg, dtype="float32", backend=be_small, params=params)
    x, _ = batch(cfg, B=2)
    np.testing.assert_allclose(be_small.to_host(gpu.forward(x)), ref.forward(x),
                               rtol=1e-4, atol=1e-5)


def test_training_step_stays_on_the_device(be_small, monkeypatch):
    model = ViT(CFG, dtype="float32", backend=be_small, params=perturbed_params(CFG))
    state = {}
    x, y = batch(CFG)
    train_step(model, state, x, y, 1)                       # warm-up: state allocated
    devcls = type(model.params["head.weight"])
    counts = {"down": 0, "up": 0}
    orig_down, orig_up = devcls.copy_to_host, devcls.copy_to_device

    def down(self, *a, **k):
        counts["down"] += 1
        assert int(np.prod(self.shape)) == 1, f"device→host copy of shape {self.shape}"
        return orig_down(self, *a, **k)

    def up(self, *a, **k):
        counts["up"] += 1
        return orig_up(self, *a, **k)

    from numba import cuda
    monkeypatch.setattr(devcls, "copy_to_host", down)
    monkeypatch.setattr(devcls, "copy_to_device", up)
    monkeypatch.setattr(cuda, "to_device",
                        lambda *a, **k: pytest.fail("cuda.to_device inside a step"))
    loss = train_step(model, state, x, y, 2)
    assert isinstance(loss, float)
    assert counts == {"down": 1, "up": 2}, counts           # loss down; images, labels up
    for name in model.params:
        for a in (model.params[name], model.grads[name], *state[name]):
            assert is_device_array(a), name


def test_workspace_reuse_no_allocation_in_steady_state(be_small):
    model = ViT(CFG, dtype="float32", backend=be_small, params=perturbed_params(CFG))
    state = {}
    x, y = batch(CFG)
    for step in (1, 2):                # step 2 still holds step 1's gradients
        train_step(model, state, x, y, step)
    before = be_small.workspace.allocations
    for step in (3, 4):
        train_step(model, state, x, y, step)
    assert be_small.workspace.allocations == before
    assert be_small.workspace.free_count() > 0
    be_small.workspace.release()
    assert be_small.workspace.free_count() == 0


def test_the_gpu_benchmarks_training_step_learns():
    """benchmarks/gpu.py's (and cuda_step_ab.py's) timed step: at the official init (zero
    head) the loss is ln(classes) exactly; five AdamW steps on one batch lower it."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    from minivit.backends.cuda_backend import CudaBackend
    from minivit.backends.cuda_kernels import SMALL_TILES
    step, x, y = gpu.cuda_training_step(CFG, 2, CudaBackend(tiles=SMALL_TILES))
    assert x.shape == (2, 8, 8, 3) and y.shape == (2,)
    losses = [float(step(i)) for i in range(5)]
    assert abs(losses[0] - np.log(CFG.num_classes)) < 1e-5
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
