"""Optimizers, learning-rate schedules and gradient clipping (paper §4.1, Appendix B).

Pre-training in the paper: Adam(W) β = (0.9, 0.999), weight decay, linear warm-up then
linear or cosine decay, clipping at global norm 1. Fine-tuning: SGD with momentum 0.9,
cosine decay, no weight decay, clipping at norm 1. The arithmetic of every update runs on
the model's backend (``adamw_update``, ``sgd_update``), so optimizer state lives where the
parameters live (on the GPU for the cuda backend).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import CheckpointError, ConfigError


def decays(name: str) -> bool:
    """Whether weight decay applies to parameter ``name``: only to dense kernels, never to
    biases, LayerNorm scales, the class token or position embeddings (standard practice:
    decaying them only pulls useful offsets and norms towards zero)."""
    parts = name.split(".")
    if name.endswith(".bias") or name.startswith(("cls_token", "pos_embed", "mask_token")):
        return False
    if any(part.startswith("norm") for part in parts):       # LayerNorm scales
        return False
    return name.endswith(".weight")


def restore_arrays(per: dict, d: dict, be, dtype, what: str, prefix: str = "") -> None:
    """per[n] ← d[prefix + n] as a backend array of ``dtype``, for every name of ``per``
    (optimizer state, the weight average). Raises CheckpointError naming a missing or
    mis-shaped key."""
    for n, a in per.items():
        key = prefix + n
        if key not in d:
            raise CheckpointError(f"{what} is missing {key}")
        host = np.asarray(d[key])
        if host.shape != tuple(a.shape):
            raise CheckpointError(f"{what} {key} has shape {host.shape}, "
                                  f"expected {tuple(a.shape)}")
        per[n] = be.asarray(host, dtype=dtype)


class _Optimizer:
    """Shared bookkeeping: parameter names, the backend, per-parameter state."""

    state_names: tuple[str, ...] = ()

    def __init__(self, model, lr, weight_decay):
        if lr < 0:
            raise ConfigError(f"learning rate must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {weight_decay}")
        self.model = model
        self.be = model.be
        self.lr = lr
        self.weight_decay = weight_decay
        self.step_count = 0
        self.state = {s: {n: self.be.zeros_like(p) for n, p in model.params.items()}
                      for s in self.state_names}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies: ``{"<state>/<param name>": array, "step": array(step)}``."""
        d = {f"{s}/{n}": np.array(self.be.to_host(a))
             for s, per in self.state.items() for n, a in per.items()}
        d["step"] = np.array(self.step_count, dtype=np.int64)
        return d

    def load_state_dict(self, d: dict):
        """Restore from :meth:`state_dict` output; names and shapes must match."""
        for s, per in self.state.items():
            restore_arrays(per, d, self.be, self.model.dtype, "optimizer state", f"{s}/")
        if "step" not in d:
            raise CheckpointError("optimizer state is missing step")
        self.step_count = int(np.asarray(d["step"]))


class AdamW(_Optimizer):
    """AdamW (decoupled weight decay), torch-compatible arithmetic.

    model: a ViT (its params/grads/backend are used). Weight decay applies only where
    :func:`decays` says so.
    """

    state_names = ("m", "v")

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05):
        super().__init__(model, lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps

    def step(self, lr=None):
        """Apply one update with the model's current gradients (in place)."""
        lr = self.lr if lr is None else lr
        self.step_count += 1
        m, v = self.state["m"], self.state["v"]
        for n, p in self.model.params.items():
            wd = self.weight_decay if decays(n) else 0.0
            self.be.adamw_update(p, self.model.grads[n], m[n], v[n], lr, self.beta1,
                                 self.beta2, self.eps, wd, self.step_count)


class SGD(_Optimizer):
    """SGD with (optionally Nesterov) momentum, torch-compatible arithmetic."""

    state_names = ("momentum",)

    def __init__(self, model, lr=0.01, momentum=0.9, weight_decay=0.0, nesterov=False):
        super().__init__(model, lr, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov

    def step(self, lr=None):
        """Apply one update with the model's current gradients (in place)."""
        lr = self.lr if lr is None else lr
        self.step_count += 1
        buf = self.state["momentum"]
        for n, p in self.model.params.items():
            wd = self.weight_decay if decays(n) else 0.0
            self.be.sgd_update(p, self.model.grads[n], buf[n], lr, self.momentum, wd,
                               self.nesterov)


def global_norm(be, grads: dict) -> float:
    """√(Σ over all gradients of Σ g²): the global gradient norm."""
    return math.sqrt(sum(be.sum_squares(g) for g in grads.values()))


def clip_grad_norm(be, grads: dict, max_norm: float) -> float:
    """Scale all gradients so their global norm is at most ``max_norm`` (paper: 1).
    Returns the norm before clipping."""
    norm = global_norm(be, grads)
    if max_norm and norm > max_norm:
        s = max_norm / (norm + 1e-6)
        for g in grads.values():
            be.scale_(g, s)
    return norm


class LRSchedule:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then ``decay`` to
    ``min_lr`` at ``total_steps``: "cosine", "linear" or "constant".

    restart: optional (step, lr): from that step on the rate starts again at ``lr`` and
    decays the same way to ``min_lr`` at ``total_steps`` (no second warm-up: the
    optimizer's moments are already warm). The trainer restarts it at the first
    full-token epoch (TrainSettings.full_token_lr)."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, decay="cosine", min_lr=0.0,
                 restart=None):
        if decay not in ("cosine", "linear", "constant"):
            raise ConfigError(f"decay must be cosine, linear or constant, got {decay!r}")
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ConfigError(f"warmup_steps must lie in [0, {total_steps}], got {warmup_steps}")
        if restart is not None and not warmup_steps <= restart[0] < total_steps:
            raise ConfigError(f"the restart step must lie in [{warmup_steps}, {total_steps}), "
                              f"got {restart[0]}")
        self.base_lr, self.total, self.warmup = base_lr, total_steps, warmup_steps
        self.decay, self.min_lr, self.restart = decay, min_lr, restart

    @classmethod
    def of_run(cls, s, steps_per_epoch: int) -> "LRSchedule":
        """The schedule of a run with TrainSettings ``s`` and ``steps_per_epoch`` steps
        per epoch: the warm-up rounded to whole steps, and restarted at the first
        full-token epoch when ``s.full_token_lr`` is set."""
        return cls(s.lr, s.epochs * steps_per_epoch, int(round(s.warmup * steps_per_epoch)),
                   s.schedule, s.min_lr,
                   restart=None if s.full_token_lr is None else
                   (s.full_token_start * steps_per_epoch, s.full_token_lr))

    def __call__(self, step: int) -> float:
        """Learning rate for 0-based ``step``."""
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        start, peak = self.warmup, self.base_lr
        if self.restart is not None and step >= self.restart[0]:
            start, peak = self.restart
        if self.decay == "constant":
            return peak
        t = min(1.0, (step - start) / max(1, self.total - start))
        f = 0.5 * (1.0 + math.cos(math.pi * t)) if self.decay == "cosine" else 1.0 - t
        return self.min_lr + (peak - self.min_lr) * f
