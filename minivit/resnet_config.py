"""Configs of the convolutional models: :class:`ResNetConfig` (the CIFAR ResNet baseline,
He et al. 2016 §4.2) and :class:`HybridConfig` (the paper's hybrid ViT, §3.1: a ResNet
trunk's feature map cut into 1 × 1 patches and fed to the Transformer encoder).

Like :class:`~minivit.config.ViTConfig`: frozen dataclasses, validated on construction,
exact parameter counts from the shapes, forward FLOPs per image (2 per multiply-add,
convolutions and matmuls only), JSON round trip and named presets.

The trunk: a 3×3 stem conv (stride 1) → BN → ReLU, then stages of one of two kinds
(field ``trunk``).

``trunk="resnet"`` (He et al.): stage s has ``depths[s]`` residual basic blocks of width
``widths[s]``, its first block downsampling by 2 (stride-2 conv, 1×1 stride-2 projection
shortcut) for every stage but the first. A block (He et al. Fig. 2, projection shortcut
"option B" where the shape changes):

    y = ReLU( BN(conv3×3(ReLU(BN(conv3×3_stride(x))))) + shortcut(x) )
    shortcut(x) = x,  or BN(conv1×1_stride(x)) when the stride or the width changes

``trunk="pool"`` (the VGG-like conv groups of Jordan's airbench CIFAR-10 speed runs, no
shortcuts): every stage halves the map with a 2×2 max-pool after its first conv, then
has ``depths[s]`` more convs at the pooled size:

    stage s:  h = ReLU(BN(maxpool2(conv3×3(x))))          width widths[s], S → S/2
              h = ReLU(BN(conv3×3(h)))    × depths[s]
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import MAX_PARAMS, ViTConfig
from .errors import ConfigError

MAX_STAGES = 8
MAX_BLOCKS = 256
TRUNKS = ("resnet", "pool")


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _positive_ints(obj, names):
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")


def _int_tuple(obj, name):
    v = getattr(obj, name)
    if isinstance(v, list):                    # from JSON
        v = tuple(v)
        object.__setattr__(obj, name, v)
    if (not isinstance(v, tuple) or not v
            or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in v)):
        raise ConfigError(f"{name} must be a non-empty tuple of positive integers, got {v!r}")
    return v


class _Trunk:
    """The conv trunk's shapes and FLOPs, shared by both configs (fields: image_size,
    channels, stem_width, widths, depths, bn_eps, bn_momentum, trunk)."""

    def _validate_trunk(self):
        if self.trunk not in TRUNKS:
            raise ConfigError(f"trunk must be one of {', '.join(TRUNKS)}, got {self.trunk!r}")
        _positive_ints(self, ("image_size", "channels", "stem_width"))
        widths, depths = _int_tuple(self, "widths"), _int_tuple(self, "depths")
        if len(widths) != len(depths):
            raise ConfigError(f"widths {widths} and depths {depths} must have one entry "
                              f"per stage")
        if len(widths) > MAX_STAGES or sum(depths) > MAX_BLOCKS:
            raise ConfigError(f"at most {MAX_STAGES} stages and {MAX_BLOCKS} blocks, got "
                              f"{len(widths)} stages and {sum(depths)} blocks")
        if self.image_size % (2 ** self._halvings) != 0:
            raise ConfigError(f"image_size={self.image_size} is not divisible by "
                              f"2^{self._halvings} (one halving per stage"
                              f"{' after the first' if self.trunk == 'resnet' else ''})")
        if not (isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0):
            raise ConfigError(f"bn_eps must be a positive number, got {self.bn_eps!r}")
        if not (isinstance(self.bn_momentum, (int, float)) and 0 <= self.bn_momentum <= 1):
            raise ConfigError(f"bn_momentum must be in [0, 1], got {self.bn_momentum!r}")

    @property
    def _halvings(self) -> int:
        # resnet: every stage but the first downsamples; pool: every stage does.
        return len(self.widths) - (self.trunk == "resnet")

    @property
    def feature_size(self) -> int:
        """Side of the trunk's output feature map (one halving per stage after the first
        for ``trunk="resnet"``, per stage for ``"pool"``)."""
        return self.image_size // (2 ** self._halvings)

    @property
    def feature_dim(self) -> int:
        """Channels of the trunk's output feature map: widths[-1]."""
        return self.widths[-1]

    def blocks(self) -> list[tuple[str, int, int, int]]:
        """(name prefix, C_in, C_out, stride) of every basic block, in order
        (``trunk="resnet"``; a pool trunk has none)."""
        out, cin = [], self.stem_width
        if self.trunk != "resnet":
            return out
        for s, (w, d) in enumerate(zip(self.widths, self.depths)):
            for j in range(d):
                stride = 2 if (j == 0 and s > 0) else 1
                out.append((f"layers.{s}.{j}.", cin, w, stride))
                cin = w
        return out

    def pool_units(self) -> list[tuple[str, int, int, bool]]:
        """(name prefix, C_in, C_out, pooled) of every conv → (max-pool →) BN → ReLU unit
        of a ``trunk="pool"`` stage, in order: ``layers.{s}.0.`` pools, ``layers.{s}.{j}.``
        (j = 1 … depths[s]) keep the size. Empty for a resnet trunk."""
        out, cin = [], self.stem_width
        if self.trunk != "pool":
            return out
        for s, (w, d) in enumerate(zip(self.widths, self.depths)):
            out.append((f"layers.{s}.0.", cin, w, True))
            out += [(f"layers.{s}.{j}.", w, w, False) for j in range(1, d + 1)]
            cin = w
        return out

    def trunk_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every trainable trunk parameter (conv kernels HWIO, no conv
        bias: each conv is followed by BN, whose β is the bias)."""
        c0 = self.stem_width
        sh = {"stem.conv.weight": (3, 3, self.channels, c0),
              "stem.norm.weight": (c0,), "stem.norm.bias": (c0,)}
        for n, cin, w, _ in self.pool_units():
            sh[n + "conv.weight"] = (3, 3, cin, w)
            sh[n + "norm.weight"] = (w,)
            sh[n + "norm.bias"] = (w,)
        for n, cin, w, stride in self.blocks():
            sh[n + "conv1.weight"] = (3, 3, cin, w)
            sh[n + "norm1.weight"] = (w,)
            sh[n + "norm1.bias"] = (w,)
            sh[n + "conv2.weight"] = (3, 3, w, w)
            sh[n + "norm2.weight"] = (w,)
            sh[n + "norm2.bias"] = (w,)
            if stride != 1 or cin != w:
                sh[n + "shortcut.conv.weight"] = (1, 1, cin, w)
                sh[n + "shortcut.norm.weight"] = (w,)
                sh[n + "shortcut.norm.bias"] = (w,)
        return sh

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of the BN running statistics (state, not trained)."""
        out = {}
        for n, shape in self.trunk_shapes().items():
            if n.endswith("norm.weight") or n.endswith(("norm1.weight", "norm2.weight")):
                base = n[:-len("weight")]
                out[base + "running_mean"] = shape
                out[base + "running_var"] = shape
        return out

    def trunk_flops(self) -> int:
        """Forward FLOPs of the trunk's convolutions for one image (2 per multiply-add)."""
        S = self.image_size
        f = 2 * S * S * 9 * self.channels * self.stem_width
        for _, cin, w, pooled in self.pool_units():      # the conv runs before the pool
            f += 2 * S * S * 9 * cin * w
            S //= 1 + pooled
        for _, cin, w, stride in self.blocks():
            S //= stride
            f += 2 * S * S * 9 * cin * w + 2 * S * S * 9 * w * w
            if stride != 1 or cin != w:
                f += 2 * S * S * cin * w
        return f

    # (De)serialisation is ViTConfig's, unchanged: it reads only the dataclass fields
    # (tuples come back from JSON as lists; _validate_trunk turns them into tuples).
    to_dict = ViTConfig.to_dict
    to_json = ViTConfig.to_json
    from_dict = vars(ViTConfig)["from_dict"]
    from_json = vars(ViTConfig)["from_json"]
    replace = ViTConfig.replace

    def train_flops_per_image(self) -> int:
        """Forward + backward FLOPs of one training image: 3 × ``flops_per_image``."""
        return 3 * self.flops_per_image()

    def num_params(self) -> int:
        """Exact number of trainable scalars (BN running statistics are not counted)."""
        return sum(_prod(s) for s in self.param_shapes().values())

    @classmethod
    def preset(cls, name: str, **overrides):
        """A named preset (see ``RESNET_PRESETS`` / ``HYBRID_PRESETS``), fields overridable."""
        table = RESNET_PRESETS if cls is ResNetConfig else HYBRID_PRESETS
        if name not in table:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(table)}")
        d = dict(table[name])
        d.update(overrides)
        return cls.from_dict(d)

    def _check_size(self):
        n = self.num_params()
        if n > MAX_PARAMS:
            raise ConfigError(f"this config has {n:,} parameters, more than {MAX_PARAMS:,}")


@dataclass(frozen=True)
class ResNetConfig(_Trunk):
    """A CIFAR ResNet: the trunk, global average pooling, a linear classifier.

    image_size: H = W of the input. channels: C of the input. stem_width: channels of the
    stem conv. widths / depths: channels and number of basic blocks of each stage (a pool
    trunk: the convs after each stage's pooling one).
    num_classes: outputs. bn_eps, bn_momentum: batch norm ε and running-stat momentum
    (torch's defaults). trunk: "resnet" (residual basic blocks) or "pool" (conv → max-pool
    groups, no shortcuts; see the module docstring).
    """

    image_size: int = 32
    channels: int = 3
    stem_width: int = 16
    widths: tuple = (16, 32, 64)
    depths: tuple = (3, 3, 3)
    num_classes: int = 10
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    trunk: str = "resnet"

    def __post_init__(self):
        self._validate_trunk()
        _positive_ints(self, ("num_classes",))
        self._check_size()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every trainable parameter, in model order."""
        sh = self.trunk_shapes()
        sh["head.weight"] = (self.feature_dim, self.num_classes)
        sh["head.bias"] = (self.num_classes,)
        return sh

    def flops_per_image(self) -> int:
        """Forward FLOPs per image (2 per multiply-add; convs and the head). Training costs
        about 3× this."""
        return self.trunk_flops() + 2 * self.feature_dim * self.num_classes


@dataclass(frozen=True)
class HybridConfig(_Trunk):
    """The hybrid ViT (paper §3.1): a conv trunk, its (feature_size², feature_dim) map
    taken as N = feature_size² patches of size 1 × 1, embedded to D and fed to the same
    encoder and head as the ViT. Trunk fields as :class:`ResNetConfig`; the rest as
    :class:`~minivit.config.ViTConfig`.
    """

    image_size: int = 32
    channels: int = 3
    stem_width: int = 16
    widths: tuple = (16, 32, 64)
    depths: tuple = (1, 1, 1)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 256
    num_classes: int = 10
    head_type: str = "linear"
    gelu: str = "tanh"
    ln_eps: float = 1e-6
    pos_embed: str = "learned-1d"
    classifier: str = "token"
    trunk: str = "resnet"

    def __post_init__(self):
        self._validate_trunk()
        self.vit                                   # validates the encoder fields
        self._check_size()

    @property
    def vit(self) -> ViTConfig:
        """The encoder's ViTConfig: the feature map is its image, P = 1 (paper §3.1: "the
        patches can have spatial size 1x1")."""
        return ViTConfig(image_size=self.feature_size, channels=self.feature_dim,
                         patch_size=1, dim=self.dim, depth=self.depth, heads=self.heads,
                         mlp_dim=self.mlp_dim, num_classes=self.num_classes,
                         head_type=self.head_type, gelu=self.gelu, ln_eps=self.ln_eps,
                         pos_embed=self.pos_embed, classifier=self.classifier)

    @property
    def num_patches(self) -> int:
        """N = feature_size², the number of patch tokens."""
        return self.feature_size ** 2

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trunk parameters (``stem.*``, ``layers.*``), then the ViT's under its own names."""
        sh = self.trunk_shapes()
        sh.update(self.vit.param_shapes())
        return sh

    def flops_per_image(self) -> int:
        """Trunk convs + the encoder's forward FLOPs (ViTConfig.flops_per_image)."""
        return self.trunk_flops() + self.vit.flops_per_image()


RESNET_PRESETS: dict[str, dict] = {
    # He et al. 2016 §4.2 CIFAR ResNets 6n+2 with n = 1 and n = 3 (0.27 M parameters).
    "resnet-8": dict(stem_width=16, widths=(16, 32, 64), depths=(1, 1, 1)),
    "resnet-20": dict(stem_width=16, widths=(16, 32, 64), depths=(3, 3, 3)),
    # A narrow ResNet-18 layout (four stages of two blocks, a quarter of the width).
    "resnet-18n": dict(stem_width=32, widths=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
}

HYBRID_PRESETS: dict[str, dict] = {
    # ResNet-8's trunk (8×8×64 map → N = 64 tokens, as cifar10-tiny's P = 4) + that encoder.
    "hybrid-tiny": dict(stem_width=16, widths=(16, 32, 64), depths=(1, 1, 1), dim=128,
                        depth=4, heads=4, mlp_dim=256),
    # Issue 16's search at 1.6e14 training FLOP (benchmarks/knob_ablation.py --tag
    # hybrid_1.6e14): stages twice as wide (8×8×128 map; ~70% of the FLOPs) and a 2-block
    # encoder learn faster per FLOP than hybrid-tiny. Recipe: 8 epochs, batch 32, lr 3e-3,
    # 1 warm-up epoch, pad-2 crops (82.40%).
    "hybrid-wide": dict(stem_width=16, widths=(32, 64, 128), depths=(1, 1, 1), dim=128,
                        depth=2, heads=4, mlp_dim=256),
    # Issue 16's pool trunk (airbench-style conv → max-pool → BN → ReLU groups, no
    # shortcuts; 4×4×192 map → N = 16 tokens) and a one-block D = 128 encoder: the best
    # hybrid at 1.6e14 training FLOP (knob_ablation --tag hybrid_1.6e14, rows pool_*; the
    # narrower encoder buys an eleventh epoch). Recipe: 11 epochs, batch 32, lr 2e-3,
    # 1 warm-up epoch, pad-2 reflect-padded crops; shipped as `minivit predict hybrid`.
    "hybrid-pool": dict(trunk="pool", stem_width=16, widths=(48, 96, 192), depths=(1, 1, 1),
                        dim=128, depth=1, heads=4, mlp_dim=384),
    # A wider trunk (8×8×128) and cifar10-small's encoder.
    "hybrid-small": dict(stem_width=32, widths=(32, 64, 128), depths=(1, 1, 1), dim=192,
                         depth=6, heads=3, mlp_dim=768),
}

__all__ = ["ResNetConfig", "HybridConfig", "RESNET_PRESETS", "HYBRID_PRESETS", "TRUNKS"]
