"""Self-supervised pre-training by masked patch prediction (paper §4.6, Appendix B.1.2).

The model is the ViT backbone (Eq. 1–3) plus two extra parameters:

* ``mask_token`` (D,): the learned [mask] embedding that replaces 80% of the corrupted
  patch embeddings (:class:`minivit.ops.masked.PatchCorruption`, plugged into
  ``ViT.embed_forward`` as its ``patch_transform``);
* ``mpp_head`` (D → 512): a linear layer applied to the final LayerNorm's output of every
  *patch* token (the class token is not used), predicting the patch's 3-bit mean colour.

Loss: cross-entropy on the corrupted patches only. Optimiser as in the paper's
pre-training: AdamW, linear warm-up then cosine decay, clipping at global norm 1.

Checkpoints: ``checkpoint.npz`` is a normal minivit checkpoint of the backbone
(:func:`minivit.checkpoint.save_checkpoint`; loads with ``load_model`` and fine-tunes with
``minivit finetune``, its classification head is the untrained initial one);
``mpp_head.npz`` holds ``mpp_head.weight``, ``mpp_head.bias`` and ``mask_token``.

The corruption and the loss run on host (NumPy) arrays: use the numpy or numba backend.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from minivit.config import ViTConfig
from minivit.errors import ConfigError, TrainingError
from minivit.ops.masked import (NUM_CLASSES, PatchCorruption, masked_patch_loss,
                                mean_color_targets)

EXTRA_PARAMS = ("mpp_head.weight", "mpp_head.bias", "mask_token")


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
                                          p_random=p_random)
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
        """Copy ``mpp_head.weight``, ``mpp_head.bias``, ``mask_token`` into the model, in
        place (the corruption op and ``params`` keep their references)."""
        for k in EXTRA_PARAMS:
            a = np.asarray(host[k])
            if a.shape != tuple(self.extra[k].shape):
                raise ConfigError(f"{k} has shape {a.shape}, expected {tuple(self.extra[k].shape)}")
            self.extra[k][...] = self.be.asarray(a, dtype=self.dtype)

    def extra_state(self) -> dict[str, np.ndarray]:
        """Host copies of the three extra parameters."""
        return {k: np.array(self.be.to_host(v)) for k, v in self.extra.items()}

    # ------------------------------------------------------------------ token head
    def token_head_forward(self, zL):
        """zL: (B, N+1, D) → logits (B, N, 512): the final LayerNorm (Eq. 4's, shared with
        the classifier) on every patch token, then the linear MPP head."""
        be, p, c = self.be, self.vit.params, self.config
        t = be.asarray(zL[:, 1:], dtype=self.dtype)                 # patch tokens only
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
        dz = be.zeros(shape, self.dtype)
        dz[:, 1:] = dt
        return dz

    # ------------------------------------------------------------------ one step
    def loss_and_grads(self, images, targets, plan=None):
        """One forward and backward pass of masked patch prediction.

        images: (B, H, W, 3) normalised floats; targets: (B, N) mean-colour classes of the
        same images (:func:`minivit.ops.masked.mean_color_targets` on the raw pixels);
        plan: a CorruptionPlan, or None to draw one. Returns (loss: float, plan); the
        gradients of every name in ``params`` land in ``self.grads``.
        """
        vit, be = self.vit, self.be
        B = len(images)
        if plan is None:
            plan = self.corruption.new_plan(B, self.config.num_patches)
        else:
            self.corruption.set_plan(plan)
        self.corruption.zero_grad()
        vit._cache = {}
        vit.keep_attention = False
        self.grads = {}
        z0 = vit.embed_forward(images, patch_transform=self.corruption)
        zL = vit.encoder_forward(z0)
        logits, hc = self.token_head_forward(zL)
        loss, dlogits = masked_patch_loss(np.asarray(be.to_host(logits)), targets,
                                          plan.corrupted)
        dzL = self.token_head_backward(be.asarray(dlogits, dtype=self.dtype), hc)
        norm_grads = {k: self.grads[k] for k in ("norm.weight", "norm.bias")}
        vit.grads = {}
        dz0 = vit.encoder_backward(dzL)
        vit.embed_backward(dz0)
        vit.grads.update(norm_grads)
        for k in self.params:
            if k in vit.grads:
                self.grads[k] = vit.grads[k]
        self.grads["mask_token"] = be.asarray(self.corruption.grad, dtype=self.dtype)
        vit._cache = {}
        return loss, plan


# ---------------------------------------------------------------------- data
def synthetic_images(n, size=32, seed=0):
    """n smooth random RGB images (uint8, (n, size, size, 3)): coarse 4×4 colour grids
    upsampled bilinearly, so patch colours are predictable from their neighbours."""
    from minivit.finetune import resize_images
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.uint8)
    return resize_images(coarse, size)


def _normalize(x_uint8):
    from minivit.inspect import normalize_images
    return normalize_images(x_uint8)


# ---------------------------------------------------------------------- training loop
def pretrain(config, images, epochs=1, batch_size=128, lr=1e-3, weight_decay=0.05,
             warmup_steps=None, clip_norm=1.0, seed=0, backend="numpy", dtype="float32",
             out=None, max_steps=None, flip=True, log=print, mask_ratio=0.5):
    """Masked-patch-prediction pre-training on unlabeled images (paper §4.6, B.1.2).

    config: ViTConfig (3 channels). images: (M, H, W, 3) uint8, H = config.image_size.
    AdamW (β = 0.9, 0.999, decoupled weight decay on kernels only), linear warm-up for
    ``warmup_steps`` (None: 5% of the steps) then cosine decay to 0, clipping at global
    norm ``clip_norm``. flip: random horizontal flips (they change no mean colour's
    class, only where it sits). out: directory for ``checkpoint.npz``, ``mpp_head.npz``
    and ``metrics.jsonl`` (written after every epoch). max_steps: stop early (tests).

    Returns {"model": MPPModel, "history": [{"step", "loss", "lr", "grad_norm"} …],
    "epochs": [{"epoch", "loss", "seconds"} …]}.
    """
    from minivit.checkpoint import atomic_write_npz, save_checkpoint
    from minivit.optim import AdamW, LRSchedule, clip_grad_norm
    if isinstance(config, str):
        config = ViTConfig.preset(config)
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (config.image_size,
                                                           config.image_size, 3):
        raise ConfigError(f"pretrain needs uint8 images (M, {config.image_size}, "
                          f"{config.image_size}, 3), got {x.dtype} {x.shape}")
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    M = len(x)
    steps_per_epoch = max(1, math.ceil(M / batch_size))
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, int(max_steps))
    if warmup_steps is None:
        warmup_steps = int(0.05 * total)
    warmup_steps = min(warmup_steps, total)
    model = MPPModel(config, seed=seed, dtype=dtype, backend=backend, mask_ratio=mask_ratio)
    opt = AdamW(model, lr=lr, weight_decay=weight_decay)
    sched = LRSchedule(lr, total, warmup_steps, "cosine")
    rng = np.random.default_rng(seed + 1)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    history, epochs_log = [], []
    step = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(M)
        losses = []
        for s in range(0, M, batch_size):
            if step >= total:
                break
            batch = x[order[s:s + batch_size]]
            if flip:
                f = rng.random(len(batch)) < 0.5
                batch = batch.copy()
                batch[f] = batch[f, :, ::-1]
            targets = mean_color_targets(batch, config.patch_size, config.S)
            loss, _ = model.loss_and_grads(_normalize(batch), targets)
            if not math.isfinite(loss):
                raise TrainingError(f"MPP loss became {loss} at step {step}")
            gnorm = clip_grad_norm(model.be, model.grads, clip_norm)
            cur = sched(step)
            opt.step(cur)
            history.append({"step": step, "loss": loss, "lr": cur, "grad_norm": gnorm})
            losses.append(loss)
            step += 1
        if not losses:
            break
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "seconds": time.perf_counter() - t0, "steps": step}
        epochs_log.append(rec)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: MPP loss {rec['loss']:.4f} "
                f"({rec['seconds']:.1f} s, step {step})")
        if out is not None:
            save_checkpoint(out / "checkpoint.npz", model.vit, step=step, epoch=epoch + 1,
                            seed=seed, pretrain="masked-patch-prediction",
                            mpp_loss=rec["loss"])
            atomic_write_npz(out / "mpp_head.npz", model.extra_state())
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
    return {"model": model, "history": history, "epochs": epochs_log}


def load_pretrained(directory, backend="numpy", dtype=None) -> MPPModel:
    """Rebuild an :class:`MPPModel` from ``checkpoint.npz`` + ``mpp_head.npz`` written by
    :func:`pretrain`."""
    from minivit.checkpoint import load_model, read_npz
    d = Path(directory)
    vit, _ = load_model(d / "checkpoint.npz", backend=backend, dtype=dtype)
    m = MPPModel(vit.config, vit=vit)
    m.load_extra(read_npz(d / "mpp_head.npz"))
    return m


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    """``minivit pretrain --preset cifar10-tiny --epochs E --out DIR [--data-dir] [--limit N]``."""
    p.add_argument("--preset", default="cifar10-tiny")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 location (training images, "
                   "labels unused)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--synthetic", action="store_true",
                   help="pre-train on synthetic images instead of CIFAR-10")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy", choices=("numpy", "numba"))


def cli_run(args) -> int:
    config = ViTConfig.preset(args.preset)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.synthetic:
        x = synthetic_images(args.limit or 1024, config.image_size, args.seed)
        print(f"pre-training on {len(x)} synthetic images")
    else:
        from minivit.data import load_cifar10
        d = load_cifar10(args.data_dir, limit_train=args.limit, limit_test=0,
                         expected_counts=None if args.limit else (50000, 10000))
        x = d["x_train"]
        if config.image_size != x.shape[1]:
            from minivit.finetune import resize_images
            x = resize_images(x, config.image_size)
        print(f"pre-training on {len(x)} CIFAR-10 training images (labels unused)")
    pretrain(config, x, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
             weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
             seed=args.seed, backend=args.backend, out=args.out)
    print(f"wrote {Path(args.out) / 'checkpoint.npz'} and {Path(args.out) / 'mpp_head.npz'}")
    return 0
