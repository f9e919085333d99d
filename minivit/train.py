"""The training loop: schedule, evaluation, metrics log, atomic checkpoints, exact resume.

    minivit train --preset cifar10-tiny --epochs 30 --backend numba --out runs/tiny

Each epoch: a tqdm bar (loss, accuracy, lr, images/s), evaluation on the test split, one
line appended to ``metrics.jsonl``, and ``checkpoint.npz`` rewritten atomically (params,
optimizer state, step, the data position, the training settings, the history). Data order
and augmentation are functions of (seed, epoch, batch index) only, so ``--resume`` replays
exactly the batches an uninterrupted run would have seen: the final parameters are
bit-identical. SIGINT/SIGTERM finish the current step, write a checkpoint at that batch
and exit; a non-finite loss stops the run and keeps the last good checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ViTConfig
from .errors import CheckpointError, ConfigError, TrainingError


@dataclass
class TrainSettings:
    """Every knob of a training run (saved in the checkpoint; resume uses the saved ones).

    lr is the peak learning rate after ``warmup_epochs`` of linear warm-up; ``schedule``
    then decays it to ``min_lr`` ("cosine", "linear" or "constant"). weight_decay applies
    to dense kernels only (see :func:`minivit.optim.decays`). clip_norm: global gradient
    norm clipping (paper: 1.0; 0 disables).
    """

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
    flip: bool = True
    rand_augment: tuple | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    backend: str = "numba"
    dtype: str = "float32"
    seed: int = 0
    eval_batch_size: int = 500
    eval_every: int = 1
    # Exponential moving average of the weights, updated after every optimizer step:
    # θ̄ ← ema_decay·θ̄ + (1 − ema_decay)·θ (minivit.ema); evaluated each epoch beside the
    # raw weights (ema_test_acc in metrics.jsonl) and checkpointed (ema/ keys). 0 = off.
    ema_decay: float = 0.0

    def validate(self):
        """Raise ConfigError naming any setting out of range."""
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)
        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch size must be >= 1, got {self.batch_size}")
        need(self.optimizer in ("adamw", "sgd"), f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr,
             f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")
        need(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}")
        need(self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs,
             f"warmup epochs must lie in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        need(self.schedule in ("cosine", "linear", "constant"),
             f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        need(self.clip_norm >= 0, f"clip norm must be >= 0, got {self.clip_norm}")
        need(0 <= self.label_smoothing < 1, f"label smoothing must lie in [0, 1), got {self.label_smoothing}")
        need(self.crop_padding >= 0, f"crop padding must be >= 0, got {self.crop_padding}")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0")
        need(self.backend in ("numpy", "numba", "cuda"),
             f"unknown backend {self.backend!r}; choose numpy, numba or cuda")
        need(self.dtype in ("float32", "float64"), f"dtype must be float32 or float64, got {self.dtype!r}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an int >= 0, got {self.seed}")
        need(self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}")
        need(isinstance(self.eval_every, int) and self.eval_every >= 1,
             f"eval_every must be an int >= 1, got {self.eval_every}")
        need(not isinstance(self.ema_decay, bool) and isinstance(self.ema_decay, (int, float))
             and 0 <= self.ema_decay < 1,
             f"ema decay must lie in [0, 1) (0: off), got {self.ema_decay!r}")
        need(not (self.ema_decay and self.backend == "cuda"),
             "ema_decay is not supported on the cuda backend yet")

    @property
    def warmup(self) -> float:
        """Warm-up epochs actually used: ``warmup_epochs``, or by default 2 epochs (at
        most a fifth of the run, so a 1-epoch run still decays)."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return min(2.0, 0.2 * self.epochs)

    def to_dict(self):
        d = dataclasses.asdict(self)
        if d["rand_augment"] is not None:
            d["rand_augment"] = list(d["rand_augment"])
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        d = dict(d)
        if d.get("rand_augment") is not None:
            d["rand_augment"] = tuple(d["rand_augment"])
        return cls(**d)


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it after each step (a handler must not
    write files itself: it could interrupt a checkpoint write half-way)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:          # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _write_jsonl(path: Path, rows):
    """Rewrite metrics.jsonl atomically from the history (used at start and on resume)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_jsonl(path: Path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def train(model_config, *, data=None, data_dir=None, out_dir=None, resume=False,
          init_params=None, progress=True, limit_train=None, limit_test=None,
          settings: TrainSettings | None = None, log=print, stop_after_epochs=None,
          **overrides) -> dict:
    """Train a ViT. Returns a dict: model, history (per-epoch metrics), final test
    accuracy, checkpoint path, interrupted (signal number or None).

    model_config: ViTConfig or preset name. data: dict like ``load_cifar10`` returns
    (x_train (n, H, W, C) uint8, y_train (n,), x_test, y_test, classes); default: CIFAR-10
    from ``data_dir``. out_dir: where checkpoint.npz, metrics.jsonl and curves.png go
    (None: nothing is written and resume is impossible). resume: continue from
    out_dir/checkpoint.npz with its saved settings. init_params: host dict of starting
    weights (fine-tuning). settings / overrides: :class:`TrainSettings` fields.
    stop_after_epochs: end this call after that many epochs (the schedule still spans
    ``settings.epochs``; ``resume=True`` continues), for time-boxed sessions.
    """
    from .checkpoint import load_checkpoint, require_training_state, save_checkpoint
    from .data.augment import Augmenter
    from .data.batches import BatchLoader
    from .ema import EMA
    from .evaluate import evaluate
    from .model import ViT
    from .optim import SGD, AdamW, LRSchedule, clip_grad_norm

    config = ViTConfig.preset(model_config) if isinstance(model_config, str) else model_config
    s = settings or TrainSettings()
    if overrides:
        s = dataclasses.replace(s, **overrides)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.npz" if out else None

    state = None
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
        state = load_checkpoint(ckpt_path)
        require_training_state(state, ckpt_path)    # e.g. a pretrain checkpoint: named error
        if state["config"] != config:
            diff = [k for k, v in config.to_dict().items() if state["config"].to_dict()[k] != v]
            log(f"resume: using the checkpoint's model config (differs in: {', '.join(diff)})")
            config = state["config"]
        saved = TrainSettings.from_dict(state["meta"]["settings"])
        changed = [k for k, v in s.to_dict().items() if saved.to_dict()[k] != v]
        if changed and settings is not None or overrides:
            changed = [k for k in changed if k in overrides or settings is not None]
            if changed:
                log(f"resume: keeping the checkpoint's settings for {', '.join(changed)}")
        s = saved
    s.validate()
    if data is None:
        from .data import load_cifar10
        data = load_cifar10(data_dir, limit_train=limit_train, limit_test=limit_test)
    x_train, y_train = data["x_train"], np.asarray(data["y_train"])
    x_test, y_test = data["x_test"], np.asarray(data["y_test"])
    if x_train.shape[1:] != (config.image_size, config.image_size, config.channels):
        raise ConfigError(f"training images are {x_train.shape[1:]}, the model expects "
                          f"({config.image_size}, {config.image_size}, {config.channels})")
    if len(x_train) < s.batch_size:
        raise ConfigError(f"batch size {s.batch_size} is larger than the training set ({len(x_train)})")

    model = ViT(config, seed=s.seed, dtype=s.dtype, backend=s.backend)
    if init_params is not None:
        model.load_params(init_params)
    if s.optimizer == "adamw":
        opt = AdamW(model, s.lr, (s.beta1, s.beta2), weight_decay=s.weight_decay)
    else:
        opt = SGD(model, s.lr, s.momentum, weight_decay=s.weight_decay)
    ema = EMA(model, s.ema_decay) if s.ema_decay else None
    aug = Augmenter(crop_padding=s.crop_padding, flip=s.flip, rand_augment=s.rand_augment,
                    mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, mix_prob=s.mix_prob,
                    num_classes=config.num_classes)
    loader = BatchLoader(x_train, y_train, s.batch_size, shuffle=True, seed=s.seed,
                         transform=aug, drop_last=True, prefetch=2)
    spe = len(loader)
    sched = LRSchedule(s.lr, s.epochs * spe, int(round(s.warmup * spe)), s.schedule, s.min_lr)

    epoch, batch0, step, history, elapsed = 0, 0, 0, [], 0.0
    run = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
    if state is not None:
        model.load_params(state["params"])
        opt.load_state_dict(state["optim"])
        if ema is not None:
            if not state["ema"]:
                raise CheckpointError(f"{ckpt_path}: the run keeps a weight average "
                                      f"(ema_decay {s.ema_decay}) but the file holds none")
            ema.load_state_dict(state["ema"])
        m = state["meta"]
        epoch, batch0, step = m["epoch"], m["batch"], m["step"]
        history, elapsed, run = m["history"], m["elapsed"], m["running"]
        log(f"resumed from {ckpt_path}: epoch {epoch + 1}, batch {batch0}/{spe}, step {step}")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / "metrics.jsonl", history)

    def save(epoch_, batch_, running_):
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, model, opt, ema=ema, epoch=epoch_, batch=batch_, step=step,
                        settings=s.to_dict(), history=history, elapsed=elapsed,
                        running=running_, seed=s.seed)

    interrupted = None
    start_epoch = epoch
    tqdm = _tqdm(progress)
    with _StopFlag() as stop:
        while epoch < s.epochs:
            loader.set_epoch(epoch, batch0)
            bar = tqdm(total=spe, initial=batch0, desc=f"epoch {epoch + 1}/{s.epochs}",
                       unit="batch", leave=True, dynamic_ncols=True, file=sys.stderr)
            t_epoch = time.perf_counter()
            b = batch0
            for xb, yb in loader:
                lr = sched(step)
                # (seed, step) keys this step's dropout / stochastic-depth masks
                loss, logits = model.loss_and_grads(xb, yb, s.label_smoothing,
                                                    rng_key=(s.seed, step))
                if not math.isfinite(loss):
                    bar.close()
                    raise TrainingError(
                        f"loss became {loss} at epoch {epoch + 1}, batch {b + 1} (step {step}, "
                        f"lr {lr:.3g}); stopping. The last good checkpoint is kept"
                        + (f" at {ckpt_path}" if ckpt_path else "") +
                        "; try a lower --lr or a longer --warmup-epochs")
                if s.clip_norm:
                    clip_grad_norm(model.be, model.grads, s.clip_norm)
                opt.step(lr)
                if ema is not None:
                    ema.update()
                step += 1
                b += 1
                hard = yb if yb.ndim == 1 else np.argmax(yb, axis=1)
                run["loss_sum"] += loss * len(yb)
                run["correct"] += int((np.argmax(logits, axis=1) == hard).sum())
                run["seen"] += len(yb)
                dt = run["time"] + time.perf_counter() - t_epoch
                bar.set_postfix(loss=f"{run['loss_sum'] / run['seen']:.3f}",
                                acc=f"{run['correct'] / run['seen']:.3f}", lr=f"{lr:.2e}",
                                img_s=f"{run['seen'] / max(dt, 1e-9):.0f}")
                bar.update(1)
                if stop.signum is not None:
                    break
            bar.close()
            run["time"] += time.perf_counter() - t_epoch
            if stop.signum is not None and b < spe:
                save(epoch, b, run)
                interrupted = stop.signum
                log(f"interrupted by signal {stop.signum} at epoch {epoch + 1}, batch {b}/{spe}; "
                    f"checkpoint written" + (f" to {ckpt_path}; continue with --resume"
                                             if ckpt_path else ""))
                break
            # end of epoch: evaluate, log, checkpoint
            # Evaluating costs a forward pass over the test set; a time-boxed run may skip
            # it on some epochs (the last epoch is always evaluated).
            t_eval = time.perf_counter()
            if (epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs:
                ev = evaluate(model, x_test, y_test, s.eval_batch_size)
                if ema is not None:
                    with ema.swapped():
                        ev_ema = evaluate(model, x_test, y_test, s.eval_batch_size)
            else:
                ev = ev_ema = {"loss": None, "acc": None}
            eval_time = time.perf_counter() - t_eval
            elapsed += run["time"] + eval_time
            row = {"epoch": epoch + 1, "step": step, "lr": sched(step - 1),
                   "train_loss": run["loss_sum"] / max(run["seen"], 1),
                   "train_acc": run["correct"] / max(run["seen"], 1),
                   "test_loss": ev["loss"], "test_acc": ev["acc"],
                   "epoch_time_s": run["time"], "eval_time_s": eval_time,
                   "images_per_s": run["seen"] / max(run["time"], 1e-9),
                   "elapsed_s": elapsed,
                   # cumulative training compute: matmul + attention FLOPs, forward +
                   # backward = 3 × forward (ViTConfig.train_flops_per_image)
                   "train_flops": step * s.batch_size * config.train_flops_per_image()}
            if ema is not None:
                row["ema_test_loss"], row["ema_test_acc"] = ev_ema["loss"], ev_ema["acc"]
            history.append(row)
            log(f"epoch {epoch + 1}/{s.epochs}: train loss {row['train_loss']:.4f} "
                f"acc {100 * row['train_acc']:.2f}% | "
                + (f"test loss {ev['loss']:.4f} acc {100 * ev['acc']:.2f}% | "
                   if ev["acc"] is not None else "")
                + (f"EMA acc {100 * ev_ema['acc']:.2f}% | "
                   if ema is not None and ev_ema["acc"] is not None else "")
                + f"{row['images_per_s']:.0f} img/s | {elapsed / 60:.1f} min")
            epoch, batch0 = epoch + 1, 0
            run = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
            save(epoch, 0, run)
            if out:
                _append_jsonl(out / "metrics.jsonl", row)
            if stop.signum is not None:
                interrupted = stop.signum
                log(f"interrupted by signal {stop.signum} after epoch {epoch}; checkpoint written"
                    + (f" to {ckpt_path}; continue with --resume" if ckpt_path else ""))
                break
            if stop_after_epochs is not None and epoch >= start_epoch + stop_after_epochs:
                break
    if out and history and interrupted is None and epoch == s.epochs:
        from .plots import plot_training_curves
        plot_training_curves(history, out / "curves.png")
    final = history[-1]["test_acc"] if history else None   # the last epoch is always evaluated
    return {"model": model, "ema": ema, "history": history, "test_acc": final,
            "checkpoint": ckpt_path, "interrupted": interrupted, "settings": s}


def _tqdm(enabled):
    if enabled:
        from tqdm.auto import tqdm
        return tqdm

    class _Quiet:
        def __init__(self, *a, **k):
            pass

        def update(self, *a):
            pass

        def set_postfix(self, **k):
            pass

        def close(self):
            pass
    return _Quiet


# ---------------------------------------------------------------------- CLI
_MODEL_FLAGS = ("image_size", "patch_size", "stride", "dim", "depth", "heads", "mlp_dim",
                "num_classes", "head_type", "gelu", "pos_embed", "classifier", "dropout",
                "drop_path")
_MODEL_FLAG_TYPES = {"head_type": str, "gelu": str, "pos_embed": str, "classifier": str,
                     "dropout": float, "drop_path": float}
_MODEL_FLAG_HELP = {
    "pos_embed": "learned-1d | learned-2d | sincos2d (fixed, no parameters) | none",
    "classifier": "token (class token, Eq. 4) | gap (global average pooling, no class token)",
    "dropout": "dropout rate after the embedding, attention projection and MLP denses",
    "drop_path": "stochastic depth: largest per-block rate (linear in depth)",
}


def configure_parser(p):
    from .config import PRESETS
    p.add_argument("--preset", default="cifar10-tiny", help=f"one of: {', '.join(PRESETS)}")
    m = p.add_argument_group("model (override the preset)")
    for name in _MODEL_FLAGS:
        m.add_argument("--" + name.replace("_", "-"), type=_MODEL_FLAG_TYPES.get(name, int),
                       default=None, help=_MODEL_FLAG_HELP.get(name))
    d = TrainSettings()
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--optimizer", choices=["adamw", "sgd"], default=d.optimizer)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--min-lr", type=float, default=d.min_lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--momentum", type=float, default=d.momentum)
    t.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up length (default: 2, at most a fifth of the run)")
    t.add_argument("--schedule", choices=["cosine", "linear", "constant"], default=d.schedule)
    t.add_argument("--clip-norm", type=float, default=d.clip_norm)
    t.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    t.add_argument("--crop-padding", type=int, default=d.crop_padding)
    t.add_argument("--no-flip", action="store_true")
    t.add_argument("--rand-augment", default=None, metavar="N,M",
                   help="RandAugment with N ops of magnitude M, e.g. 2,9")
    t.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    t.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    t.add_argument("--mix-prob", type=float, default=d.mix_prob)
    t.add_argument("--backend", default=d.backend, help="numpy | numba | cuda")
    t.add_argument("--dtype", default=d.dtype)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate on the test set every K epochs (and after the last)")
    t.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="exponential moving average of the weights, e.g. 0.999 (0: off)")
    io = p.add_argument_group("data and output")
    io.add_argument("--data-dir", default=None,
                    help="CIFAR-10 directory or archive (default: $MINIVIT_DATA_DIR, else the "
                         "user cache; downloaded on first use)")
    io.add_argument("--synthetic", action="store_true",
                    help="train on a small synthetic set instead of CIFAR-10 (no data needed)")
    io.add_argument("--limit-train", type=int, default=None)
    io.add_argument("--limit-test", type=int, default=None)
    io.add_argument("--out", default="runs/latest", help="output directory")
    io.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    io.add_argument("--no-progress", action="store_true")


def _parse_rand_augment(text):
    if text is None:
        return None
    try:
        n, mag = text.split(",")
        return (int(n), float(mag))
    except ValueError:
        raise ConfigError(f"--rand-augment must be N,M (e.g. 2,9), got {text!r}") from None


def cli_run(args):
    overrides = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    config = ViTConfig.preset(args.preset, **overrides)
    for name in ("limit_train", "limit_test"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                      lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
                      momentum=args.momentum, warmup_epochs=args.warmup_epochs,
                      schedule=args.schedule, clip_norm=args.clip_norm,
                      label_smoothing=args.label_smoothing, crop_padding=args.crop_padding,
                      flip=not args.no_flip, rand_augment=_parse_rand_augment(args.rand_augment),
                      mixup=args.mixup, cutmix=args.cutmix, mix_prob=args.mix_prob,
                      backend=args.backend, dtype=args.dtype, seed=args.seed,
                      eval_every=args.eval_every, ema_decay=args.ema_decay)
    s.validate()
    data = None
    if args.synthetic:
        from .data.synthetic import make_synthetic
        data = make_synthetic(n_train=args.limit_train or 1024, n_test=args.limit_test or 256,
                              image_size=config.image_size, num_classes=config.num_classes,
                              seed=args.seed)
    print(f"model: {args.preset} ({config.num_params():,} parameters, N={config.num_patches} "
          f"patches of {config.patch_size}x{config.patch_size}) on the {s.backend} backend")
    r = train(config, data=data, data_dir=args.data_dir, out_dir=args.out, resume=args.resume,
              progress=not args.no_progress, limit_train=args.limit_train,
              limit_test=args.limit_test, settings=s)
    if r["interrupted"] is not None:
        return 128 + int(r["interrupted"])
    if r["test_acc"] is not None:
        print(f"final test accuracy: {100 * r['test_acc']:.2f}%  (outputs in {args.out}/)")
    return 0
