"""The settings of a run besides the architecture: what the trainer does and on which data.

Like :class:`~minivit.config.ViTConfig`, each class here is the single source of truth
for its knobs: the command line is derived from the fields (:mod:`minivit.flags`: flag
name, type, default, and the help text from the ``name: text`` lines of the class
docstring), ``validate()`` words every error, and the checkpoint stores ``to_dict()`` so
``--resume`` continues exactly the run that was started.

This module sits low in the import graph (beside ``config``), so the checkpoint reader
can validate saved settings without importing the trainer.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .config import check_fields
from .errors import ConfigError

BACKENDS = ("numpy", "numba", "cuda")


def check_backend_name(name) -> str:
    """Return ``name`` if it names a backend, else raise ConfigError with the one wording
    every subcommand and the Python API use."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _need(cond, msg):
    if not cond:
        raise ConfigError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Settings:
    """to_dict / from_dict shared by the settings dataclasses (unknown keys refused)."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict):
        d = check_fields(cls, d, cls.KIND, "setting")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def replace(self, **changes):
        """A copy with some fields changed (not validated: call ``validate()``)."""
        return dataclasses.replace(self, **changes)


def parse_rand_augment(text: str) -> tuple[int, float]:
    """``"N,M"`` → (N, M): RandAugment with N operations of magnitude M."""
    try:
        n, mag = str(text).split(",")
        return (int(n), float(mag))
    except ValueError:
        raise ConfigError(f"rand_augment must be N,M (e.g. 2,9), got {text!r}") from None


@dataclass
class TrainSettings(_Settings):
    """Every knob of the training loop (saved in the checkpoint; resume uses the saved ones).

    epochs:          length of the run in passes over the training set.
    batch_size:      images per optimizer step.
    optimizer:       adamw or sgd.
    lr:              peak learning rate, reached after the warm-up.
    min_lr:          learning rate at the end of the decay.
    weight_decay:    decoupled weight decay, on dense kernels only.
    momentum:        SGD momentum (used by sgd only).
    beta1:           AdamW's first-moment decay.
    beta2:           AdamW's second-moment decay.
    warmup_epochs:   linear warm-up length in epochs (None: the default rule).
    schedule:        decay after the warm-up: cosine, linear or constant.
    clip_norm:       global gradient-norm clipping (paper: 1.0; 0 disables).
    label_smoothing: mix the one-hot targets with the uniform distribution by this much.
    crop_padding:    random crop after padding by this many pixels (0: no crop).
    crop_mode:       how the crop pads: zero (black borders) or reflect (mirrored
                     pixels, as airbench's translate augmentation; the test images
                     never have black borders).
    flip:            random horizontal flips.
    rand_augment:    RandAugment with N ops of magnitude M, written N,M (e.g. 2,9).
    mixup:           mixup alpha (0: off).
    cutmix:          cutmix alpha (0: off).
    mix_prob:        probability that a batch is mixed when mixup or cutmix is on.
    backend:         numpy, numba or cuda.
    dtype:           float32 or float64.
    seed:            seed of the initialisation, data order and augmentation.
    eval_batch_size: images per evaluation batch.
    eval_every:      evaluate on the test split every K epochs (and after the last).
    ema_decay:       keep an exponential moving average of the weights, updated after
                     every optimizer step, θ̄ ← β·θ̄ + (1 − β)·θ with β = this (e.g.
                     0.999; 0: off); evaluated each epoch beside the raw weights
                     (ema_test_acc in metrics.jsonl) and checkpointed (ema/ keys).
    full_token_epochs: with patch dropout (the model's patch_keep < 1), the last K epochs
                     train on every patch token, so that the model meets the
                     full-length sequences of evaluation before the run ends (the
                     "unmasked tuning" of Li et al. 2023, FLIP); train_flops counts those
                     epochs at full length. 0: patch dropout to the end. A run can be
                     extended (--resume with more --epochs) only before they begin.
    full_token_lr:   with full_token_epochs, restart the learning rate at this value
                     when those epochs begin and decay it (the same schedule) to
                     min_lr at the end of the run (None: the run's decay continues, so
                     they train at its tail).
    """

    KIND = "training"
    # How the run is computed, not what it computes: these may change on --resume.
    HOW = ("backend", "eval_batch_size")
    # What acts only from the first full-token epoch on: these may change on --resume
    # while that epoch has not begun (several final phases from one checkpoint).
    LATE = ("full_token_lr",)

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_epochs: float | None = None
    schedule: str = "cosine"
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    crop_padding: int = 4
    crop_mode: str = "zero"
    flip: bool = True
    rand_augment: tuple | None = dataclasses.field(
        default=None, metadata={"parse": parse_rand_augment, "metavar": "N,M"})
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    backend: str = "numba"
    dtype: str = "float32"
    seed: int = 0
    eval_batch_size: int = 500
    eval_every: int = 1
    ema_decay: float = 0.0
    full_token_epochs: int = 0
    full_token_lr: float | None = None

    def validate(self):
        """Raise ConfigError naming any setting out of range."""
        _need(_is_int(self.epochs) and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _need(_is_int(self.batch_size) and self.batch_size >= 1,
              f"batch size must be >= 1, got {self.batch_size}")
        _need(self.optimizer in ("adamw", "sgd"),
              f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        _need(_is_num(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        _need(_is_num(self.min_lr) and 0 <= self.min_lr <= self.lr,
              f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")
        _need(_is_num(self.weight_decay) and self.weight_decay >= 0,
              f"weight decay must be >= 0, got {self.weight_decay}")
        _need(_is_num(self.momentum) and 0 <= self.momentum < 1,
              f"momentum must lie in [0, 1), got {self.momentum}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _need(_is_num(v) and 0 <= v < 1, f"{name} must lie in [0, 1), got {v}")
        _need(self.warmup_epochs is None
              or (_is_num(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs),
              f"warmup epochs must lie in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        _need(self.schedule in ("cosine", "linear", "constant"),
              f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        _need(_is_num(self.clip_norm) and self.clip_norm >= 0,
              f"clip norm must be >= 0, got {self.clip_norm}")
        _need(_is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1,
              f"label smoothing must lie in [0, 1), got {self.label_smoothing}")
        _need(_is_int(self.crop_padding) and self.crop_padding >= 0,
              f"crop padding must be >= 0, got {self.crop_padding}")
        _need(self.crop_mode in ("zero", "reflect"),
              f"crop mode must be zero or reflect, got {self.crop_mode!r}")
        _need(isinstance(self.flip, bool), f"flip must be True or False, got {self.flip!r}")
        if self.rand_augment is not None:
            ra = self.rand_augment
            _need(isinstance(ra, tuple) and len(ra) == 2 and _is_int(ra[0]) and _is_num(ra[1]),
                  f"rand_augment must be N,M (e.g. 2,9), got {ra!r}")
            _need(ra[0] >= 0, f"rand_augment: num_ops must be >= 0, got {ra[0]}")
            _need(0 <= ra[1] <= 10, f"rand_augment: magnitude must be in 0..10, got {ra[1]}")
        _need(_is_num(self.mixup) and _is_num(self.cutmix) and self.mixup >= 0
              and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0")
        _need(_is_num(self.mix_prob) and 0 <= self.mix_prob <= 1,
              f"mix_prob must lie in [0, 1], got {self.mix_prob}")
        check_backend_name(self.backend)
        _need(self.dtype in ("float32", "float64"),
              f"dtype must be float32 or float64, got {self.dtype!r}")
        _need(_is_int(self.seed) and self.seed >= 0, f"seed must be an int >= 0, got {self.seed}")
        _need(_is_int(self.eval_batch_size) and self.eval_batch_size >= 1,
              f"eval batch size must be >= 1, got {self.eval_batch_size}")
        _need(_is_int(self.eval_every) and self.eval_every >= 1,
              f"eval_every must be an int >= 1, got {self.eval_every}")
        _need(_is_num(self.ema_decay) and 0 <= self.ema_decay < 1,
              f"ema decay must lie in [0, 1) (0: off), got {self.ema_decay!r}")
        _need(not (self.ema_decay and self.backend == "cuda"),
              "ema_decay is not supported on the cuda backend yet")
        _need(_is_int(self.full_token_epochs) and 0 <= self.full_token_epochs <= self.epochs,
              f"full_token_epochs must be an int in [0, epochs={self.epochs}], "
              f"got {self.full_token_epochs!r}")
        if self.full_token_lr is not None:
            _need(_is_num(self.full_token_lr) and self.min_lr <= self.full_token_lr,
                  f"full_token_lr must be a number >= min_lr={self.min_lr}, "
                  f"got {self.full_token_lr!r}")
            _need(self.full_token_epochs >= 1,
                  f"full_token_lr={self.full_token_lr} restarts the learning rate at the "
                  f"full-token epochs, but full_token_epochs is 0 (e.g. "
                  f"--full-token-epochs 4)")
            _need(self.full_token_start >= self.warmup,
                  f"full_token_lr: the full-token epochs (from epoch "
                  f"{self.full_token_start + 1}) begin inside the {self.warmup}-epoch warm-up")
        return self

    @property
    def full_token_start(self) -> int:
        """Index (from 0) of the first epoch on every patch token: epochs −
        full_token_epochs (= epochs, i.e. none, when the knob is off)."""
        return self.epochs - self.full_token_epochs

    @property
    def warmup(self) -> float:
        """Warm-up epochs actually used: ``warmup_epochs``, or by default 2 epochs (at
        most a fifth of the run, so a 1-epoch run still decays)."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return min(2.0, 0.2 * self.epochs)


@dataclass
class DataSettings(_Settings):
    """Which images a run trains and evaluates on (saved in the checkpoint: part of the run).

    synthetic:   a small learnable synthetic set instead of CIFAR-10 (no download); its
                 accuracy says nothing about CIFAR-10.
    limit_train: use only the first N training images (None: all; synthetic set: 1024).
    limit_test:  use only the first N test images (None: all; synthetic set: 256).
    data_folder: train on your own images instead: one sub-folder per class (or train/
                 and test/ holding those), resized to the model's image size; 20% of each
                 class is held out for testing when there is no test/ (None: CIFAR-10).
    """

    KIND = "data"

    synthetic: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    data_folder: str | None = None

    def validate(self):
        """Raise ConfigError naming a limit out of range."""
        for name in ("limit_train", "limit_test"):
            v = getattr(self, name)
            _need(v is None or (_is_int(v) and v >= 1), f"{name} must be >= 1, got {v}")
        return self


@dataclass
class MPPSettings(_Settings):
    """Masked patch prediction (paper §4.6, Appendix B.1.2).

    mask_ratio: fraction of each image's patches that are corrupted and predicted.
    p_mask:     of the corrupted patches, the fraction replaced by the [mask] embedding.
    p_random:   of the corrupted patches, the fraction replaced by another patch's
                embedding (the rest are kept unchanged).
    """

    KIND = "masked-patch-prediction"

    mask_ratio: float = 0.5
    p_mask: float = 0.8
    p_random: float = 0.1

    def validate(self):
        """Raise ConfigError naming a probability out of range."""
        _need(_is_num(self.mask_ratio) and 0 < self.mask_ratio <= 1,
              f"mask_ratio must lie in (0, 1], got {self.mask_ratio}")
        _need(_is_num(self.p_mask) and _is_num(self.p_random) and self.p_mask >= 0
              and self.p_random >= 0 and self.p_mask + self.p_random <= 1,
              f"p_mask={self.p_mask} and p_random={self.p_random} must be >= 0 and sum "
              f"to at most 1")
        return self
