"""A small CIFAR ResNet (He et al. 2016, §4.2) with hand-written forward and backward.

    stem       h = ReLU(BN(conv3×3(x)))                                   stem_forward
    block      y = ReLU(BN(conv3×3(ReLU(BN(conv3×3_s(h))))) + shortcut(h)) block_forward
    or trunk="pool": y = ReLU(BN(maxpool2(conv3×3(h)))), then ReLU(BN(conv3×3(y))) × depths[s]
                                                                          pool_unit_forward
    head       logits = GAP(h_L) W + b                                    head_forward

:class:`ConvTrunk` (stem + stages of residual basic blocks) is shared with the hybrid ViT
(:mod:`minivit.hybrid`), which replaces the pooling head by the Transformer encoder.

Same interface as :class:`~minivit.model.ViT`, so the same training loop drives it:
``params`` / ``grads`` (flat dicts, same names), ``forward`` / ``backward``,
``loss_and_grads``, ``predict_proba``, ``state_dict`` / ``load_params``, ``be`` (the
backend, for optimizer updates and the loss). Batch norm makes one difference: the
forward pass has two modes. ``loss_and_grads`` trains (batch statistics, running
statistics updated); ``forward`` and ``predict_proba`` infer with the running statistics
unless called with ``train=True``. ``state_dict`` also holds the running statistics
(``*.running_mean``, ``*.running_var``), which are state, not parameters: the optimizer
never sees them.
"""
from __future__ import annotations

import math

import numpy as np

from .backends import get_backend
from .backends.conv_ops import get_conv_ops
from .errors import ConfigError
from .model import ViT
from .resnet_config import HybridConfig, ResNetConfig


# ---------------------------------------------------------------------- initialisation
def init_trunk_params(config, rng) -> dict[str, np.ndarray]:
    """He (Kaiming) normal conv kernels, std √(2 / fan_out) (torchvision's ResNet init);
    BN γ = 1, β = 0. Float64 host arrays, in ``config.trunk_shapes()`` order."""
    p = {}
    for name, shape in config.trunk_shapes().items():
        if name.endswith("conv.weight") or name.endswith(("conv1.weight", "conv2.weight")):
            k, _, _, cout = shape
            p[name] = rng.normal(0.0, math.sqrt(2.0 / (k * k * cout)), size=shape)
        elif name.endswith(".weight"):
            p[name] = np.ones(shape)
        else:
            p[name] = np.zeros(shape)
    return p


def init_buffers(config) -> dict[str, np.ndarray]:
    """BN running statistics at their starting values: mean 0, variance 1."""
    return {n: (np.zeros(s) if n.endswith("running_mean") else np.ones(s))
            for n, s in config.buffer_shapes().items()}


def init_params(config: ResNetConfig, seed=0) -> dict[str, np.ndarray]:
    """Trainable parameters only (running statistics: :func:`init_buffers`). Trunk as
    :func:`init_trunk_params`; the linear head uniform(±1/√fan_in), torch's ``nn.Linear``
    default."""
    rng = np.random.default_rng(seed)
    p = init_trunk_params(config, rng)
    bound = 1.0 / math.sqrt(config.feature_dim)
    p["head.weight"] = rng.uniform(-bound, bound, size=(config.feature_dim, config.num_classes))
    p["head.bias"] = rng.uniform(-bound, bound, size=(config.num_classes,))
    return p


# ---------------------------------------------------------------------- the trunk
class ConvTrunk:
    """Stem conv + stages of residual basic blocks (or of conv → max-pool units,
    ``trunk="pool"``) over (B, H, W, C) feature maps.

    Holds ``params`` (trainable, ``stem.*`` / ``layers.*``), ``buffers`` (BN running
    statistics) and ``grads``; ``cv`` is the conv op set, ``be`` the main backend.
    """

    config_class: type = ResNetConfig        # the subclass's config type

    # The ViT's input checks apply unchanged: they read config.image_size/channels,
    # self.be and self.dtype, which a conv model has too.
    check_images = ViT.check_images
    # So does its predict_proba: softmax of forward() (here: inference mode, running
    # statistics) over batches of 256, caches dropped → (B, classes) host float64.
    predict_proba = ViT.predict_proba

    def __init__(self, config, dtype, backend):
        cls = self.config_class
        if isinstance(config, str):
            config = cls.preset(config)
        if not isinstance(config, cls):
            raise ConfigError(f"config must be a {cls.__name__} or a preset name, got {config!r}")
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
        self.cv = get_conv_ops(backend)          # first: refuses the cuda backend by name
        self.be = get_backend(backend)
        self.params: dict = {}
        self.buffers: dict = {}
        self.grads: dict = {}
        self._cache: dict = {}                # activations kept for backward

    def load_params(self, host_params: dict, strict=True):
        """Copy host arrays into the model: parameters (the ViT's checks: every name,
        shape, float dtype, finiteness) and BN running statistics. strict: every entry
        must be present and none unknown. Raises ConfigError naming the entry."""
        bshapes = self.config.buffer_shapes()
        ViT.load_params(self, {k: v for k, v in host_params.items() if k not in bshapes},
                        strict)
        if strict:
            missing = [k for k in bshapes if k not in host_params]
            if missing:
                raise ConfigError(f"missing running statistic(s): {', '.join(missing)}")
        for n, shape in bshapes.items():
            if n not in host_params:
                continue
            a = np.asarray(host_params[n])
            if (a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all()
                    or (n.endswith("running_var") and (a < 0).any())):
                raise ConfigError(f"running statistic {n} must be finite floats of shape "
                                  f"{shape} (variances >= 0), got {a.dtype} {a.shape}")
            self.buffers[n] = np.array(a, dtype=self.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter (model order), then the BN running statistics."""
        out = {k: np.array(self.be.to_host(v)) for k, v in self.params.items()}
        out.update({k: np.array(v) for k, v in self.buffers.items()})
        return out

    num_params = ViT.num_params          # trainable scalars allocated (not the BN statistics)
    clear_cache = ViT.clear_cache        # drop the activations kept for backward

    # -- conv → BN (→ ReLU), the unit every layer of the trunk is made of
    def _conv_bn(self, x, name, norm, stride, padding, train):
        cv, p, c = self.cv, self.params, self.config
        h, cc = cv.conv2d_forward(x, p[name], None, stride, padding)
        y, bc = cv.batchnorm_forward(h, p[norm + "weight"], p[norm + "bias"],
                                     self.buffers[norm + "running_mean"],
                                     self.buffers[norm + "running_var"],
                                     train, c.bn_momentum, c.bn_eps)
        return y, (cc, bc)

    def _conv_bn_backward(self, dy, cache, name, norm, need_dx=True):
        cv, g = self.cv, self.grads
        cc, bc = cache
        dh, g[norm + "weight"], g[norm + "bias"] = cv.batchnorm_backward(dy, bc)
        dx, g[name], _ = cv.conv2d_backward(dh, cc, need_dx)
        return dx

    def stem_forward(self, x, train):
        """x: (B, H, W, C) → ReLU(BN(conv3×3(x))): (B, H, W, stem_width)."""
        y, self._cache["stem"] = self._conv_bn(x, "stem.conv.weight", "stem.norm.", 1, 1, train)
        y, self._cache["stem.relu"] = self.cv.relu_forward(y)
        return y

    def stem_backward(self, dy, need_dx=False):
        """dy: (B, H, W, stem_width) → dx: (B, H, W, C) when need_dx, else None."""
        dy = self.cv.relu_backward(dy, self._cache["stem.relu"])
        return self._conv_bn_backward(dy, self._cache["stem"], "stem.conv.weight", "stem.norm.",
                                      need_dx)

    def block_forward(self, n, x, stride, train):
        """Residual basic block ``n`` (name prefix). x: (B, H, W, C_in) →
        (B, H/stride, W/stride, C_out)."""
        cv, bc = self.cv, {}
        h, bc["a"] = self._conv_bn(x, n + "conv1.weight", n + "norm1.", stride, 1, train)
        h, bc["relu1"] = cv.relu_forward(h)
        h, bc["b"] = self._conv_bn(h, n + "conv2.weight", n + "norm2.", 1, 1, train)
        if n + "shortcut.conv.weight" in self.params:
            s, bc["short"] = self._conv_bn(x, n + "shortcut.conv.weight", n + "shortcut.norm.",
                                           stride, 0, train)
        else:
            s = x                                    # identity shortcut
        y, bc["out"] = cv.add_relu(h, s)
        self._cache[n] = bc
        return y

    def block_backward(self, n, dy):
        """dy: gradient w.r.t. block ``n``'s output → gradient w.r.t. its input. The sum
        passes its gradient to both the residual branch and the shortcut."""
        cv, bc = self.cv, self._cache[n]
        dy = cv.relu_backward(dy, bc["out"])
        dh = self._conv_bn_backward(dy, bc["b"], n + "conv2.weight", n + "norm2.")
        dh = cv.relu_backward(dh, bc["relu1"])
        dx = self._conv_bn_backward(dh, bc["a"], n + "conv1.weight", n + "norm1.")
        if "short" in bc:
            return dx + self._conv_bn_backward(dy, bc["short"], n + "shortcut.conv.weight",
                                               n + "shortcut.norm.")
        return dx + dy

    def pool_unit_forward(self, n, x, pooled, train):
        """Unit ``n`` of a pool trunk: x: (B, S, S, C_in) → ReLU(BN(maxpool2(conv3×3(x))))
        (B, S/2, S/2, C_out) when pooled, else ReLU(BN(conv3×3(x))) (B, S, S, C_out).
        Pooling before BN normalises the statistics of the values that go on."""
        cv, p, c, uc = self.cv, self.params, self.config, {}
        h, uc["conv"] = cv.conv2d_forward(x, p[n + "conv.weight"], None, 1, 1)
        if pooled:
            h, uc["pool"] = cv.maxpool2d_forward(h, 2)
        h, uc["norm"] = cv.batchnorm_forward(h, p[n + "norm.weight"], p[n + "norm.bias"],
                                             self.buffers[n + "norm.running_mean"],
                                             self.buffers[n + "norm.running_var"],
                                             train, c.bn_momentum, c.bn_eps)
        y, uc["relu"] = cv.relu_forward(h)
        self._cache[n] = uc
        return y

    def pool_unit_backward(self, n, dy, need_dx=True):
        """dy: gradient w.r.t. unit ``n``'s output → gradient w.r.t. its input (or None)."""
        cv, g, uc = self.cv, self.grads, self._cache[n]
        dh = cv.relu_backward(dy, uc["relu"])
        dh, g[n + "norm.weight"], g[n + "norm.bias"] = cv.batchnorm_backward(dh, uc["norm"])
        if "pool" in uc:
            dh = cv.maxpool2d_backward(dh, uc["pool"])
        dx, g[n + "conv.weight"], _ = cv.conv2d_backward(dh, uc["conv"], need_dx)
        return dx

    def trunk_forward(self, x, train):
        """x: (B, H, W, C) → feature map (B, feature_size, feature_size, feature_dim)."""
        h = self.stem_forward(x, train)
        for n, _, _, stride in self.config.blocks():
            h = self.block_forward(n, h, stride, train)
        for n, _, _, pooled in self.config.pool_units():
            h = self.pool_unit_forward(n, h, pooled, train)
        return h

    def trunk_backward(self, dh, need_dx=False):
        """dh: gradient w.r.t. the feature map → fills the trunk's grads; returns
        dx (B, H, W, C) when need_dx, else None."""
        for n, _, _, _ in reversed(self.config.pool_units()):
            dh = self.pool_unit_backward(n, dh)
        for n, _, _, _ in reversed(self.config.blocks()):
            dh = self.block_backward(n, dh)
        return self.stem_backward(dh, need_dx)


# ---------------------------------------------------------------------- the ResNet
class ResNet(ConvTrunk):
    """A CIFAR ResNet with hand-written forward and backward passes.

    config: a :class:`ResNetConfig` or a preset name ("resnet-20", …). seed: init seed.
    dtype: "float32" (training) or "float64" (gradient checks). backend: "numpy" or
    "numba". params: optional host dict to start from (parameters, optionally BN stats).
    """

    config_class = ResNetConfig

    def __init__(self, config, seed=0, dtype="float32", backend="numpy", params=None):
        super().__init__(config, dtype, backend)
        if params is None:
            params = {**init_params(self.config, seed), **init_buffers(self.config)}
        self.load_params(params)

    def head_forward(self, h):
        """h: (B, S, S, C) → logits: (B, classes): global average pool, then linear."""
        f, self._cache["gap"] = self.cv.global_avgpool_forward(h)
        logits, self._cache["head"] = self.be.linear_forward(f, self.params["head.weight"],
                                                             self.params["head.bias"])
        return logits

    def head_backward(self, dlogits):
        """dlogits: (B, classes) → gradient w.r.t. the feature map (B, S, S, C)."""
        g = self.grads
        df, g["head.weight"], g["head.bias"] = self.be.linear_backward(dlogits,
                                                                       self._cache["head"])
        return self.cv.global_avgpool_backward(df, self._cache["gap"])

    def forward(self, images, train=False):
        """images: (B, H, W, C) normalised floats → logits: (B, classes).

        train=False (inference) normalises with the running statistics; train=True with
        the batch's, and updates the running statistics.
        """
        self._cache = {}
        x = self.check_images(images)
        return self.head_forward(self.trunk_forward(x, train))

    def backward(self, dlogits, need_dimages=False):
        """dlogits: (B, classes) w.r.t. the last forward's logits. Fills ``self.grads``
        (same names as ``self.params``); returns dimages (B, H, W, C) when need_dimages."""
        if "head" not in self._cache:
            raise RuntimeError("backward() called before forward()")
        self.grads = {}
        dh = self.head_backward(self.be.asarray(dlogits, dtype=self.dtype))
        dx = self.trunk_backward(dh, need_dimages)
        self.grads = {n: self.grads[n] for n in self.params}      # model order
        return dx

    def loss_and_grads(self, images, labels, smoothing=0.0, rng_key=None, first_row=0):
        """One training step's forward (batch statistics) and backward with softmax
        cross-entropy. images: (B, H, W, C); labels: (B,) ints or (B, classes) soft.
        rng_key, first_row: the trainer's dropout keys (the ViT's signature); a ResNet
        has no dropout, so they are unused.
        Returns (loss: float, logits: host (B, classes)); gradients in ``self.grads``."""
        logits = self.forward(images, train=True)
        loss, dlogits = self.be.softmax_cross_entropy(logits, labels, smoothing)
        self.backward(dlogits)
        return loss, self.be.to_host(logits)


__all__ = ["ResNet", "ResNetConfig", "HybridConfig", "ConvTrunk", "init_params",
           "init_trunk_params", "init_buffers"]
