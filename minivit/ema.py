"""Exponential moving average of the weights (Polyak averaging; timm's ModelEma, the
"EMA" of DeiT and big_vision's ``ema`` decay).

After every optimizer step t:   θ̄_t = β·θ̄_{t−1} + (1 − β)·θ_t,   θ̄_0 = θ_0

so θ̄ averages roughly the last 1/(1 − β) steps' weights (β = 0.999: ~1000 steps). The
average lives on the model's backend, is updated by ``be.ema_update``, evaluated by
swapping it into the model (:meth:`EMA.swapped`) and checkpointed beside the raw weights
(``ema/<name>`` keys), so a resumed run continues the very same average (bit-exact).
"""
from __future__ import annotations

import contextlib

import numpy as np

from .errors import ConfigError
from .optim import restore_arrays


class EMA:
    """Moving average of ``model.params``.

    model: a :class:`~minivit.model.ViT` (or a ResNet / hybrid ViT); decay: β in (0, 1).
    The average starts at the model's current weights.
    """

    def __init__(self, model, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ConfigError(f"EMA decay must lie in (0, 1), got {decay!r}")
        self.model = model
        self.decay = float(decay)
        self.params = {n: model.be.copy(p) for n, p in model.params.items()}

    def update(self):
        """One step of the average, with the model's current weights (after opt.step)."""
        be = self.model.be
        for n, p in self.model.params.items():
            be.ema_update(self.params[n], p, self.decay)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the averaged weights, name → array (the model's names)."""
        be = self.model.be
        return {n: np.array(be.to_host(a)) for n, a in self.params.items()}

    def load_state_dict(self, d: dict):
        """Restore from :meth:`state_dict` output; every name and shape must match
        (CheckpointError naming the key otherwise)."""
        restore_arrays(self.params, d, self.model.be, self.model.dtype, "EMA state")

    @contextlib.contextmanager
    def swapped(self):
        """Within the block the model computes with the averaged weights (e.g. to
        evaluate them); the raw weights are back afterwards, untouched. A conv model's
        batch-norm running statistics are not averaged: the block uses the raw run's."""
        raw = self.model.params
        self.model.params = self.params
        try:
            yield self.model
        finally:
            self.model.params = raw
