"""What the one training loop (:mod:`minivit.train`) optimises: an objective object.

The loop owns everything that is the same for every objective — the schedule, the
optimizer, data order, signals, atomic checkpoints, exact resume, metrics and progress.
An objective says what differs: which model it trains, how a batch is prepared from the
uint8 images, the loss and gradients of one batch, and how to evaluate.

* :class:`Classification` — supervised training and fine-tuning (paper §3, §4.1): softmax
  cross-entropy on the class token's head; fine-tuning is this objective started from
  adapted weights (:mod:`minivit.finetune`).
* :class:`minivit.pretrain.MaskedPatchPrediction` — self-supervised pre-training
  (paper §4.6, Appendix B.1.2).

A new objective subclasses :class:`Objective` and is passed as ``train(objective=...)``.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError


class Objective:
    """The interface the training loop calls (this base class is classification-agnostic).

    name: saved in the checkpoint (``meta.json`` "objective"); a run is resumed only by
    the same objective. settings: the objective's own settings dataclass (saved too), or
    None. uses_labels: whether the training labels matter. train_accuracy: whether
    ``step`` counts correct predictions (else the training accuracy is not reported).
    not_data_parallel: None when K MPI ranks may each train on a B/K shard of the
    global batch (``step``'s loss a mean over equal shares, :mod:`minivit.distributed`),
    else why not (the launch is then refused at K > 1).
    """

    name = "objective"
    settings = None
    uses_labels = True
    train_accuracy = True               # step() counts correct predictions
    not_data_parallel = None

    def build_model(self, config, s):
        """A trainable model for ``config`` and TrainSettings ``s``: an object with
        ``params``, ``grads``, ``be``, ``dtype`` (what the optimizers need)."""
        raise NotImplementedError

    def backbone(self, model):
        """The ViT inside ``model`` (saved as the checkpoint's parameters)."""
        return model

    def transform(self, config, s):
        """The training batch transform ``(x_uint8 (B, H, W, C), y, rng) -> (xb, yb)``;
        it must draw all its randomness from ``rng`` (exact resume)."""
        raise NotImplementedError

    def check_data(self, config, data):
        """Raise ConfigError when ``data`` cannot train this model (before any step)."""

    def step(self, model, xb, yb, s, rng_key=None, first_row=0):
        """One forward and backward pass. Returns (loss: float, correct: int | None,
        counted: int): the gradients land in ``model.grads``.

        rng_key: (seed, step) of this training step, which keys its dropout and
        stochastic-depth masks; first_row: the index of ``xb[0]`` in the global batch (an
        MPI rank's shard starts there), so each image gets the masks it would get in
        one process (:meth:`minivit.model.ViT.draw_masks`)."""
        raise NotImplementedError

    def evaluate(self, model, x, y, s) -> dict:
        """{"loss": float, "acc": float} on held-out uint8 images x (n, H, W, C)."""
        raise NotImplementedError

    def extra_state(self, model) -> dict:
        """Host arrays saved besides the backbone (checkpoint keys ``extra/<name>``)."""
        return {}

    def load_extra_state(self, model, arrays: dict):
        """Restore what :meth:`extra_state` saved."""

    def given_settings(self) -> dict:
        """The objective settings the caller chose (checked against a resumed run's)."""
        return self.settings.to_dict() if self.settings is not None else {}

    def checkpoint_meta(self) -> dict:
        """Extra meta.json fields of this objective's checkpoints."""
        return {}

    def describe(self) -> str:
        """One phrase for the header line."""
        return self.name


class Classification(Objective):
    """Softmax cross-entropy on the class token's head (Eq. 4), with the trainer's
    augmentation (crop, flip, RandAugment, mixup/cutmix) and label smoothing."""

    name = "classification"

    def build_model(self, config, s):
        from .config import ViTConfig
        from .model import refuse_on_cuda
        from .models import build_model        # a ViT, ResNet or hybrid ViT by config
        if isinstance(config, ViTConfig):      # before any step, not at the first one
            refuse_on_cuda(config, s.backend)
        return build_model(config, seed=s.seed, dtype=s.dtype, backend=s.backend)

    def transform(self, config, s):
        from .data.augment import Augmenter
        if s.crop_mode == "reflect" and s.crop_padding >= config.image_size:
            # np.pad's reflection needs more pixels than it mirrors: say so before any step.
            raise ConfigError(f"crop mode reflect needs crop padding < image size "
                              f"{config.image_size}, got {s.crop_padding}")
        return Augmenter(crop_padding=s.crop_padding, crop_mode=s.crop_mode, flip=s.flip,
                         rand_augment=s.rand_augment,
                         mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, mix_prob=s.mix_prob,
                         num_classes=config.num_classes)

    def check_data(self, config, data):
        from .ops.losses import check_labels
        C = config.num_classes
        for split in ("train", "test"):
            y = data[f"y_{split}"]
            if len(y):
                try:
                    check_labels(y, C, what=f"{split} labels")
                except ConfigError as e:
                    raise ConfigError(f"{e}: the model has num_classes={C}; give a "
                                      f"--num-classes that covers every label") from None

    def step(self, model, xb, yb, s, rng_key=None, first_row=0):
        loss, logits = model.loss_and_grads(xb, yb, s.label_smoothing, rng_key=rng_key,
                                            first_row=first_row)
        hard = yb if yb.ndim == 1 else np.argmax(yb, axis=1)
        return loss, int((np.argmax(logits, axis=1) == hard).sum()), len(yb)

    def evaluate(self, model, x, y, s):
        from .evaluate import evaluate
        ev = evaluate(model, x, y, s.eval_batch_size)
        return {"loss": ev["loss"], "acc": ev["acc"]}
