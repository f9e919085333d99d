"""A small CIFAR ResNet (He et al. 2016, §4.2) with hand-written forward and backward.

    stem       h = ReLU(BN(conv3×3(x)))                                   stem_forward
    block      y = ReLU(BN(conv3×3(ReLU(BN(conv3×3_s(h))))) + shortcut(h)) block_forward
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
from .backends.numpy_conv import get_conv_ops
from .errors import ConfigError
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
    """Trunk as :func:`init_trunk_params`; the linear head uniform(±1/√fan_in), torch's
    ``nn.Linear`` default."""
    rng = np.random.default_rng(seed)
    p = init_trunk_params(config, rng)
    bound = 1.0 / math.sqrt(config.feature_dim)
    p["head.weight"] = rng.uniform(-bound, bound, size=(config.feature_dim, config.num_classes))
    p["head.bias"] = rng.uniform(-bound, bound, size=(config.num_classes,))
    return p


def check_images(images, config, dtype, be):
    """images: (B, H, W, C) normalised floats → backend array of ``dtype``. Raises
    ConfigError naming the shape, dtype or NaN problem."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ConfigError(f"images must be (B, H, W, C), got shape {shape}")
    B, H, W, C = shape
    if H != config.image_size or W != config.image_size:
        raise ConfigError(f"image size {H}x{W} does not match the config's "
                          f"{config.image_size}x{config.image_size}")
    if C != config.channels:
        raise ConfigError(f"images have {C} channels, the config expects {config.channels}")
    if B < 1:
        raise ConfigError("empty batch: B = 0")
    if isinstance(images, np.ndarray):
        if images.dtype.kind != "f":
            raise ConfigError(f"images must be normalised floats, got dtype {images.dtype}; "
                              f"use minivit.data.normalize (uint8 pixels are never scaled "
                              f"silently)")
        if not np.isfinite(images).all():
            raise ConfigError("images contain NaN or inf")
    return be.asarray(images, dtype=dtype)


def check_host_params(shapes, host, strict, what="parameter"):
    """Validate host arrays against name → shape: raises ConfigError naming a missing,
    unexpected, mis-shaped, non-float or non-finite entry."""
    if strict:
        missing = [k for k in shapes if k not in host]
        if missing:
            raise ConfigError(f"missing {what}(s): {', '.join(missing)}")
    for name, shape in shapes.items():
        if name not in host:
            continue
        a = np.asarray(host[name])
        if a.shape != shape:
            raise ConfigError(f"{what} {name} has shape {a.shape}, expected {shape}")
        if a.dtype.kind != "f":
            raise ConfigError(f"{what} {name} has dtype {a.dtype}, expected floats")
        if not np.isfinite(a).all():
            raise ConfigError(f"{what} {name} contains NaN or inf")


# ---------------------------------------------------------------------- the trunk
class ConvTrunk:
    """Stem conv + stages of residual basic blocks over (B, H, W, C) feature maps.

    Holds ``params`` (trainable, ``stem.*`` / ``layers.*``), ``buffers`` (BN running
    statistics) and ``grads``; ``cv`` is the conv op set, ``be`` the main backend.
    """

    def __init__(self, config, dtype, backend):
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

    def load_trunk(self, host, strict=True):
        """Copy the trunk's parameters and BN statistics out of ``host`` (name → array).
        Missing running statistics start at (0, 1) unless strict."""
        c = self.config
        check_host_params(c.trunk_shapes(), host, strict)
        check_host_params(c.buffer_shapes(), host, False, "buffer")
        for n in c.trunk_shapes():
            if n in host:
                self.params[n] = self.be.asarray(host[n], dtype=self.dtype)
        start = init_buffers(c)
        for n in c.buffer_shapes():
            if n in host or n not in self.buffers:
                self.buffers[n] = np.array(host.get(n, start[n]), dtype=self.dtype)

    def check_unexpected(self, host, strict):
        """Raise ConfigError naming entries of ``host`` that are neither a parameter nor a
        running statistic of this config (only when strict)."""
        if strict:
            c = self.config
            extra = [k for k in host if k not in c.param_shapes() and k not in c.buffer_shapes()]
            if extra:
                raise ConfigError(f"unexpected parameter(s): {', '.join(extra)}")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter (model order), then the BN running statistics."""
        out = {k: np.array(self.be.to_host(v)) for k, v in self.params.items()}
        out.update({k: np.array(v) for k, v in self.buffers.items()})
        return out

    def num_params(self) -> int:
        """Number of trainable scalars actually allocated (running statistics excluded)."""
        return int(sum(int(np.prod(v.shape)) for v in self.params.values()))

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

    def trunk_forward(self, x, train):
        """x: (B, H, W, C) → feature map (B, feature_size, feature_size, feature_dim)."""
        h = self.stem_forward(x, train)
        for n, _, _, stride in self.config.blocks():
            h = self.block_forward(n, h, stride, train)
        return h

    def trunk_backward(self, dh, need_dx=False):
        """dh: gradient w.r.t. the feature map → fills the trunk's grads; returns
        dx (B, H, W, C) when need_dx, else None."""
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

    def __init__(self, config, seed=0, dtype="float32", backend="numpy", params=None):
        if isinstance(config, str):
            config = ResNetConfig.preset(config)
        if not isinstance(config, ResNetConfig):
            raise ConfigError(f"config must be a ResNetConfig or a preset name, got {config!r}")
        super().__init__(config, dtype, backend)
        self.load_params(init_params(config, seed) if params is None else params)

    def load_params(self, host_params: dict, strict=True):
        """Copy host arrays (parameters and, when present, BN running statistics) into the
        model. Raises ConfigError naming a missing, unexpected, mis-shaped, non-float or
        non-finite entry."""
        self.check_unexpected(host_params, strict)
        check_host_params(self.config.param_shapes(), host_params, strict)
        self.load_trunk(host_params, strict)
        for n in ("head.weight", "head.bias"):
            if n in host_params:
                self.params[n] = self.be.asarray(host_params[n], dtype=self.dtype)

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
        x = check_images(images, self.config, self.dtype, self.be)
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

    def loss_and_grads(self, images, labels, smoothing=0.0):
        """One training step's forward (batch statistics) and backward with softmax
        cross-entropy. images: (B, H, W, C); labels: (B,) ints or (B, classes) soft.
        Returns (loss: float, logits: host (B, classes)); gradients in ``self.grads``."""
        logits = self.forward(images, train=True)
        loss, dlogits = self.be.softmax_cross_entropy(logits, labels, smoothing)
        self.backward(dlogits)
        return loss, self.be.to_host(logits)

    def predict_proba(self, images, batch_size=256):
        """images: (B, H, W, C) normalised → class probabilities (B, classes), inference
        mode (running statistics), host float64."""
        return predict_proba(self, images, batch_size)


def predict_proba(model, images, batch_size=256):
    """Softmax of ``model.forward`` (inference mode) over batches: (B, classes) float64."""
    out = []
    for s in range(0, len(images), batch_size):
        logits = np.asarray(model.be.to_host(model.forward(images[s:s + batch_size])),
                            dtype=np.float64)
        model._cache = {}
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.concatenate(out, axis=0)


__all__ = ["ResNet", "ResNetConfig", "HybridConfig", "ConvTrunk", "init_params",
           "init_trunk_params", "init_buffers"]
