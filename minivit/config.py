"""ViTConfig: every architectural choice of the model in one dataclass, plus named presets.

The paper's models (Table 1) are presets ``vit-ti16`` … ``vit-h14`` at 224 px with a
1000-class linear head, so :meth:`ViTConfig.num_params` reproduces the official parameter
counts exactly (REFERENCE.md §2). The CIFAR presets use P = 4 on 32 × 32 images: patch
size 16 would leave only 4 tokens, which is catastrophic on small images.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import ConfigError

HEAD_TYPES = ("linear", "pre-logits")
GELU_FORMS = ("tanh", "erf")
POS_EMBEDS = ("learned-1d", "learned-2d", "sincos2d", "none")
CLASSIFIERS = ("token", "gap")
ATTN_INITS = ("xavier", "mimetic")


MAX_DEPTH = 1024            # ViT-H has 32 blocks, ViT-22B 48
MAX_PARAMS = 2 ** 34        # 17 G parameters = 68 GB in float32; ViT-H/14 has 0.63 G


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a Vision Transformer (paper §3.1, Table 1).

    image_size: side of the square input image in pixels (H = W).
    channels:   C, colour channels of the input.
    patch_size: P, side of a square patch.
    stride:     S, step between patches; ``None`` means S = P (non-overlapping, as in the
                paper). S < P gives overlapping patches: N = ((H−P)/S + 1)².
    dim:        D, the token width.
    depth:      L, number of encoder blocks.
    heads:      number of attention heads; D_h = D / heads.
    mlp_dim:    hidden width of each block's MLP.
    num_classes: outputs of the classification head.
    head_type:  ``"linear"`` (fine-tuning head) or ``"pre-logits"`` (tanh MLP D→D, then
                linear, as at pre-training).
    gelu:       ``"tanh"`` (official JAX model) or ``"erf"`` (exact, PyTorch/timm default).
    ln_eps:     LayerNorm epsilon (1e-6 in the official model and timm).
    pos_embed:  ``"learned-1d"`` (paper default), ``"learned-2d"`` (Appendix D.4: one D/2
                table per axis, concatenated), ``"sincos2d"`` (fixed 2-D sine-cosine, no
                parameters; big_vision's ``posemb_sincos_2d``, needs D divisible by 4) or
                ``"none"``.
    classifier: ``"token"`` (paper default: the class token's output, Eq. 4) or ``"gap"``
                (global average pooling of the encoder output, no class token; Appendix
                D.3): N tokens instead of N + 1.
    dropout:    dropout rate after the embedding sum (Eq. 1), after the attention output
                projection and after each MLP dense (as in the official code); 0 = off.
                Active only in training steps (see :meth:`minivit.model.ViT.forward`).
    drop_path:  stochastic depth (Huang et al. 2016): the largest rate at which a residual
                branch of Eq. 2–3 is dropped for a whole sample; block ℓ of L uses
                drop_path·ℓ/(L−1) (linear rule, as DeiT/timm); 0 = off.
    patch_keep: patch dropout (Liu et al. 2023): the fraction of each image's N patch
                tokens a training step keeps, a random subset of round(patch_keep·N)
                drawn after E_pos is added (the class token always stays); the encoder
                then costs about that fraction of a full step. Evaluation sees all N
                tokens. 1 = off.
    attn_init:  initialisation of the attention kernels: ``"xavier"`` (the official
                model: each of q, k, v and the output projection Xavier-uniform) or
                ``"mimetic"`` (Trockman & Kolter 2023: each head's W_q·W_kᵀ starts near
                0.7·Z + 0.7·I and W_v·W_o near 0.4·Z − 0.4·I, Z random with variance 1/D,
                so the untrained layers already attend to similar tokens, as trained
                ones do; a start for short runs on small data sets).
    """

    image_size: int = 32
    channels: int = 3
    patch_size: int = 4
    stride: int | None = None
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
    dropout: float = 0.0
    drop_path: float = 0.0
    patch_keep: float = 1.0
    attn_init: str = "xavier"

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def S(self) -> int:
        """The stride actually used (S = P when ``stride`` is None)."""
        return self.patch_size if self.stride is None else self.stride

    @property
    def grid(self) -> tuple[int, int]:
        """(G_h, G_w): patches along the height and the width."""
        g = (self.image_size - self.patch_size) // self.S + 1
        return g, g

    @property
    def num_patches(self) -> int:
        """N, the number of patch tokens (the class token comes on top: N + 1 tokens)."""
        gh, gw = self.grid
        return gh * gw

    @property
    def num_tokens(self) -> int:
        """Tokens in the encoder: N + 1 with a class token, N with GAP."""
        return self.num_patches + (1 if self.classifier == "token" else 0)

    @property
    def train_num_patches(self) -> int:
        """K, the patch tokens a training step keeps: round(patch_keep·N), at least 1."""
        return max(1, round(self.patch_keep * self.num_patches))

    @property
    def train_num_tokens(self) -> int:
        """Tokens in the encoder during a training step: K + 1 with a class token."""
        return self.train_num_patches + (1 if self.classifier == "token" else 0)

    @property
    def head_dim(self) -> int:
        """D_h = D / heads, the width of one attention head."""
        return self.dim // self.heads

    @property
    def patch_dim(self) -> int:
        """P²·C, the length of one flattened patch."""
        return self.patch_size * self.patch_size * self.channels

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` (a ValueError) naming the offending numbers."""
        for name in ("image_size", "channels", "patch_size", "dim", "depth", "heads",
                     "mlp_dim", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise ConfigError(f"stride must be a positive integer or None, got {self.stride!r}")
        if self.patch_size > self.image_size:
            raise ConfigError(f"patch size P={self.patch_size} is larger than the image "
                              f"({self.image_size}x{self.image_size})")
        if (self.image_size - self.patch_size) % self.S != 0:
            raise ConfigError(
                f"(H - P) = ({self.image_size} - {self.patch_size}) = "
                f"{self.image_size - self.patch_size} is not divisible by the stride S={self.S}")
        if self.dim % self.heads != 0:
            raise ConfigError(f"D={self.dim} is not divisible by heads={self.heads}")
        if self.head_type not in HEAD_TYPES:
            raise ConfigError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.gelu not in GELU_FORMS:
            raise ConfigError(f"gelu must be one of {GELU_FORMS}, got {self.gelu!r}")
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}")
        if self.pos_embed == "learned-2d" and self.dim % 2 != 0:
            raise ConfigError(f"learned-2d position embeddings need an even D "
                              f"(one D/2 table per axis), got D={self.dim}")
        if self.pos_embed == "sincos2d" and (self.dim % 4 != 0 or self.dim < 8):
            raise ConfigError(f"sincos2d position embeddings need D divisible by 4 and >= 8 "
                              f"(sin and cos of each axis, D/4 frequencies), got D={self.dim}")
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.attn_init not in ATTN_INITS:
            raise ConfigError(f"attn_init must be one of {ATTN_INITS}, got {self.attn_init!r}")
        for name in ("dropout", "drop_path"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"{name} must be a rate in [0, 1), got {v!r}")
        v = self.patch_keep
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ConfigError(f"patch_keep must be a fraction in (0, 1], got {v!r}")
        if not (isinstance(self.ln_eps, (int, float)) and self.ln_eps > 0):
            raise ConfigError(f"ln_eps must be a positive number, got {self.ln_eps!r}")
        # Absurd sizes (a typo such as --depth 1000000000, a hostile checkpoint's config)
        # are refused here, before param_shapes() loops over the blocks or anything is
        # allocated: they would hang, or exhaust the machine's memory.
        if self.depth > MAX_DEPTH:
            raise ConfigError(f"depth must be <= {MAX_DEPTH}, got {self.depth}")
        n = self.num_params()
        if n > MAX_PARAMS:
            raise ConfigError(f"this config has {n:,} parameters, more than {MAX_PARAMS:,}; "
                              f"check dim, mlp_dim, depth, image_size and patch_size")

    # ------------------------------------------------------------------ parameters
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every parameter, in model order (nothing is allocated).

        Dense kernels are stored (in, out) and used as ``x @ W``.
        """
        D, M, C = self.dim, self.mlp_dim, self.num_classes
        gh, gw = self.grid
        token = self.classifier == "token"
        shapes: dict[str, tuple[int, ...]] = {
            "patch_embed.weight": (self.patch_dim, D),  # E in Eq. 1, rows in (h, w, c) order
            "patch_embed.bias": (D,),
        }
        if token:
            shapes["cls_token"] = (1, 1, D)             # x_class in Eq. 1 (none with GAP)
        if self.pos_embed == "learned-1d":
            shapes["pos_embed"] = (1, self.num_tokens, D)    # E_pos in Eq. 1
        elif self.pos_embed == "learned-2d":
            if token:
                shapes["pos_embed_cls"] = (1, D)        # the class token's own embedding
            shapes["pos_embed_row"] = (gh, D // 2)      # Y-embedding, one row per grid row
            shapes["pos_embed_col"] = (gw, D // 2)      # X-embedding
        for i in range(self.depth):
            p = f"blocks.{i}."
            shapes.update({
                p + "norm1.weight": (D,), p + "norm1.bias": (D,),
                p + "attn.qkv.weight": (D, 3 * D), p + "attn.qkv.bias": (3 * D,),
                p + "attn.proj.weight": (D, D), p + "attn.proj.bias": (D,),
                p + "norm2.weight": (D,), p + "norm2.bias": (D,),
                p + "mlp.fc1.weight": (D, M), p + "mlp.fc1.bias": (M,),
                p + "mlp.fc2.weight": (M, D), p + "mlp.fc2.bias": (D,),
            })
        shapes["norm.weight"] = (D,)
        shapes["norm.bias"] = (D,)
        if self.head_type == "pre-logits":
            shapes["pre_logits.weight"] = (D, D)
            shapes["pre_logits.bias"] = (D,)
        shapes["head.weight"] = (D, C)
        shapes["head.bias"] = (C,)
        return shapes

    def num_params(self) -> int:
        """Exact number of scalar parameters, counted from the shapes (no allocation)."""
        total = 0
        for shape in self.param_shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    def flops_per_image(self, tokens: int | None = None) -> int:
        """Forward FLOPs for one image: 2 per multiply-add of every matmul (patch embedding,
        qkv, the attention products q kᵀ and A v, the output projection, the MLP, the
        head); LayerNorm, softmax, GELU, dropout and the residual adds are not counted.
        tokens: the encoder's sequence length; None = :attr:`num_tokens` (evaluation).

        Training costs 3× this (:meth:`train_flops_per_image`): the backward pass does two
        matmuls for each matmul of the forward pass.
        """
        N1 = self.num_tokens if tokens is None else tokens
        D, M = self.dim, self.mlp_dim
        f = 2 * self.num_patches * self.patch_dim * D   # patch embedding (all N, then kept)
        per_block = 2 * N1 * D * 3 * D + 2 * N1 * D * D             # qkv, proj
        per_block += 2 * 2 * N1 * N1 * D                             # q kᵀ and A v
        per_block += 2 * 2 * N1 * D * M                              # fc1, fc2
        f += self.depth * per_block
        f += 2 * D * self.num_classes + (2 * D * D if self.head_type == "pre-logits" else 0)
        return f

    def train_flops_per_image(self, full_tokens: bool = False) -> int:
        """Forward + backward FLOPs of one training image: 3 × :meth:`flops_per_image`
        over the tokens a training step keeps (:attr:`train_num_tokens`), or over every
        token when ``full_tokens`` (patch dropout switched off: TrainSettings'
        ``full_token_epochs``)."""
        return 3 * self.flops_per_image(None if full_tokens else self.train_num_tokens)

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        """Plain-JSON dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        """Build from a dict, refusing unknown fields by name."""
        return cls(**check_fields(cls, d, "config", "field"))

    @classmethod
    def from_json(cls, s: str) -> "ViTConfig":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def replace(self, **changes) -> "ViTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ViTConfig":
        """A named preset, optionally with fields overridden.

        Paper (Table 1; 224 px, 1000 classes, linear head): vit-ti16, vit-s16, vit-b16,
        vit-b32, vit-l16, vit-h14. CIFAR-10 (32 px, P = 4, 10 classes): cifar10-tiny,
        cifar10-small.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        d = dict(PRESETS[name])
        d.update(overrides)
        return cls.from_dict(d)


def check_fields(cls, d, what, item) -> dict:
    """``d`` if it is a dict whose keys are all fields of dataclass ``cls``; else a
    ConfigError naming the unknown ones (``unknown {what} {item}(s): …``)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{what} {item}s must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {item}(s): {', '.join(unknown)}")
    return d


def _paper(patch, dim, depth, heads, mlp):
    return dict(image_size=224, channels=3, patch_size=patch, dim=dim, depth=depth,
                heads=heads, mlp_dim=mlp, num_classes=1000)


PRESETS: dict[str, dict] = {
    "vit-ti16": _paper(16, 192, 12, 3, 768),
    "vit-s16": _paper(16, 384, 12, 6, 1536),
    "vit-b16": _paper(16, 768, 12, 12, 3072),
    "vit-b32": _paper(32, 768, 12, 12, 3072),
    "vit-l16": _paper(16, 1024, 24, 16, 4096),
    "vit-h14": _paper(14, 1280, 32, 16, 5120),
    # CIFAR-10 from scratch. tiny: the size that trains in minutes on 2 CPU cores.
    "cifar10-tiny": dict(image_size=32, channels=3, patch_size=4, dim=128, depth=4,
                         heads=4, mlp_dim=256, num_classes=10),
    # small: the "wider model" of the benchmarks (D = 192, depth 6, heads 3).
    "cifar10-small": dict(image_size=32, channels=3, patch_size=4, dim=192, depth=6,
                          heads=3, mlp_dim=768, num_classes=10),
}
