"""The backend contract, written down once: every op a model or trainer may call.

A backend is an object with these methods (NumPy is the reference implementation,
:class:`~minivit.backends.numpy_ops.NumpyBackend`; Numba subclasses it; CUDA implements
every method on device arrays). "Array" means the backend's own array type (a NumPy
array, a numba.cuda device array); "host" means a NumPy array. Shapes use the paper's
names: B images, N patches (N+1 tokens with the class token), D the width, H heads,
D_h = D/H, P the patch size, S the stride, C classes, M the MLP width.

Every op is a pair: ``*_forward(...) -> (out, cache)``, ``*_backward(dout, cache) ->
grads``. A cache is opaque: only the backend that made it reads it. A model may hold
caches but never looks inside one; nothing outside a model touches the model's caches
(models offer ``clear_cache()``).

tests/test_backend_contract.py checks that the numpy, numba and cuda backends implement
every method here with the same parameter names, and that the NumPy reference has no
public method that is missing here.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Array = Any
Cache = Any


@runtime_checkable
class Backend(Protocol):
    """What :class:`minivit.model.ViT`, the MPP objective and the optimizers call."""

    name: str

    # ------------------------------------------------------------------ glue
    def asarray(self, x, dtype=None) -> Array:
        """Host (or backend) array → backend array of ``dtype`` (C-contiguous)."""

    def to_host(self, x) -> Any:
        """Backend array → host numpy array (no copy when it already is one)."""

    def zeros(self, shape, dtype) -> Array:
        """A backend array of zeros, ``shape``, ``dtype``."""

    def zeros_like(self, x) -> Array:
        """Zeros with x's shape and dtype."""

    def copy(self, x) -> Array:
        """A copy of x (same shape and dtype)."""

    def add(self, a, b) -> Array:
        """a + b, same shape: the residual connections of Eq. 2–3."""

    def take_cls(self, z) -> Array:
        """z: (B, N+1, D) → the class token z[:, 0]: (B, D) (Eq. 4 reads only it)."""

    def take_cls_backward(self, dy, z_shape) -> Array:
        """dy: (B, D) → dz: (B, N+1, D) = z_shape, zero everywhere but the class token."""

    def take_patch_tokens(self, z) -> Array:
        """z: (B, N+1, D) → the patch tokens z[:, 1:]: (B, N, D) (the MPP head reads them)."""

    def take_patch_tokens_backward(self, dy, z_shape) -> Array:
        """dy: (B, N, D) → dz: (B, N+1, D) = z_shape, zero on the class token."""

    # ------------------------------------------------------------------ Eq. 1
    def patches_forward(self, images, P, S=None) -> tuple[Array, Cache]:
        """images: (B, H, W, C) → patches (B, N, P·P·C) in (h, w, c) order; S=None: S=P."""

    def patches_backward(self, dpatches, cache) -> Array:
        """dpatches: (B, N, P·P·C) → dimages: (B, H, W, C) (overlaps summed)."""

    def tokens_forward(self, e, cls, pos=None) -> tuple[Array, Cache]:
        """e: (B, N, D), cls: (1, 1, D), pos: (1, N+1, D) or None → z0: (B, N+1, D)."""

    def tokens_backward(self, dz, cache) -> tuple[Array, Array, Array | None]:
        """dz: (B, N+1, D) → de (B, N, D), dcls (1, 1, D), dpos (1, N+1, D) or None."""

    def pos2d_forward(self, pos_cls, row, col) -> tuple[Array, Cache]:
        """pos_cls: (1, D) or None (no class token), row: (G_h, D/2), col: (G_w, D/2) →
        E_pos: (1, 1+G_h·G_w, D) ((1, G_h·G_w, D) without pos_cls)."""

    def pos2d_backward(self, dpos, cache) -> tuple[Array | None, Array, Array]:
        """dpos: (1, [1+]G_h·G_w, D) → dpos_cls (1, D) (None without a class token),
        drow (G_h, D/2), dcol (G_w, D/2)."""

    def pos_add_forward(self, e, pos=None) -> tuple[Array, Cache]:
        """Eq. 1 without a class token (GAP): e: (B, N, D), pos: (1, N, D) or None →
        z0 = e + pos: (B, N, D)."""

    def pos_add_backward(self, dz, cache) -> tuple[Array, Array | None]:
        """dz: (B, N, D) → de (B, N, D), dpos (1, N, D) or None."""

    # ------------------------------------------------------------------ Eq. 2–4
    def linear_forward(self, x, W, b=None) -> tuple[Array, Cache]:
        """x: (..., D_in), W: (D_in, D_out), b: (D_out,) or None → x W + b: (..., D_out)."""

    def linear_backward(self, dy, cache, need_dx=True) -> tuple[Array | None, Array, Array | None]:
        """dy: (..., D_out) → dx (..., D_in) (None unless need_dx), dW (D_in, D_out),
        db (D_out,) (None when there was no bias)."""

    def linear_gelu_forward(self, x, W, b, approximate="tanh") -> tuple[Array, Cache]:
        """The MLP's fc1 then GELU. x: (..., D), W: (D, M), b: (M,) → (..., M)."""

    def linear_gelu_backward(self, du, cache, need_dx=True) -> tuple[Array | None, Array, Array]:
        """du: (..., M) → dx (..., D), dW (D, M), db (M,)."""

    def layernorm_forward(self, x, gamma, beta, eps=1e-6) -> tuple[Array, Cache]:
        """x: (..., D), gamma, beta: (D,) → LN(x): (..., D) over the last axis."""

    def layernorm_backward(self, dy, cache) -> tuple[Array, Array, Array]:
        """dy: (..., D) → dx (..., D), dgamma (D,), dbeta (D,)."""

    def gelu_forward(self, x, approximate="tanh") -> tuple[Array, Cache]:
        """x: (...) → GELU(x): (...); approximate "tanh" or "erf"."""

    def gelu_backward(self, dy, cache) -> Array:
        """dy: (...) → dx: (...)."""

    def tanh_forward(self, x) -> tuple[Array, Cache]:
        """x: (...) → tanh(x): (...) (the pre-logits head)."""

    def tanh_backward(self, dy, cache) -> Array:
        """dy: (...) → dx = dy·(1 − tanh²): (...)."""

    def mhsa_core_forward(self, qkv, H) -> tuple[Array, Cache]:
        """qkv: (B, N+1, 3D) → softmax(q kᵀ/√D_h) v per head, heads concatenated: (B, N+1, D)."""

    def mhsa_core_backward(self, dout, cache) -> Array:
        """dout: (B, N+1, D) → dqkv: (B, N+1, 3D)."""

    def attention_probs(self, cache) -> Any:
        """The attention matrices of an ``mhsa_core_forward`` cache: host (B, H, N+1, N+1)."""

    def mean_tokens_forward(self, z) -> tuple[Array, Cache]:
        """Global average pooling (classifier="gap"): z: (B, N, D) → mean over N: (B, D)."""

    def mean_tokens_backward(self, dy, cache) -> Array:
        """dy: (B, D) → dz: (B, N, D) = dy/N on every token."""

    def dropout_forward(self, x, mask) -> tuple[Array, Cache]:
        """Dropout / drop path with a given mask: x: (B, T, D) (any shape), mask: same
        shape or (B, 1, 1), of 0 and 1/(1−p) → x ⊙ mask."""

    def dropout_backward(self, dy, cache) -> Array:
        """dy: like x → dx = dy ⊙ mask."""

    def keep_tokens_forward(self, z, idx) -> tuple[Array, Cache]:
        """Patch dropout: z: (B, T, D), idx: host (B, T') int positions, distinct within
        a row → z[b, idx[b]]: (B, T', D)."""

    def keep_tokens_backward(self, dy, cache) -> Array:
        """dy: (B, T', D) → dz: (B, T, D), dy at the kept positions, zero elsewhere."""

    def softmax_cross_entropy(self, logits, labels, smoothing=0.0) -> tuple[float, Array]:
        """logits: (B, C); labels: host (B,) ints or (B, C) soft targets → (mean loss,
        dlogits (B, C))."""

    # ------------------------------------------------------------------ masked patch prediction
    def corruption_forward(self, e, mask_token, plan) -> tuple[Array, Cache]:
        """e: (B, N, D) patch embeddings, mask_token: (D,), plan: a host
        :class:`~minivit.ops.masked.CorruptionPlan` for (B, N) → e': (B, N, D)."""

    def corruption_backward(self, dout, cache) -> tuple[Array, Array]:
        """dout: (B, N, D) → de (B, N, D), dmask_token (D,)."""

    def masked_patch_loss(self, logits, targets, corrupted) -> tuple[float, Array]:
        """logits: (B, N, 512); targets: host (B, N) ints; corrupted: host (B, N) bool →
        (mean cross-entropy over the corrupted patches, dlogits (B, N, 512))."""

    # ------------------------------------------------------------------ optimizer
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step) -> None:
        """AdamW in place on p, m, v (all one shape); step: 1-based."""

    def sgd_update(self, p, g, buf, lr, momentum, weight_decay, nesterov=False) -> None:
        """SGD with momentum in place on p and buf (same shape; buf None if momentum 0)."""

    def ema_update(self, s, p, decay) -> None:
        """s ← decay·s + (1 − decay)·p in place (the weight average, :mod:`minivit.ema`);
        s, p: one shape."""

    def sum_squares(self, x) -> float:
        """Σ x² as a Python float (the global gradient norm)."""

    def scale_(self, x, s) -> None:
        """x ← s·x in place (gradient clipping)."""

    def all_finite(self, x) -> bool:
        """True when no element of x is NaN or ±inf."""


def contract_methods() -> list[str]:
    """The names of every method of the contract, in the order above."""
    return [n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")]
