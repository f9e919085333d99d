import numpy as np
import pytest

from minivit import ViT, ViTConfig


def tiny_config(**kw):
    """A ViT small enough for finite differences: 8×8 images, P = 4 → N = 4 tokens."""
    base = dict(image_size=8, channels=3, patch_size=4, dim=8, depth=2, heads=2,
                mlp_dim=16, num_classes=3)
    base.update(kw)
    return ViTConfig(**base)


def perturbed_model(config, seed=0, dtype="float64", backend="numpy", scale=0.3):
    """A model whose every parameter is randomly perturbed. The official initialisation
    zeroes the head, which zeroes every other gradient at step 0 — useless for checks."""
    m = ViT(config, seed=seed, dtype=dtype, backend=backend)
    rng = np.random.default_rng(seed + 1)
    host = {k: v + scale * rng.standard_normal(v.shape) for k, v in m.state_dict().items()}
    m.load_params(host)
    return m


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
