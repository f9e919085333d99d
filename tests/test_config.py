import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.errors import ConfigError

# Exact parameter counts of the official implementation (REFERENCE.md §2, Table 1).
PAPER_COUNTS = {
    "vit-ti16": 5_717_416,
    "vit-s16": 22_050_664,
    "vit-b16": 86_567_656,
    "vit-b32": 88_224_232,
    "vit-l16": 304_326_632,
    "vit-h14": 632_045_800,
}


@pytest.mark.parametrize("name,count", PAPER_COUNTS.items())
def test_paper_param_counts(name, count):
    assert ViTConfig.preset(name).num_params() == count


@pytest.mark.parametrize("name", ["vit-ti16", "vit-b16"])
def test_allocated_model_matches_count(name):
    m = ViT(name, dtype="float32")
    assert m.num_params() == PAPER_COUNTS[name]
    assert sum(v.size for v in m.params.values()) == PAPER_COUNTS[name]


def test_paper_table_shapes():
    c = ViTConfig.preset("vit-b16")
    assert (c.depth, c.dim, c.mlp_dim, c.heads, c.head_dim) == (12, 768, 3072, 12, 64)
    assert c.num_patches == 196 and c.patch_dim == 768
    h = ViTConfig.preset("vit-h14")
    assert (h.depth, h.dim, h.heads, h.num_patches) == (32, 1280, 16, 256)


def test_overlapping_patch_count():
    # N = ((H − P)/S + 1)², here ((32 − 8)/4 + 1)² = 49
    c = ViTConfig(image_size=32, patch_size=8, stride=4, dim=16, heads=2, mlp_dim=8)
    assert c.num_patches == 49 and c.grid == (7, 7)


def test_pos_embed_variants_counts():
    c1 = ViTConfig.preset("cifar10-tiny")
    c2 = c1.replace(pos_embed="learned-2d")
    c0 = c1.replace(pos_embed="none")
    D, N = c1.dim, c1.num_patches
    assert c1.num_params() - c0.num_params() == (N + 1) * D
    assert c2.num_params() - c0.num_params() == D + 8 * D // 2 + 8 * D // 2
    assert c1.replace(head_type="pre-logits").num_params() - c1.num_params() == D * D + D


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError) as e:
        ViTConfig.preset("vit-x99")
    msg = str(e.value)
    assert "vit-x99" in msg and "vit-b16" in msg and "cifar10-tiny" in msg


@pytest.mark.parametrize("kw,needle", [
    (dict(dim=130, heads=4), "D=130 is not divisible by heads=4"),
    (dict(dim=129, heads=3, pos_embed="learned-2d"), "even D"),
    (dict(patch_size=8, stride=5), "(H - P) = (32 - 8) = 24 is not divisible by the stride S=5"),
    (dict(patch_size=64), "larger than the image"),
    (dict(head_type="mlp"), "head_type"),
    (dict(gelu="relu"), "gelu"),
    (dict(depth=0), "depth"),
])
def test_bad_config_raises_with_numbers(kw, needle):
    with pytest.raises(ValueError) as e:
        ViTConfig(**kw)
    assert needle in str(e.value)
    assert isinstance(e.value, ConfigError)


def test_bad_images_raise_with_numbers():
    m = ViT("cifar10-tiny")
    with pytest.raises(ValueError, match=r"image size 28x28 does not match the config's 32x32"):
        m.forward(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"images have 1 channels, the config expects 3"):
        m.forward(np.zeros((2, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        m.forward(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        m.forward(np.zeros((2, 32, 32, 3), np.uint8))
    x = np.zeros((2, 32, 32, 3), np.float32)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.forward(x)


def test_config_json_round_trip():
    c = ViTConfig.preset("cifar10-tiny", pos_embed="learned-2d", stride=2, patch_size=4)
    assert ViTConfig.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="unknown config field"):
        ViTConfig.from_dict({**c.to_dict(), "bogus": 1})
