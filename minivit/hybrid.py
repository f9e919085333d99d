"""The hybrid Vision Transformer (paper §3.1, "Hybrid Architecture"):

    "As an alternative to raw image patches, the input sequence can be formed from feature
    maps of a CNN. In this hybrid model, the patch embedding projection E (Eq. 1) is
    applied to patches extracted from a CNN feature map. As a special case, the patches
    can have spatial size 1x1, which means that the input sequence is obtained by simply
    flattening the spatial dimensions of the feature map and projecting to the
    Transformer dimension."

Here the CNN is the trunk of :mod:`minivit.resnet` (stem + residual stages, or conv →
max-pool stages with ``trunk="pool"``; batch norm), and the Transformer is an unmodified :class:`~minivit.model.ViT` whose "image" is
the feature map (feature_size × feature_size × feature_dim) and whose patch size is 1:
Eq. 1–4 run exactly as for the plain ViT, same code, same backends.

    F = trunk(x)                       (B, S, S, C_F)      trunk_forward
    logits = ViT(F) with P = 1         N = S² tokens       ViT.forward
"""
from __future__ import annotations

import numpy as np

from .errors import TrainingError
from .model import ViT
from .resnet import ConvTrunk, init_buffers, init_trunk_params
from .resnet_config import HybridConfig


class HybridViT(ConvTrunk):
    """Conv trunk + ViT encoder, with hand-written forward and backward passes.

    config: a :class:`HybridConfig` or a preset name ("hybrid-tiny", …). seed: init seed.
    dtype: "float32" or "float64". backend: "numpy" or "numba". params: optional host dict.
    ``params`` / ``grads`` hold the trunk's (``stem.*``, ``layers.*``) and the ViT's
    entries under the ViT's own names (``patch_embed.weight``, ``blocks.0.…``); the ViT's
    arrays are shared with ``self.vit``, so in-place optimizer updates reach it.
    """

    config_class = HybridConfig

    def __init__(self, config, seed=0, dtype="float32", backend="numpy", params=None):
        super().__init__(config, dtype, backend)
        c = self.config
        # The ViT gets its official-style init (REFERENCE.md §2); the trunk He init from
        # its own random stream.
        self.vit = ViT(c.vit, seed=seed, dtype=dtype, backend=backend)
        if params is None:
            trunk = init_trunk_params(c, np.random.default_rng((seed, 1)))
            params = {**trunk, **init_buffers(c), **self.vit.state_dict()}
        self.load_params(params)

    @property
    def params(self) -> dict:
        """Trunk and encoder parameters, name → array (the encoder's shared with
        ``self.vit.params``)."""
        return self._params

    @params.setter
    def params(self, value: dict):
        # The encoder (self.vit) computes from its own dict: point it at the same arrays,
        # so replacing the whole dict (load_params, EMA.swapped) reaches the encoder too.
        self._params = value
        if "vit" in self.__dict__:
            self.vit.params = {n: value[n] for n in self.config.vit.param_shapes()
                               if n in value}

    def load_params(self, host_params: dict, strict=True):
        """Copy host arrays (trunk + ViT parameters, BN running statistics) into the model,
        with :meth:`ConvTrunk.load_params`'s checks; the ViT's entries are handed to
        ``self.vit`` (the same arrays), so both see one set of parameters."""
        super().load_params(host_params, strict)
        vit_names = self.config.vit.param_shapes()
        self.vit.load_params({k: v for k, v in self.params.items() if k in vit_names},
                             strict=strict)
        self.params = {k: (self.vit.params[k] if k in vit_names else v)
                       for k, v in self.params.items()}

    @property
    def last_attention(self) -> list:
        """Attention matrices (B, H, N+1, N+1) of every layer, kept by
        ``forward(..., keep_attention=True)``."""
        return self.vit.last_attention

    @last_attention.setter
    def last_attention(self, value):
        self.vit.last_attention = value

    def forward(self, images, train=False, keep_attention=False):
        """images: (B, H, W, C) normalised floats → logits: (B, classes).

        train: batch statistics in the trunk's BN (and running statistics updated), else
        the running statistics. keep_attention: keep the encoder's attention matrices.
        """
        self._cache = {}
        x = self.check_images(images)
        fmap = self.trunk_forward(x, train)                  # (B, S, S, C_F)
        if not self.be.all_finite(fmap):
            raise TrainingError("the conv trunk's feature map contains NaN or inf "
                                "(training diverged? lower the learning rate)")
        self._cache["forward"] = True
        return self.vit.forward(fmap, keep_attention)        # 1×1 patches → Eq. 1–4

    def backward(self, dlogits, need_dimages=False):
        """dlogits: (B, classes). Fills ``self.grads`` (same names and order as
        ``self.params``); returns dimages (B, H, W, C) when need_dimages, else None."""
        if "forward" not in self._cache:
            raise RuntimeError("backward() called before forward()")
        self.grads = {}
        dfmap = self.vit.backward(dlogits, need_dimages=True)  # through Eq. 4 … Eq. 1
        dx = self.trunk_backward(dfmap, need_dimages)
        self.grads.update(self.vit.grads)
        self.grads = {n: self.grads[n] for n in self.params}
        return dx

    def loss_and_grads(self, images, labels, smoothing=0.0, rng_key=None, first_row=0):
        """One training step's forward (batch statistics) and backward with softmax
        cross-entropy. rng_key, first_row: the trainer's dropout keys (the ViT's
        signature); the hybrid's encoder has no dropout, so they are unused.
        Returns (loss: float, logits: host (B, classes))."""
        logits = self.forward(images, train=True)
        loss, dlogits = self.be.softmax_cross_entropy(logits, labels, smoothing)
        self.backward(dlogits)
        return loss, self.be.to_host(logits)

    def predict_proba(self, images, batch_size=256):
        """images: (B, H, W, C) normalised → class probabilities (B, classes), inference
        mode, host float64."""
        return ConvTrunk.predict_proba(self, images, batch_size)

    def clear_cache(self):
        """Drop the activations kept for backward, the trunk's and the encoder's."""
        self._cache = {}
        self.vit.clear_cache()


__all__ = ["HybridViT", "HybridConfig"]
