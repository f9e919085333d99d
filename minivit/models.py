"""Every model family in one table — the plain ViT, the CIFAR ResNet and the hybrid ViT —
so that the trainer, checkpoints and the command line can pick a family by preset name or
by a saved config without knowing each class.

    config = config_from_preset("resnet-20")          # any family's preset
    model = build_model(config, backend="numba")      # ViT, ResNet or HybridViT
    kind = model_kind(config)                         # "vit" | "resnet" | "hybrid"
    config = config_from_dict(saved, kind)            # a checkpoint's meta.json config
"""
from __future__ import annotations

import math

from .config import PRESETS, ViTConfig
from .errors import ConfigError
from .hybrid import HybridViT
from .model import ViT
from .resnet import ResNet
from .resnet_config import HYBRID_PRESETS, RESNET_PRESETS, HybridConfig, ResNetConfig

# kind → (config class, model class, preset table)
KINDS = {
    "vit": (ViTConfig, ViT, PRESETS),
    "resnet": (ResNetConfig, ResNet, RESNET_PRESETS),
    "hybrid": (HybridConfig, HybridViT, HYBRID_PRESETS),
}


def all_presets() -> list[str]:
    """Every preset name, ViTs first."""
    return [n for _, _, table in KINDS.values() for n in table]


def preset_kind(name: str) -> str:
    """The family of preset ``name``. Raises ConfigError listing every preset."""
    for kind, (_, _, table) in KINDS.items():
        if name in table:
            return kind
    raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(all_presets())}")


def config_from_preset(name: str, **overrides):
    """The config of preset ``name`` (any family), fields overridden by ``overrides``
    (a field the family does not have is refused by name)."""
    return KINDS[preset_kind(name)][0].preset(name, **overrides)


def model_kind(config) -> str:
    """"vit", "resnet" or "hybrid" for a config object."""
    for kind, (cls, _, _) in KINDS.items():
        if type(config) is cls:
            return kind
    raise ConfigError(f"not a model config: {config!r}")


def config_from_dict(d: dict, kind: str = "vit"):
    """Rebuild a saved config. kind: the family saved beside it ("vit" when absent, as in
    checkpoints written before other families existed)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind][0].from_dict(d)


def build_model(config, seed=0, dtype="float32", backend="numpy", params=None):
    """The model for ``config`` (a config object or any family's preset name)."""
    if isinstance(config, str):
        config = config_from_preset(config)
    return KINDS[model_kind(config)][1](config, seed=seed, dtype=dtype, backend=backend,
                                        params=params)


def state_shapes(config) -> dict[str, tuple[int, ...]]:
    """Name → shape of every array a checkpoint of this config holds under ``param/``:
    the parameters, then (conv models) the BN running statistics."""
    shapes = dict(config.param_shapes())
    if hasattr(config, "buffer_shapes"):
        shapes.update(config.buffer_shapes())
    return shapes


__all__ = ["KINDS", "all_presets", "preset_kind", "config_from_preset", "model_kind",
           "config_from_dict", "build_model", "state_shapes"]


def train_flops(config, images: int, full_token_images: int = 0) -> int:
    """Training FLOPs (forward + backward) of ``images`` training images of ``config``
    (any family), of which the last ``full_token_images`` trained on every patch token
    (a ViT's patch dropout switched off: TrainSettings' ``full_token_epochs``)."""
    if not full_token_images:               # a conv model's per-image FLOPs take no flag
        return images * config.train_flops_per_image()
    return ((images - full_token_images) * config.train_flops_per_image()
            + full_token_images * config.train_flops_per_image(full_tokens=True))


def epoch_flops(config, n_train: int, batch_size: int, full_tokens: bool = False) -> int:
    """Training FLOPs of one epoch of ``config`` (any family): full batches only (the
    trainer drops the last partial one) × ``train_flops_per_image`` (forward + backward);
    ``full_tokens``: an epoch on every patch token (no patch dropout)."""
    images = (n_train // batch_size) * batch_size
    return train_flops(config, images, images if full_tokens else 0)


def epochs_for_budget(budget: float, config, n_train: int, batch_size: int,
                      within: bool = False, full_token_epochs: int = 0) -> int:
    """Whole epochs whose training compute is closest to ``budget`` FLOP (at least 1): how
    equal-compute comparisons give each model its own schedule. ``within``: the most whole
    epochs that do not spend more than ``budget`` (a target stated as "within X FLOP").
    full_token_epochs: the last K of them cost an epoch on every patch token; at least K
    epochs are returned."""
    K = full_token_epochs
    # full_tokens=bool(K), not True: with K = 0 the term is zero anyway, and a conv
    # model's train_flops_per_image takes no full_tokens flag (train_flops above).
    rest = budget - K * epoch_flops(config, n_train, batch_size, full_tokens=bool(K))
    epochs = K + rest / epoch_flops(config, n_train, batch_size)
    return max(1, K, math.floor(epochs + 1e-9) if within else round(epochs))
