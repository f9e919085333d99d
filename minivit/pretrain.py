"""Self-supervised pre-training by masked patch prediction (paper §4.6, Appendix B.1.2):
the objective and its model. The loop is :func:`minivit.train.train`'s, so pre-training
has resume, signals, atomic checkpoints, metrics, a progress bar and every backend.

The model is the ViT backbone (Eq. 1–3) plus two extra parameters:

* ``mask_token`` (D,): the learned [mask] embedding that replaces 80% of the corrupted
  patch embeddings (:class:`minivit.ops.masked.PatchCorruption`, plugged into
  ``ViT.embed_forward`` as its ``patch_transform``);
* ``mpp_head`` (D → 512): a linear layer applied to the final LayerNorm's output of every
  *patch* token (the class token is not used), predicting the patch's 3-bit mean colour.

Loss: cross-entropy on the corrupted patches only. Recipe as in the paper's pre-training:
AdamW, linear warm-up (5% of the run) then cosine decay to 0, clipping at global norm 1;
random horizontal flips (they change no patch's colour, only where it sits).

Every op runs through the model's backend (``corruption_forward``, ``masked_patch_loss``,
``take_patch_tokens`` … of :class:`minivit.backends.protocol.Backend`); no array is
sliced here. Checkpoints: ``checkpoint.npz`` is a normal minivit checkpoint of the
backbone (loads with ``load_model``, fine-tunes with ``minivit finetune``; its
classification head is the untrained initial one) whose ``extra/`` arrays hold
``mpp_head.weight``, ``mpp_head.bias`` and ``mask_token``.
"""
from __future__ import annotations

import numpy as np

from minivit.config import ViTConfig
from minivit.errors import ConfigError
from minivit.models import model_kind
from minivit.objectives import Objective
from minivit.ops.masked import (NUM_CLASSES, PatchCorruption, corruption_plan,
                                mean_color_targets)
from minivit.settings import MPPSettings, TrainSettings

EXTRA_PARAMS = ("mpp_head.weight", "mpp_head.bias", "mask_token")
_EVAL_TAG = 0x6D707065                  # "mppe": the evaluation plans' own random stream

# The paper's pre-training recipe (B.1.2) as TrainSettings defaults; the augmentations of
# classification do not apply (a crop or RandAugment would change the patch colours).
RECIPE = dict(epochs=1, optimizer="adamw", lr=1e-3, min_lr=0.0, weight_decay=0.05,
              schedule="cosine", clip_norm=1.0, label_smoothing=0.0, crop_padding=0,
              rand_augment=None, mixup=0.0, cutmix=0.0, flip=True)
NOT_USED = ("label_smoothing", "crop_padding", "crop_mode", "rand_augment", "mixup", "cutmix",
            "mix_prob", "ema_decay")   # no weight average of the [mask] token and head yet


class MPPModel:
    """ViT backbone + [mask] embedding + mean-colour head, trained end to end.

    Exposes ``params``, ``grads``, ``be`` and ``dtype`` like a ViT, so the optimizers of
    :mod:`minivit.optim` work on it unchanged. ``params`` holds the backbone's arrays
    (the same objects as ``self.vit.params``: an in-place update trains the ViT) except
    its classification head, plus the three extra parameters.
    """

    def __init__(self, config, seed=0, dtype="float32", backend="numpy", vit=None,
                 mask_ratio=0.5, p_mask=0.8, p_random=0.1):
        from minivit.model import ViT
        self.vit = vit if vit is not None else ViT(config, seed=seed, dtype=dtype,
                                                   backend=backend)
        self.config: ViTConfig = self.vit.config
        self.be = self.vit.be
        self.dtype = self.vit.dtype
        if self.config.channels != 3:
            raise ConfigError("masked patch prediction predicts RGB mean colours: it needs "
                              f"3 channels, the config has {self.config.channels}")
        if self.config.classifier != "token":   # the head below skips token 0 (the class token)
            raise ConfigError(f"masked patch prediction needs a class token; "
                              f"classifier={self.config.classifier!r} is not supported yet")
        if self.config.patch_keep < 1:         # its targets are every patch, in grid order
            raise ConfigError(f"masked patch prediction predicts every patch; "
                              f"patch_keep={self.config.patch_keep} is not supported")
        require_mpp_ops(self.be)
        D = self.config.dim
        rng = np.random.default_rng(seed + 7919)
        host = {
            # Zero-initialised like the paper's heads: the first steps learn the colour
            # prior through the bias, then the backbone starts to receive gradient.
            "mpp_head.weight": np.zeros((D, NUM_CLASSES)),
            "mpp_head.bias": np.zeros((NUM_CLASSES,)),
            # Like the class token and position embeddings: small random normal.
            "mask_token": rng.normal(0.0, 0.02, size=(D,)),
        }
        self.extra = {k: self.be.asarray(v, dtype=self.dtype) for k, v in host.items()}
        self.corruption = PatchCorruption(self.extra["mask_token"], rng=seed + 104729,
                                          mask_ratio=mask_ratio, p_mask=p_mask,
                                          p_random=p_random, backend=self.be)
        self.grads: dict = {}

    @property
    def params(self) -> dict:
        """Name → array of everything trained: the backbone's current arrays (rebuilt at
        every access, so ``self.vit.load_params`` is seen) without the classification
        head, then ``mpp_head.weight``, ``mpp_head.bias``, ``mask_token``."""
        p = {k: v for k, v in self.vit.params.items()
             if not k.startswith(("head.", "pre_logits."))}
        p.update(self.extra)
        return p

    def load_extra(self, host: dict):
        """Copy ``mpp_head.weight``, ``mpp_head.bias``, ``mask_token`` into the model (the
        corruption op and ``params`` see the new arrays)."""
        for k in EXTRA_PARAMS:
            if k not in host:
                raise ConfigError(f"missing masked-patch-prediction parameter {k}")
            a = np.asarray(host[k])
            if a.shape != tuple(self.extra[k].shape):
                raise ConfigError(f"{k} has shape {a.shape}, expected {tuple(self.extra[k].shape)}")
            self.extra[k] = self.be.asarray(a, dtype=self.dtype)
        self.corruption.mask_token = self.extra["mask_token"]

    def extra_state(self) -> dict[str, np.ndarray]:
        """Host copies of the three extra parameters."""
        return {k: np.array(self.be.to_host(v)) for k, v in self.extra.items()}

    # ------------------------------------------------------------------ token head
    def token_head_forward(self, zL):
        """zL: (B, N+1, D) → logits (B, N, 512): the final LayerNorm (Eq. 4's, shared with
        the classifier) on every patch token, then the linear MPP head."""
        be, p, c = self.be, self.vit.params, self.config
        t = be.take_patch_tokens(zL)                                # (B, N, D)
        y, ln = be.layernorm_forward(t, p["norm.weight"], p["norm.bias"], c.ln_eps)
        logits, lin = be.linear_forward(y, self.extra["mpp_head.weight"],
                                        self.extra["mpp_head.bias"])
        return logits, (ln, lin, zL.shape)

    def token_head_backward(self, dlogits, cache):
        """dlogits: (B, N, 512) → dzL: (B, N+1, D) (zero on the class token); fills the
        gradients of the head and of the final LayerNorm."""
        be, g = self.be, self.grads
        ln, lin, shape = cache
        dy, g["mpp_head.weight"], g["mpp_head.bias"] = be.linear_backward(dlogits, lin)
        dt, g["norm.weight"], g["norm.bias"] = be.layernorm_backward(dy, ln)
        return be.take_patch_tokens_backward(dt, shape)

    # ------------------------------------------------------------------ one step
    def forward(self, images, plan, rng_key=None, first_row=0):
        """images: (B, H, W, 3) normalised; plan: a CorruptionPlan for (B, N) →
        logits (B, N, 512) (backend array) and the head's cache. rng_key, first_row: a
        training step's dropout / stochastic-depth key (:meth:`ViT.forward`); None: off."""
        self.corruption.set_plan(plan)
        self.vit.begin_forward(len(images), rng_key=rng_key, first_row=first_row)
        z0 = self.vit.embed_forward(images, patch_transform=self.corruption)
        return self.token_head_forward(self.vit.encoder_forward(z0))

    def loss_and_grads(self, images, targets, plan=None, rng_key=None, first_row=0):
        """One forward and backward pass of masked patch prediction.

        images: (B, H, W, 3) normalised floats; targets: (B, N) mean-colour classes of the
        same images (:func:`minivit.ops.masked.mean_color_targets` on the raw pixels);
        plan: a CorruptionPlan, or None to draw one. rng_key, first_row: the dropout key
        of a training step (:meth:`forward`). Returns (loss: float, plan); the
        gradients of every name in ``params`` land in ``self.grads``.
        """
        vit, be = self.vit, self.be
        if plan is None:
            plan = self.corruption.new_plan(len(images), self.config.num_patches)
        self.corruption.zero_grad()
        self.grads = {}
        logits, hc = self.forward(images, plan, rng_key, first_row)
        loss, dlogits = be.masked_patch_loss(logits, targets, plan.corrupted)
        dzL = self.token_head_backward(dlogits, hc)
        norm_grads = {k: self.grads[k] for k in ("norm.weight", "norm.bias")}
        vit.grads = {}
        vit.embed_backward(vit.encoder_backward(dzL))
        vit.grads.update(norm_grads)
        for k in self.params:
            if k in vit.grads:
                self.grads[k] = vit.grads[k]
        self.grads["mask_token"] = self.corruption.grad
        vit.clear_cache()
        return float(loss), plan


def require_mpp_ops(be):
    """Raise ConfigError when backend ``be`` lacks the masked-patch-prediction ops."""
    missing = [m for m in ("take_patch_tokens", "take_patch_tokens_backward",
                           "corruption_forward", "corruption_backward", "masked_patch_loss")
               if not hasattr(be, m)]
    if missing:
        raise ConfigError(f"the {be.name} backend has no masked-patch-prediction ops yet "
                          f"({', '.join(missing)}); use --backend numpy or numba")


# ---------------------------------------------------------------------- the objective
class MPPBatches:
    """Training transform: (x_uint8 (B, H, W, 3), labels, rng) → (normalised images,
    (targets (B, N), plan)). Flips, the targets (from the flipped raw pixels) and the
    corruption plan all come from the batch's rng, so a resumed run sees the same batches.
    """

    def __init__(self, config, flip, mpp: MPPSettings):
        self.P, self.S, self.N = config.patch_size, config.S, config.num_patches
        self.flip, self.mpp = flip, mpp

    def __call__(self, x, y, rng):
        from minivit.data.augment import normalize
        if self.flip:
            f = rng.random(len(x)) < 0.5
            x = x.copy()
            x[f] = x[f, :, ::-1]
        targets = mean_color_targets(x, self.P, self.S)
        m = self.mpp
        plan = corruption_plan(len(x), self.N, rng, m.mask_ratio, m.p_mask, m.p_random)
        return normalize(x), (targets, plan)


class MaskedPatchPrediction(Objective):
    """Masked patch prediction as an objective of :func:`minivit.train.train`.

    settings: :class:`~minivit.settings.MPPSettings` (default: the paper's 50%, 80/10/10).
    Training labels are not used. Evaluation: the masked-patch loss and the accuracy of
    the predicted mean colour on the test images, with fixed corruption plans.
    """

    name = "masked-patch-prediction"
    uses_labels = False
    train_accuracy = False
    # A shard's corruption plan would point at patches of other ranks' images.
    not_data_parallel = ("masked patch prediction replaces patches by the embeddings of "
                         "patches anywhere in the global batch")

    def __init__(self, settings: MPPSettings | None = None, given: dict | None = None):
        # given: the fields the caller chose (checked against a resumed run's); by
        # default all of ``settings`` when given, none when not.
        self.settings = settings or MPPSettings()
        self._given = given if given is not None else (
            settings.to_dict() if settings is not None else {})

    def given_settings(self):
        return dict(self._given)

    def build_model(self, config, s):
        if not isinstance(config, ViTConfig):    # §4.6 predicts pixel patches of a ViT
            raise ConfigError(f"masked patch prediction pre-trains a plain ViT; "
                              f"{model_kind(config)} models have no image patches to mask "
                              f"(use a ViT preset, e.g. --preset cifar10-tiny)")
        if s.ema_decay:             # the average would have to cover the [mask] token and head
            raise ConfigError("ema_decay is not supported by masked patch prediction yet")
        from minivit.model import refuse_on_cuda
        refuse_on_cuda(config, s.backend)       # dropout/drop path: before any step
        m = self.settings
        return MPPModel(config, seed=s.seed, dtype=s.dtype, backend=s.backend,
                        mask_ratio=m.mask_ratio, p_mask=m.p_mask, p_random=m.p_random)

    def backbone(self, model):
        return model.vit

    def transform(self, config, s):
        return MPPBatches(config, s.flip, self.settings)

    def check_data(self, config, data):
        if data["x_train"].shape[-1] != 3:
            raise ConfigError("masked patch prediction needs RGB images")

    def step(self, model, xb, yb, s, rng_key=None, first_row=0):
        targets, plan = yb
        loss, _ = model.loss_and_grads(xb, targets, plan, rng_key, first_row)
        return loss, None, int(plan.corrupted.sum())

    def evaluate(self, model, x, y, s):
        from minivit.data.augment import normalize
        c, m, be = model.config, self.settings, model.be
        loss_sum, correct, count = 0.0, 0, 0
        for i, start in enumerate(range(0, len(x), s.eval_batch_size)):
            xb = x[start:start + s.eval_batch_size]
            rng = np.random.default_rng([s.seed, _EVAL_TAG, i])
            plan = corruption_plan(len(xb), c.num_patches, rng, m.mask_ratio, m.p_mask,
                                   m.p_random)
            targets = mean_color_targets(xb, c.patch_size, c.S)
            logits, _ = model.forward(normalize(xb), plan)
            loss, _ = be.masked_patch_loss(logits, targets, plan.corrupted)
            pred = np.argmax(np.asarray(be.to_host(logits)), axis=-1)
            k = int(plan.corrupted.sum())
            loss_sum += float(loss) * k
            correct += int((pred == targets)[plan.corrupted].sum())
            count += k
        model.vit.clear_cache()
        return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1)}

    def extra_state(self, model):
        return model.extra_state()

    def load_extra_state(self, model, arrays):
        model.load_extra(arrays)

    def checkpoint_meta(self):
        return {"pretrain": self.name}

    def describe(self):
        m = self.settings
        return (f"masked patch prediction ({m.mask_ratio:.0%} of the patches corrupted; "
                f"labels unused)")


# ---------------------------------------------------------------------- Python API
def pretrain(config=None, images=None, *, out=None, mpp: MPPSettings | None = None,
             settings: TrainSettings | None = None, resume=False, overwrite=False,
             data=None, log=print, progress=False, **overrides) -> dict:
    """Masked-patch-prediction pre-training (paper §4.6, B.1.2) with the shared loop.

    config: ViTConfig or preset (3 channels). images: (M, H, W, 3) uint8 unlabeled
    training images (or ``data``: a dict like ``load_cifar10``'s, whose test split is
    used for evaluation; neither: CIFAR-10 via ``limit_train`` … overrides). out: the run
    directory (checkpoint.npz with the head and [mask] token inside, metrics.jsonl).
    settings / overrides: TrainSettings fields, on top of :data:`RECIPE` (AdamW, 5%
    warm-up, cosine to 0, clip 1, flips). Returns what :func:`minivit.train.train`
    returns; ``result["model"]`` is the :class:`MPPModel`.
    """
    from minivit.train import recipe_settings, train
    if images is not None:
        x = np.asarray(images)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ConfigError(f"pretrain needs uint8 RGB images (M, H, W, 3), got "
                              f"{x.dtype} {x.shape}")
        data = {"x_train": x, "y_train": np.zeros(len(x), np.int64),
                "x_test": x[:0], "y_test": np.zeros(0, np.int64), "source": "user"}
    names = set(TrainSettings.__dataclass_fields__)
    typed = {k: overrides.pop(k) for k in list(overrides) if k in names}
    if resume:                              # only what was chosen: checked against the run
        overrides.update(typed)
    else:
        settings = recipe_settings(settings, typed, RECIPE)
    return train(config, data=data, out_dir=out, resume=resume, overwrite=overwrite,
                 objective=MaskedPatchPrediction(mpp), log=log, progress=progress,
                 settings=settings, **overrides)


def load_pretrained(directory, backend="numpy", dtype=None) -> MPPModel:
    """Rebuild an :class:`MPPModel` from the ``checkpoint.npz`` of a pre-training run."""
    from pathlib import Path

    from minivit.checkpoint import load_checkpoint
    from minivit.model import ViT
    path = Path(directory) / "checkpoint.npz"
    ck = load_checkpoint(path)
    if not all(k in ck["extra"] for k in EXTRA_PARAMS):
        raise ConfigError(f"{path} is not a masked-patch-prediction checkpoint (it holds no "
                          f"MPP head and [mask] token)")
    vit = ViT(ck["config"], dtype=dtype or ck["meta"].get("dtype", "float32"),
              backend=backend, params=ck["params"])
    mpp = MPPSettings.from_dict(ck["meta"].get("objective_settings", {}))
    m = MPPModel(vit.config, vit=vit, mask_ratio=mpp.mask_ratio, p_mask=mpp.p_mask,
                 p_random=mpp.p_random)
    m.load_extra(ck["extra"])
    return m


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    """``minivit pretrain --preset cifar10-tiny --epochs E --out DIR`` and every training
    flag that applies, with the pre-training recipe's defaults."""
    from minivit.flags import add_flags
    from minivit.train import add_run_flags
    add_run_flags(p, defaults=dict(RECIPE, warmup_epochs="5% of the run"), exclude=NOT_USED)
    add_flags(p, MPPSettings, title="masked patch prediction")


def cli_run(args) -> int:
    from minivit.flags import given
    from minivit.train import cli_main, recipe_settings, run_args, train
    kw = run_args(args)
    names = set(TrainSettings.__dataclass_fields__)
    settings = {k: kw.pop(k) for k in list(kw) if k in names}
    if not args.resume:
        kw["settings"] = recipe_settings(None, settings, RECIPE)
    else:
        kw.update(settings)                 # only what was typed: checked against the run
    mpp = given(args, MPPSettings)
    obj = MaskedPatchPrediction(MPPSettings(**mpp), given=mpp)
    return cli_main(train, args, objective=obj, **kw)
