"""The ResNet and hybrid ViT as models: exact parameter counts (against torch's modules),
the FLOPs formula (against torch's FLOP counter), learning on a tiny batch, configs,
state dicts with running statistics, and one-line errors for bad input."""
import numpy as np
import pytest

from minivit.errors import ConfigError, TrainingError
from minivit.hybrid import HybridViT
from minivit.inspect import attention_maps
from minivit.optim import AdamW, decays
from minivit.resnet import ResNet
from minivit.resnet_config import HYBRID_PRESETS, RESNET_PRESETS, HybridConfig, ResNetConfig

from test_conv_ops import HAVE_TORCH, needs_torch, perturbed, tiny_hybrid_config, tiny_resnet_config

if HAVE_TORCH:                            # the oracle extra
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from torch_resnet import TorchResNet, TorchTrunk, load_into
    from torch_vit import torch_forward


def _torch_count(module):
    return sum(p.numel() for p in module.parameters())


@needs_torch
@pytest.mark.parametrize("name", list(RESNET_PRESETS))
def test_resnet_param_count_matches_torch(name):
    cfg = ResNetConfig.preset(name)
    tm = TorchResNet(cfg)
    assert cfg.num_params() == _torch_count(tm) == ResNet(cfg).num_params()
    stats = sum(b.numel() for n, b in tm.named_buffers() if "running" in n)
    assert sum(int(np.prod(s)) for s in cfg.buffer_shapes().values()) == stats


def test_resnet20_is_he_et_al_size():
    # He et al. 2016, Table 6: ResNet-20 has 0.27 M parameters.
    assert round(ResNetConfig.preset("resnet-20").num_params() / 1e6, 2) == 0.27


@needs_torch
@pytest.mark.parametrize("name", list(HYBRID_PRESETS))
def test_hybrid_param_count_matches_torch(name):
    cfg = HybridConfig.preset(name)
    assert cfg.num_params() == _torch_count(TorchTrunk(cfg)) + cfg.vit.num_params()
    assert HybridViT(cfg).num_params() == cfg.num_params()
    assert cfg.vit.num_patches == cfg.feature_size ** 2 and cfg.vit.patch_dim == cfg.feature_dim


@needs_torch
@pytest.mark.parametrize("trunk", ["resnet", "pool"])
def test_flops_formula_matches_torch_flop_counter(trunk):
    # torch counts 2 FLOPs per multiply-add of every conv and matmul, as our formulas do
    # (max-pooling, BN and ReLU are not counted by either).
    rc, hc = tiny_resnet_config(trunk=trunk), tiny_hybrid_config(trunk=trunk)
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    with FlopCounterMode(display=False) as fc:
        TorchResNet(rc).double()(x)
    assert fc.get_total_flops() == rc.flops_per_image()
    state = HybridViT(hc, dtype="float64").state_dict()
    trunk = load_into(TorchTrunk(hc), state)
    vit = {k: torch.tensor(state[k]) for k in hc.vit.param_shapes()}
    with FlopCounterMode(display=False) as fc:
        torch_forward(vit, hc.vit, trunk(x).permute(0, 2, 3, 1))
    assert fc.get_total_flops() == hc.flops_per_image()


@pytest.mark.parametrize("kind", ["resnet", "hybrid"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_optimizer_steps_reduce_loss(kind, backend):
    cls, cfg = (ResNet, tiny_resnet_config()) if kind == "resnet" else (HybridViT, tiny_hybrid_config())
    m = cls(cfg, seed=0, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 8, 8, 3)).astype(np.float32)
    y = np.arange(12) % 3
    opt = AdamW(m, lr=1e-2, weight_decay=0.0)                  # the trainer's optimizer
    losses = []
    for _ in range(25):
        loss, _ = m.loss_and_grads(x, y)
        losses.append(loss)
        opt.step()
    assert losses[-1] < 0.4 * losses[0], losses
    # inference mode (running statistics) has also learnt the batch
    assert (m.predict_proba(x).argmax(axis=1) == y).mean() >= 0.75


def test_inference_uses_running_statistics():
    m = perturbed(ResNet(tiny_resnet_config(), dtype="float64"))
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
    before = {k: v.copy() for k, v in m.buffers.items()}
    z1, z2 = m.forward(x), m.forward(x[:1])
    np.testing.assert_allclose(z1[:1], z2, rtol=1e-12)       # per-image: no batch statistics
    assert all(np.array_equal(before[k], m.buffers[k]) for k in before)
    m.forward(x, train=True)
    assert not np.array_equal(before["stem.norm.running_mean"], m.buffers["stem.norm.running_mean"])


@pytest.mark.parametrize("kind", ["resnet", "hybrid"])
def test_state_dict_round_trip(kind):
    cls, cfg = (ResNet, tiny_resnet_config()) if kind == "resnet" else (HybridViT, tiny_hybrid_config())
    m = perturbed(cls(cfg, dtype="float64"), seed=3)
    sd = m.state_dict()
    assert list(sd)[:len(m.params)] == list(cfg.param_shapes())
    assert set(sd) == set(cfg.param_shapes()) | set(cfg.buffer_shapes())
    m2 = cls(cfg, dtype="float64", params=sd)
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3))
    np.testing.assert_array_equal(m.forward(x), m2.forward(x))


def test_hybrid_params_are_shared_with_its_vit():
    m = HybridViT(tiny_hybrid_config())
    assert m.params["blocks.0.attn.qkv.weight"] is m.vit.params["blocks.0.attn.qkv.weight"]
    m.load_params(perturbed(HybridViT(tiny_hybrid_config())).state_dict())
    assert m.params["head.weight"] is m.vit.params["head.weight"]
    x = np.zeros((2, 8, 8, 3), np.float32)
    m.forward(x, keep_attention=True)
    assert len(m.last_attention) == 2 and m.last_attention[0].shape == (2, 2, 17, 17)
    maps = attention_maps(m, x)              # the ViT's inspection tool, unchanged
    assert len(maps) == 2 and maps[0].shape == (2, 2, 17, 17)
    np.testing.assert_allclose(maps[1].sum(axis=-1), 1.0, rtol=1e-5)


def test_weight_decay_skips_batch_norm():
    names = ResNetConfig.preset("resnet-8").param_shapes()
    assert decays("layers.1.0.conv1.weight") and decays("layers.1.0.shortcut.conv.weight")
    assert not any(decays(n) for n in names if "norm" in n)


def test_config_json_round_trip_and_presets():
    for cls, table in ((ResNetConfig, RESNET_PRESETS), (HybridConfig, HYBRID_PRESETS)):
        for name in table:
            c = cls.preset(name)
            assert cls.from_json(c.to_json()) == c
    assert HybridConfig.preset("hybrid-tiny").num_patches == 64
    # classifier="gap" (Appendix D.3) reaches the encoder: no class token, so one token
    # and one position embedding fewer (2·D parameters).
    tok = HybridConfig.preset("hybrid-pool")
    gap = HybridConfig.preset("hybrid-pool", classifier="gap")
    assert HybridConfig.from_json(gap.to_json()) == gap and gap.vit.classifier == "gap"
    assert gap.vit.num_tokens == tok.vit.num_tokens - 1 == 16
    assert tok.num_params() - gap.num_params() == 2 * tok.dim == 256


@pytest.mark.parametrize("cls,kw,msg", [
    (ResNetConfig, dict(widths=(16, 32), depths=(1,)), r"widths \(16, 32\) and depths \(1,\) must have one entry per stage"),
    (ResNetConfig, dict(image_size=30, widths=(4, 4, 4), depths=(1, 1, 1)), r"image_size=30 is not divisible by 2\^2"),
    (ResNetConfig, dict(widths=(16, 0)), "widths must be a non-empty tuple of positive integers"),
    (ResNetConfig, dict(bn_momentum=2), r"bn_momentum must be in \[0, 1\], got 2"),
    (HybridConfig, dict(dim=10, heads=4), "D=10 is not divisible by heads=4"),
    (HybridConfig, dict(trunk="vgg"), "trunk must be one of resnet, pool, got 'vgg'"),
    (HybridConfig, dict(classifier="mean"), "classifier must be one of"),
    (ResNetConfig, dict(image_size=28, widths=(4, 4, 4), depths=(1, 1, 1), trunk="pool"),
     r"image_size=28 is not divisible by 2\^3 \(one halving per stage\)"),
])
def test_bad_configs(cls, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        cls(**kw)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="unknown preset 'resnet-1000'; known presets: resnet-8"):
        ResNetConfig.preset("resnet-1000")
    with pytest.raises(ConfigError, match="unknown config field"):
        HybridConfig.from_dict({"patch_size": 4})


def test_bad_inputs_one_line_errors():
    m = ResNet(tiny_resnet_config())
    with pytest.raises(ConfigError, match="image size 9x9 does not match the config's 8x8"):
        m.forward(np.zeros((1, 9, 9, 3), np.float32))
    with pytest.raises(ConfigError, match="uint8 pixels are never scaled"):
        m.forward(np.zeros((1, 8, 8, 3), np.uint8))
    bad = m.state_dict()
    bad["layers.0.0.conv1.weight"] = np.zeros((3, 3, 3, 5))
    with pytest.raises(ConfigError, match=r"layers.0.0.conv1.weight has shape \(3, 3, 3, 5\), expected \(3, 3, 3, 4\)"):
        m.load_params(bad)
    with pytest.raises(ConfigError, match="unexpected parameter"):
        m.load_params({**m.state_dict(), "extra": np.zeros(1)})
    no_stats = {k: v for k, v in m.state_dict().items() if "running" not in k}
    with pytest.raises(ConfigError, match="missing running statistic.*stem.norm.running_mean"):
        m.load_params(no_stats)               # eval would silently use (0, 1): refused
    neg = {**m.state_dict(), "stem.norm.running_var": -np.ones(3)}
    with pytest.raises(ConfigError, match="running statistic stem.norm.running_var must be finite"):
        m.load_params(neg)
    with pytest.raises(ConfigError, match="convolutional models run on the numpy or numba backend, not 'cuda'"):
        ResNet(tiny_resnet_config(), backend="cuda")
    with pytest.raises(ConfigError, match="config must be a ResNetConfig"):
        ResNet(tiny_hybrid_config())


def test_hybrid_divergence_is_a_training_error():
    m = HybridViT(tiny_hybrid_config())
    m.params["layers.1.0.norm2.bias"][:] = np.inf     # the trunk's last layer
    with pytest.raises(TrainingError, match="feature map contains NaN or inf"):
        m.forward(np.zeros((2, 8, 8, 3), np.float32), train=True)


def test_model_registry():
    from minivit import ViT
    from minivit.models import (all_presets, build_model, config_from_dict, config_from_preset,
                                model_kind, state_shapes)
    names = all_presets()
    assert {"cifar10-tiny", "resnet-20", "hybrid-tiny"} <= set(names)
    for name, cls in (("cifar10-tiny", ViT), ("resnet-8", ResNet), ("hybrid-tiny", HybridViT)):
        c = config_from_preset(name)
        kind = model_kind(c)
        assert config_from_dict(c.to_dict(), kind) == c
        m = build_model(c)
        assert type(m) is cls and m.num_params() == c.num_params()
        assert set(m.state_dict()) == set(state_shapes(c))
    assert config_from_preset("hybrid-tiny", depth=2).depth == 2
    with pytest.raises(ConfigError, match="unknown preset 'resnet-9'; known presets: vit-ti16"):
        config_from_preset("resnet-9")
    with pytest.raises(ConfigError, match="unknown config field"):
        config_from_preset("resnet-8", patch_size=4)
