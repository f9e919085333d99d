"""The training loop — one for every objective: schedule, evaluation, metrics log, atomic
checkpoints, exact resume, signals, progress.

    minivit train --preset cifar10-tiny --epochs 30 --backend numba --out runs/tiny

What is optimised is an objective object (:mod:`minivit.objectives`): classification
(``minivit train``, and ``minivit finetune`` from adapted weights) or masked patch
prediction (``minivit pretrain``). Each epoch: a tqdm bar (loss, accuracy, lr, images/s),
evaluation on the test split, one line appended to ``metrics.jsonl``, and
``checkpoint.npz`` rewritten atomically (params, optimizer state, step, the data
position, every run-defining setting, the history).

Resume continues exactly the run that was started: data order and augmentation are
functions of (seed, epoch, batch index) only, and every setting that defines the run —
model, training settings, which data and how much of it, the objective's settings — comes
from the checkpoint; a setting given again must agree, or the resume is refused naming
the difference. Only ``backend`` and ``eval_batch_size`` (how, not what) may change,
and ``full_token_lr`` while the full-token epochs have not begun (it acts on none of the
steps already taken: a copy of a run stopped before them can try several final phases).
The final parameters of a resumed run are bit-identical to an uninterrupted one with the
same settings.

Extending a run: ``--resume --epochs E`` with E larger than the run's epochs makes it an
E-epoch run. The steps already taken keep the learning rates they had; from the next
step on the rate follows the E-epoch schedule (same warm-up, decay spread over E
epochs), so after a finished run it rises again from ``min_lr`` to where an E-epoch run
would be. The result is not the same as an E-epoch run from scratch; metrics.jsonl shows
where the extension began ("extended_from" in the checkpoint). A shorter E is refused.

A directory that already holds a run is never overwritten silently: a fresh run there
needs ``--overwrite``. SIGINT/SIGTERM finish the current step, write a checkpoint at that
batch and stop (the CLI exits 128 + signal; ``train()`` raises
:class:`~minivit.errors.TrainingInterrupted`, a KeyboardInterrupt). A non-finite loss
stops the run and keeps the last good checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import distributed, models, provenance
from .backends.conv_ops import get_conv_ops
from .config import ViTConfig
from .errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from .objectives import Classification, Objective
from .settings import DataSettings, TrainSettings
from .data.sources import checkpoint_meta

__all__ = ["train", "TrainSettings", "DataSettings", "load_data"]


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


# ---------------------------------------------------------------------- data
def load_data(config: ViTConfig, ds: DataSettings, data_dir=None, seed=0, log=print) -> dict:
    """The images a run defined by ``ds`` trains on, at the model's resolution.

    Returns a dict like ``load_cifar10``'s (x_train (n, H, W, C) uint8, y_train (n,),
    x_test, y_test, classes) plus "source": "cifar10" or "synthetic". Images whose size
    differs from ``config.image_size`` are resized bilinearly (fine-tuning at a higher
    resolution, paper §3.2), which is said in the log.
    """
    if ds.synthetic:
        from .data.synthetic import make_synthetic
        data = make_synthetic(n_train=ds.limit_train or 1024, n_test=ds.limit_test or 256,
                              image_size=config.image_size, num_classes=config.num_classes,
                              seed=seed)
        return dict(data, source="synthetic")
    if ds.data_folder:
        from .data.folder import load_folder_dataset
        return load_folder_dataset(ds.data_folder, config.image_size, seed=seed,
                                   limit_train=ds.limit_train, limit_test=ds.limit_test)
    from .data import load_cifar10
    limited = ds.limit_train is not None or ds.limit_test is not None
    data = dict(load_cifar10(data_dir, limit_train=ds.limit_train, limit_test=ds.limit_test,
                             expected_counts=None if limited else (50000, 10000)),
                source="cifar10")
    return _fit_images(data, config, log)


def _fit_images(data, config, log):
    from .ops.resample import resize_images
    size = data["x_train"].shape[1]
    if size != config.image_size and data["x_train"].ndim == 4:
        log(f"images resized bilinearly from {size}x{size} to the model's "
            f"{config.image_size}x{config.image_size}")
        data = dict(data, x_train=resize_images(data["x_train"], config.image_size),
                    x_test=resize_images(data["x_test"], config.image_size))
    return data


def _data_fingerprint(data) -> dict:
    """What identifies the images of a run (checked again on resume)."""
    source = data.get("source", "user")
    if isinstance(source, dict):            # an image folder: its record goes in the meta
        source = source.get("kind", "user")
    return {"n_train": int(len(data["x_train"])), "n_test": int(len(data["x_test"])),
            "source": source}


# ---------------------------------------------------------------------- run setup
def _differences(given: dict, saved: dict, ignore=()) -> list[str]:
    return [f"--{k.replace('_', '-')} (run: {saved.get(k)!r}, now: {v!r})"
            for k, v in given.items() if k not in ignore and saved.get(k) != v]


def _refuse_existing(ckpt_path: Path):
    """A fresh run must not replace a run in the same directory without being asked."""
    from .checkpoint import load_checkpoint
    try:
        meta = load_checkpoint(ckpt_path)["meta"]
        total = (meta.get("settings") or {}).get("epochs")
        what = (f"a finished {total}-epoch run" if meta.get("epoch") == total and
                not meta.get("batch") else f"a run at epoch {meta.get('epoch')}"
                + (f" of {total}" if total else ""))
    except CheckpointError:
        what = "a checkpoint.npz"
    raise ConfigError(f"{ckpt_path.parent} already holds {what}; continue it with --resume "
                      f"(resume=True), replace it with --overwrite (overwrite=True), or "
                      f"choose another --out")


class _Run:
    """Everything that defines a run, settled before any data is read: the config, the
    training/data/objective settings, and the checkpoint state when resuming."""

    def __init__(self, config, s, ds, objective, out, resume, overwrite, given, log):
        self.objective, self.out, self.log = objective, out, log
        self.ckpt = out / "checkpoint.npz" if out else None
        self.state, self.extended_from = None, []
        # bad values first: they need no files at all (on resume the LATE ones are checked
        # with the saved run's full_token_epochs, once it is read)
        (s.replace(**dict.fromkeys(TrainSettings.LATE)) if resume else s).validate()
        ds.validate()
        if out is not None and out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        if resume:
            config, s, ds = self._from_checkpoint(config, s, ds, given)
        elif self.ckpt is not None and self.ckpt.exists() and not overwrite:
            _refuse_existing(self.ckpt)
        if config is None:
            config = ViTConfig.preset("cifar10-tiny")
        if models.model_kind(config) != "vit":
            get_conv_ops(s.backend)         # a conv model on --backend cuda: one line, now
        self.config, self.s, self.ds = config, s.validate(), ds.validate()
        if s.full_token_epochs and not getattr(config, "patch_keep", 1.0) < 1:
            raise ConfigError(f"full_token_epochs={s.full_token_epochs} switches patch dropout "
                              f"off for the last epochs, but this model has none (its "
                              f"patch_keep is 1; e.g. --patch-keep 0.5)")
        if objective.settings is not None:
            objective.settings.validate()

    def _from_checkpoint(self, config, s, ds, given):
        """The saved run, with the given settings checked against it (see module doc)."""
        from .checkpoint import load_checkpoint, require_training_state
        if self.ckpt is None or not self.ckpt.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt}")
        state = load_checkpoint(self.ckpt)
        require_training_state(state, self.ckpt)   # e.g. a bare model: a named error
        meta = state["meta"]
        kind = meta.get("objective", "classification")
        if kind != self.objective.name:
            raise ConfigError(f"--resume: {self.ckpt} is a {kind} run; this command trains "
                              f"{self.objective.name}")
        diff = []
        saved_kind = models.model_kind(state["config"])
        if isinstance(config, dict):        # typed model flags, or a ViT preset's fields
            alien = sorted(set(config) - set(state["config"].to_dict()))
            if alien:
                raise ConfigError(f"--resume: {self.ckpt} trains a {saved_kind} model: "
                                  f"{', '.join('--' + k.replace('_', '-') for k in alien)} "
                                  f"only applies to a ViT; leave the model flags out")
        elif config is not None and models.model_kind(config) != saved_kind:
            raise ConfigError(f"--resume: {self.ckpt} trains a {saved_kind} model, not a "
                              f"{models.model_kind(config)}; leave --preset out, or choose "
                              f"another --out")
        if config is not None:              # a config, or the fields a user typed
            fields = config if isinstance(config, dict) else config.to_dict()
            diff += _differences(fields, state["config"].to_dict())
        saved = TrainSettings.from_dict(meta["settings"])
        diff += _differences(given.get("settings", {}), saved.to_dict(),
                             ignore=("epochs",) + TrainSettings.HOW + TrainSettings.LATE)
        saved_ds = DataSettings.from_dict(meta.get("data_settings", {}))
        diff += _differences(given.get("data", {}), saved_ds.to_dict())
        obj = self.objective
        if obj.settings is not None:
            saved_obj = type(obj.settings).from_dict(meta.get("objective_settings", {}))
            diff += _differences(given.get("objective", {}), saved_obj.to_dict())
            obj.settings = saved_obj
        if diff:
            raise ConfigError(f"--resume: {self.ckpt} was started with other settings: "
                              f"{'; '.join(diff)}. Resume continues the run as it was "
                              f"started: leave these out, or start a new run with another "
                              f"--out")
        how = {k: v for k, v in given.get("settings", {}).items() if k in TrainSettings.HOW}
        late = {k: v for k, v in given.get("settings", {}).items()
                if k in TrainSettings.LATE and v != getattr(saved, k)}
        began = meta["epoch"] + (meta["batch"] > 0) > saved.full_token_start
        if late and began:
            raise ConfigError(f"--resume: {self.ckpt} was started with other settings: "
                              f"{'; '.join(_differences(late, saved.to_dict()))}, and its "
                              f"full-token epochs began at epoch {saved.full_token_start + 1}, "
                              f"so they can no longer change")
        s = saved.replace(**how, **late)
        for k, v in late.items():
            self.log(f"resume: {k} {getattr(saved, k)} → {v} (it acts from epoch "
                     f"{saved.full_token_start + 1} on, which has not begun)")
        self.extended_from = list(meta.get("extended_from", []))
        epochs = given.get("settings", {}).get("epochs", saved.epochs)
        if epochs < saved.epochs:
            raise ConfigError(f"--resume: --epochs {epochs} is shorter than the run's "
                              f"{saved.epochs} epochs (a run can be extended, not shortened)")
        if epochs > saved.epochs and began:
            # those steps ran on every token; the longer run would count them as dropped
            raise ConfigError(f"--resume: the run's last {saved.full_token_epochs} "
                              f"full_token_epochs began at epoch {saved.full_token_start + 1}, "
                              f"so it can no longer be extended")
        if epochs > saved.epochs:
            # the warm-up stays what it was; the decay is spread over the new length
            s = s.replace(epochs=epochs, warmup_epochs=saved.warmup)
            self.extended_from.append(saved.epochs)
            self.log(f"resume: extending the run from {saved.epochs} to {epochs} epochs; from "
                     f"the next step on the learning rate follows the {epochs}-epoch schedule")
        self.state = state
        return state["config"], s, saved_ds


# ---------------------------------------------------------------------- the loop
class _Trainer:
    """One run of the loop. ``run()`` plays epochs until the end, a signal, or
    ``stop_after_epochs``; each piece below is one stage of an epoch."""

    def __init__(self, run: _Run, data, init_params, progress, stop_after_epochs):
        from .data.batches import BatchLoader
        from .optim import SGD, AdamW, LRSchedule
        self.r, s, obj = run, run.s, run.objective
        self.comm = distributed.current()
        self.s, self.obj, self.log = s, obj, run.log
        self.x_test, self.y_test = data["x_test"], np.asarray(data["y_test"])
        self.model = obj.build_model(run.config, s)
        if init_params is not None and run.state is None:
            obj.backbone(self.model).load_params(init_params)
        self.ema = None                 # the weight average starts at the initial weights
        if s.ema_decay:
            from .ema import EMA
            self.ema = EMA(obj.backbone(self.model), s.ema_decay)
        if s.optimizer == "adamw":
            self.opt = AdamW(self.model, s.lr, (s.beta1, s.beta2), weight_decay=s.weight_decay)
        else:
            self.opt = SGD(self.model, s.lr, s.momentum, weight_decay=s.weight_decay)
        self.loader = BatchLoader(data["x_train"], np.asarray(data["y_train"]), s.batch_size,
                                  shuffle=True, seed=s.seed, transform=obj.transform(run.config, s),
                                  drop_last=True, prefetch=2)
        self.spe = len(self.loader)
        self.sched = LRSchedule.of_run(s, self.spe)
        self.tqdm = _tqdm(progress)
        self.stop_after_epochs = stop_after_epochs
        self.data_info = _data_fingerprint(data)
        self.data_meta = checkpoint_meta(data)  # class names, an image folder's record
        self.epoch, self.batch0, self.step, self.history, self.elapsed = 0, 0, 0, [], 0.0
        self.running = _fresh_running()
        # on every metrics line: the code that trained it; rank 0 alone writes those lines,
        # so the other MPI ranks do not each start git
        self.commit = provenance.code_commit() if self.comm.is_root else None
        if run.state is not None:
            self._restore(run.state)
        if run.out:                     # [mpi hook 3] rank 0 alone writes the outputs
            self.comm.on_root(self._prepare_out, where="preparing the output directory")

    def _prepare_out(self):
        out = self.r.out
        out.mkdir(parents=True, exist_ok=True)
        if self.r.state is None:
            (out / "curves.png").unlink(missing_ok=True)     # of a replaced run
        _write_jsonl(out / "metrics.jsonl", self.history)

    def _restore(self, state):
        m = state["meta"]
        saved = m.get("data", {})
        for k, split in (("n_train", "training"), ("n_test", "test")):
            if k in saved and saved[k] != self.data_info[k]:
                raise ConfigError(f"--resume: the run was started on {saved[k]} {split} "
                                  f"images, this data has {self.data_info[k]}")
        self.obj.backbone(self.model).load_params(state["params"])
        self.obj.load_extra_state(self.model, state.get("extra", {}))
        self.opt.load_state_dict(state["optim"])
        if self.ema is not None:
            if not state.get("ema"):
                raise CheckpointError(f"{self.r.ckpt}: the run keeps a weight average "
                                      f"(ema_decay {self.s.ema_decay}) but the file holds none")
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.batch0, self.step = m["epoch"], m["batch"], m["step"]
        self.history, self.elapsed = m["history"], m["elapsed"]
        self.running = {**_fresh_running(), "images": m["running"]["seen"], **m["running"]}
        self.log(f"resumed from {self.r.ckpt}: epoch {self.epoch + 1}, batch "
                 f"{self.batch0}/{self.spe}, step {self.step}")

    def header(self):
        c, s, d = self.r.config, self.s, self.data_info
        where = f"; output in {self.r.out}/" if self.r.out else ""
        kind = models.model_kind(c)
        if kind == "vit":
            shape = (f"D={c.dim}, depth {c.depth}, {c.heads} heads, N={c.num_patches} "
                     f"patches of {c.patch_size}x{c.patch_size}")
        else:                               # the conv trunk, then (hybrid) the encoder
            units = (f"{sum(c.depths)} residual blocks" if c.trunk == "resnet" else
                     f"{len(c.pool_units())} convs, {len(c.widths)} max-pools")
            shape = f"{kind}: conv trunk widths {'/'.join(map(str, c.widths))}, {units}"
            if kind == "hybrid":
                shape += (f"; D={c.dim}, depth {c.depth}, {c.heads} heads, "
                          f"N={c.num_patches} patches of 1x1")
        if kind != "resnet" and c.classifier == "gap":      # Appendix D.3: no class token
            shape += ", GAP head"
        self.log(f"model: {c.num_params():,} parameters ({shape}) on the {s.backend} backend")
        self.log(f"{self.obj.describe()} on {d['n_train']:,} {d['source']} training images "
                 f"({d['n_test']:,} test), {s.epochs} epoch{'s' * (s.epochs != 1)} of "
                 f"{self.spe} steps{where}")

    # ------------------------------------------------------------------ one run
    def run(self) -> dict:
        start_epoch, interrupted = self.epoch, None
        with _StopFlag() as stop:
            while self.epoch < self.s.epochs:
                b = self._train_epoch(stop)
                if stop.signum is not None and b < self.spe:
                    interrupted = self._interrupt(stop.signum, b)
                    break
                self._end_epoch()
                # [mpi hook 5] a signal any rank got after the epoch's last step
                stop.signum = self.comm.agree_signal(stop.signum)
                if stop.signum is not None:
                    interrupted = self._interrupt(stop.signum, 0)
                    break
                if (self.stop_after_epochs is not None and self.epoch < self.s.epochs
                        and self.epoch >= start_epoch + self.stop_after_epochs):
                    self.log(f"stopped after epoch {self.epoch} of {self.s.epochs}"
                             + (f"; checkpoint in {self.r.ckpt}, continue with --resume"
                                if self.r.ckpt else ""))
                    break
        out = self.r.out
        if out and self.history and interrupted is None and self.epoch == self.s.epochs:
            from .plots import plot_training_curves
            nan = float("nan")                  # an objective without training accuracy
            self.comm.on_root(plot_training_curves,             # [mpi hook 7]
                              [dict(h, train_acc=nan if h["train_acc"] is None
                                    else h["train_acc"]) for h in self.history],
                              out / "curves.png", where="plotting the training curves")
        final = self.history[-1]["test_acc"] if self.history else None
        result = {"model": self.model, "ema": self.ema, "history": self.history, "test_acc": final,
                  "checkpoint": self.r.ckpt, "interrupted": interrupted, "settings": self.s,
                  "data_source": self.data_info["source"], "objective": self.obj.name}
        if interrupted is not None:
            where = (f"; checkpoint written to {self.r.ckpt}; continue with "
                     f"train(..., resume=True) or --resume" if self.r.ckpt else "")
            raise TrainingInterrupted(f"interrupted by signal {interrupted} at epoch "
                                      f"{self.epoch + 1}{where}", signum=interrupted,
                                      epoch=self.epoch, checkpoint=self.r.ckpt, result=result)
        return result

    def _train_epoch(self, stop) -> int:
        """Steps from the saved batch to the end of the epoch (or a signal); returns the
        index of the next batch."""
        self.loader.set_epoch(self.epoch, self.batch0)
        K = self.s.full_token_epochs
        if K:                           # the last K epochs: every patch token (settings.py)
            self.model.full_tokens = self.epoch >= self.s.full_token_start
            if self.epoch == self.s.full_token_start and self.batch0 == 0:
                self.log(f"epoch {self.epoch + 1}: patch dropout off for the last {K} "
                         f"epoch{'s' * (K != 1)} (every patch token)")
        bar = self.tqdm(total=self.spe, initial=self.batch0, unit="batch", leave=True,
                        desc=f"epoch {self.epoch + 1}/{self.s.epochs}", dynamic_ncols=True,
                        file=sys.stderr)
        t0, b = time.perf_counter(), self.batch0
        try:
            for xb, yb in self.loader:
                lr, signum = self._step(xb, yb, b, stop.signum)
                b += 1
                self._show(bar, lr, t0)
                if signum is not None:          # any rank's signal: all stop here
                    stop.signum = signum
                    break
        finally:
            bar.close()
        self.running["time"] += time.perf_counter() - t0
        return b

    def _step(self, xb, yb, b, signum):
        """One optimizer step on the global batch xb (B, H, W, C). Returns (lr, a stop
        signal received by any rank or None)."""
        from .optim import clip_grad_norm
        s, run, comm = self.s, self.running, self.comm
        lr = self.sched(self.step)
        # [mpi hook 5] this rank's shard; the ranks agree that none failed; the gradients
        # are averaged (clipping then sees the global norm); the statistics are global.
        # (seed, step) and the shard's first row in the global batch key the dropout /
        # stochastic-depth masks, per image: K ranks draw exactly the masks of one process.
        with comm.guard(f"epoch {self.epoch + 1}, batch {b + 1}", step=self.step):
            loss, correct, n = self.obj.step(self.model, *comm.shard(xb, yb), s,
                                             rng_key=(s.seed, self.step),
                                             first_row=comm.shard_start(len(xb)))
        comm.allreduce_grads(self.model.be, self.model.grads)
        loss, correct, n, signum = comm.step_totals(loss, correct, n, signum)
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss became {loss} at epoch {self.epoch + 1}, batch {b + 1} (step "
                f"{self.step}, lr {lr:.3g}); stopping. The last good checkpoint is kept"
                + (f" at {self.r.ckpt}" if self.r.ckpt else "")
                + "; try a lower --lr or a longer --warmup-epochs")
        if s.clip_norm:
            clip_grad_norm(self.model.be, self.model.grads, s.clip_norm)
        self.opt.step(lr)
        if self.ema is not None:        # θ̄ ← β·θ̄ + (1 − β)·θ, after the step (minivit.ema)
            self.ema.update()
        self.step += 1
        run["loss_sum"] += loss * n
        run["correct"] += correct or 0
        run["seen"] += n
        run["images"] += len(xb)
        return lr, signum

    def _show(self, bar, lr, t0):
        run = self.running
        dt = run["time"] + time.perf_counter() - t0
        post = {"loss": f"{run['loss_sum'] / run['seen']:.3f}"}
        if run["correct"]:
            post["acc"] = f"{run['correct'] / run['seen']:.3f}"
        bar.set_postfix(**post, lr=f"{lr:.2e}", img_s=f"{run['images'] / max(dt, 1e-9):.0f}")
        bar.update(1)

    def _end_epoch(self):
        """Evaluate (every ``eval_every`` epochs and after the last), log, checkpoint."""
        s, run = self.s, self.running
        t_eval = time.perf_counter()
        none = {"loss": None, "acc": None}
        ev = ev_ema = none
        if ((self.epoch + 1) % s.eval_every == 0 or self.epoch + 1 == s.epochs) \
                and len(self.y_test):
            ev = self._evaluate()
            if self.ema is not None:    # the same evaluation with the averaged weights
                with self.ema.swapped():
                    ev_ema = self._evaluate()
        eval_time = time.perf_counter() - t_eval
        self.elapsed += run["time"] + eval_time
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.sched(self.step - 1),
               "train_loss": run["loss_sum"] / max(run["seen"], 1),
               "train_acc": (run["correct"] / max(run["seen"], 1)
                             if self.obj.train_accuracy else None),
               "test_loss": ev["loss"], "test_acc": ev["acc"],
               "epoch_time_s": run["time"], "eval_time_s": eval_time,
               "images_per_s": run["images"] / max(run["time"], 1e-9),
               "elapsed_s": self.elapsed,
               # cumulative training compute: matmul + attention FLOPs of forward and
               # backward, 3 × forward (ViTConfig.train_flops_per_image)
               "train_flops": self._train_flops(), "commit": self.commit}
        if self.ema is not None:
            row["ema_test_loss"], row["ema_test_acc"] = ev_ema["loss"], ev_ema["acc"]
        self.history.append(row)
        self.log(f"epoch {self.epoch + 1}/{s.epochs}: train loss {row['train_loss']:.4f} "
                 + (f"acc {100 * row['train_acc']:.2f}% " if row["train_acc"] is not None
                    else "") + "| "
                 + (f"test loss {ev['loss']:.4f} acc {100 * ev['acc']:.2f}% | "
                    if ev["acc"] is not None else "")
                 + (f"EMA acc {100 * ev_ema['acc']:.2f}% | " if ev_ema["acc"] is not None
                    else "")
                 + f"{row['images_per_s']:.0f} img/s | {self.elapsed / 60:.1f} min")
        self.epoch, self.batch0, self.running = self.epoch + 1, 0, _fresh_running()
        self._save(self.epoch, 0)
        if self.r.out:                                          # [mpi hook 7]
            self.comm.on_root(_append_jsonl, self.r.out / "metrics.jsonl", row)

    def _train_flops(self) -> int:
        """Training FLOPs of the steps so far; the steps of the last ``full_token_epochs``
        epochs count every patch token."""
        s = self.s
        full_from = s.full_token_start * self.spe                   # first full-token step
        return models.train_flops(self.r.config, self.step * s.batch_size,
                                  max(0, self.step - full_from) * s.batch_size)

    def _evaluate(self) -> dict:
        """{"loss", "acc"} of the model's current weights on the test split, each MPI rank
        on a slice of it."""
        return self.comm.evaluate(self.obj.evaluate, self.model, self.x_test,  # [mpi hook 6]
                                  self.y_test, self.s)

    def _interrupt(self, signum, b) -> int:
        if b:
            self._save(self.epoch, b)
        at = f"at epoch {self.epoch + 1}, batch {b}/{self.spe}" if b else \
            f"after epoch {self.epoch}"
        self.log(f"interrupted by signal {signum} {at}; checkpoint written"
                 + (f" to {self.r.ckpt}; continue with --resume" if self.r.ckpt else ""))
        return signum

    def _save(self, epoch, batch):
        if self.r.ckpt is None:
            return
        from .checkpoint import save_checkpoint
        obj, s = self.obj, self.s
        meta = dict(epoch=epoch, batch=batch, step=self.step, settings=s.to_dict(),
                    history=self.history, elapsed=self.elapsed, running=self.running,
                    seed=s.seed, objective=obj.name, data_settings=self.r.ds.to_dict(),
                    data=self.data_info, extended_from=self.r.extended_from)
        if obj.settings is not None:
            meta["objective_settings"] = obj.settings.to_dict()
        self.comm.on_root(save_checkpoint, self.r.ckpt, obj.backbone(self.model),  # [mpi hook 4]
                          self.opt, ema=self.ema, extra=obj.extra_state(self.model), **meta,
                          **self.data_meta, **obj.checkpoint_meta(),
                          where="writing the checkpoint")


def _fresh_running():
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "images": 0, "time": 0.0}


def train(model_config=None, *, data=None, data_dir=None, out_dir=None, resume=False,
          overwrite=False, init_params=None, progress=True, limit_train=None,
          limit_test=None, synthetic=False, data_folder=None,
          settings: TrainSettings | None = None,
          objective: Objective | None = None, log=print, stop_after_epochs=None,
          **overrides) -> dict:
    """Train a ViT with ``objective`` (default: classification). Returns a dict: model,
    history (per-epoch metrics), test_acc (last epoch), checkpoint path, settings,
    data_source ("cifar10", "synthetic" or "user"), interrupted (None).

    model_config: ViTConfig (or ResNetConfig / HybridConfig) or any family's preset name
    (:func:`minivit.models.all_presets`; None: cifar10-tiny, or the checkpoint's when
    resuming), or a dict of some ViTConfig fields (over cifar10-tiny; on resume only
    these are checked against the run). data: dict like ``load_cifar10`` returns
    (x_train (n, H, W, C) uint8, y_train (n,), x_test, y_test, classes); default:
    CIFAR-10 from ``data_dir`` (first ``limit_train`` / ``limit_test`` images), or a
    synthetic set when ``synthetic``, or the user's folder-per-class images in
    ``data_folder``; images of another size are resized to the model's.
    out_dir: where checkpoint.npz, metrics.jsonl and curves.png go (None: nothing is
    written and resume is impossible); a directory holding a run is refused unless
    ``resume`` (continue it, see the module doc) or ``overwrite``. init_params: host dict
    of starting weights (fine-tuning). settings / overrides: :class:`TrainSettings`
    fields. stop_after_epochs: end this call after that many epochs (the schedule still
    spans ``settings.epochs``; ``resume=True`` continues), for time-boxed sessions.

    Raises :class:`~minivit.errors.TrainingInterrupted` (a KeyboardInterrupt) on SIGINT /
    SIGTERM, after writing a checkpoint at that batch: ``resume=True`` continues.
    """
    if stop_after_epochs is not None and not (isinstance(stop_after_epochs, int)
                                              and stop_after_epochs >= 1):
        raise ConfigError(f"stop_after_epochs must be an int >= 1, got {stop_after_epochs!r}")
    # [mpi hook 1] under mpirun: rank 0 alone logs and shows progress
    comm = distributed.current()
    log, progress = comm.logger(log), progress and comm.is_root
    objective = objective or Classification()
    config = (models.config_from_preset(model_config) if isinstance(model_config, str)
              else model_config)
    if isinstance(config, dict) and not resume:  # some fields: over the default preset
        config = ViTConfig.preset("cifar10-tiny", **config)
    s = TrainSettings.from_dict(dict(settings.to_dict() if settings is not None else {},
                                     **overrides))         # an unknown keyword is named
    given_s = {k: getattr(s, k) for k in (settings.to_dict() if settings else {}) | overrides}
    given_d = {k: v for k, v in (("limit_train", limit_train), ("limit_test", limit_test))
               if v is not None}
    if synthetic:
        given_d["synthetic"] = synthetic
    if data_folder is not None:
        given_d["data_folder"] = str(data_folder)
    ds = DataSettings(**given_d)
    given = {"settings": given_s, "data": given_d, "objective": objective.given_settings()}
    run = _Run(config, s, ds, objective, Path(out_dir) if out_dir is not None else None,
               resume, overwrite, given, log)
    if data is None:
        data = load_data(run.config, run.ds, data_dir, seed=run.s.seed, log=log)
    else:
        data = _fit_images(dict(data), run.config, log)
    _fit_classes(run, data, log)
    _check_data(run, data)
    # [mpi hook 2] a batch that splits into K shards, one GPU per rank, every rank the
    # same run (before the model is built: the GPU is chosen first)
    comm.setup(run.s.batch_size, run.s.backend, fingerprint=_run_fingerprint(run, data),
               refuse=run.objective.not_data_parallel)
    trainer = _Trainer(run, data, init_params, progress, stop_after_epochs)
    trainer.header()
    return trainer.run()


def recipe_settings(settings, overrides, recipe, warmup=0.05) -> TrainSettings:
    """TrainSettings of a subcommand's recipe (a dict of TrainSettings fields): the recipe,
    replaced by ``settings``' fields when a TrainSettings is given, then ``overrides``.
    An unset warm-up becomes ``warmup`` of the run (the paper's pre-training: 5%)."""
    given = dict(settings.to_dict() if settings is not None else {}, **overrides)
    s = TrainSettings(**dict(recipe, **given))
    if s.warmup_epochs is None and isinstance(s.epochs, (int, float)):
        s = s.replace(warmup_epochs=warmup * s.epochs)
    if isinstance(s.rand_augment, list):
        s = s.replace(rand_augment=tuple(s.rand_augment))
    return s


def _fit_classes(run, data, log):
    """A model trained on an image folder gets one output per class folder: the preset's
    10 (CIFAR-10) is replaced by the folder's count; any other mismatch is an error."""
    source = data.get("source")
    if not (isinstance(source, dict) and source.get("kind") == "image-folder"):
        return
    n, have = len(data["classes"]), run.config.num_classes
    if have == n:
        return
    if run.state is not None or have != 10:
        raise ConfigError(f"--num-classes {have}, but {source.get('folder')} has {n} class "
                          f"folders")
    log(f"{n} classes in {source.get('folder')}: the model gets {n} outputs")
    run.config = run.config.replace(num_classes=n)


def _check_data(run, data):
    config, s = run.config, run.s
    x_train = data["x_train"]
    if x_train.shape[1:] != (config.image_size, config.image_size, config.channels):
        raise ConfigError(f"training images are {x_train.shape[1:]}, the model expects "
                          f"({config.image_size}, {config.image_size}, {config.channels})")
    if len(x_train) < s.batch_size:
        raise ConfigError(f"batch size {s.batch_size} is larger than the training set "
                          f"({len(x_train)})")
    run.objective.check_data(config, data)


def _run_fingerprint(run, data) -> tuple:
    """What every MPI rank must agree on: the run's settings, its data (shape, labels, a
    sample of the images) and the resumed position."""
    x, obj, state = data["x_train"], run.objective, run.state
    return (run.config.to_dict(), run.s.to_dict(), run.ds.to_dict(), obj.name,
            obj.settings.to_dict() if obj.settings is not None else None, x.shape,
            np.asarray(data["y_train"]).tobytes(), x[::max(1, len(x) // 64)].tobytes(),
            None if state is None else (state["meta"]["step"], state["meta"]["elapsed"]))


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


# ---------------------------------------------------------------------- CLI (shared)
def add_run_flags(p, defaults=None, exclude=(), help=None, model=True):
    """The flags of a training run, derived from the dataclasses: ``--preset`` and the
    ViTConfig fields (model=True), the TrainSettings fields (``defaults``: this
    subcommand's recipe), the DataSettings fields, and data/output/resume flags.
    Shared by train, pretrain and finetune, so each flag reads the same in all three."""
    from .flags import add_flags
    if model:
        p.add_argument("--preset", default=argparse.SUPPRESS,
                       help=f"one of: {', '.join(models.all_presets())} (default: cifar10-tiny; on "
                            f"--resume: the run's)")
        add_flags(p, ViTConfig, defaults=ViTConfig.preset("cifar10-tiny"),
                  title="model (override the preset)")
    add_flags(p, TrainSettings, defaults=defaults, exclude=exclude, help=help,
              title="training")
    add_flags(p, DataSettings, defaults={"limit_train": "all", "limit_test": "all"},
              title="data")
    io = p.add_argument_group("data location, output, resume")
    io.add_argument("--limit", type=int, default=argparse.SUPPRESS, metavar="N",
                    help="shorthand for --limit-train N --limit-test N (default: none)")
    io.add_argument("--data-dir", default=None,
                    help="CIFAR-10 directory or archive (default: $MINIVIT_DATA_DIR, else "
                         "the user cache; downloaded on first use)")
    io.add_argument("--out", default="runs/latest", help="output directory (default: %(default)s)")
    io.add_argument("--resume", action="store_true",
                    help="continue the run in OUT/checkpoint.npz with its own settings; a "
                         "larger --epochs extends it (default: off)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace a run already in OUT (default: off: refused)")
    io.add_argument("--no-progress", action="store_true",
                    help="no progress bars (default: off)")


def run_args(args, model=True) -> dict:
    """The keyword arguments of :func:`train` for what the user typed (``args`` from a
    parser made by :func:`add_run_flags`): only given settings, so resume can tell them
    from defaults."""
    from .flags import given
    kw = dict(given(args, TrainSettings))
    data = given(args, DataSettings)
    if hasattr(args, "limit"):
        data.setdefault("limit_train", args.limit)
        data.setdefault("limit_test", args.limit)
    kw.update(data)
    if model:
        m = given(args, ViTConfig)
        if hasattr(args, "preset") and models.preset_kind(args.preset) != "vit":
            m = _conv_preset(args.preset, m)     # a config object, not a dict of fields
        elif hasattr(args, "preset"):
            m = ViTConfig.preset(args.preset, **m).to_dict()
        if args.resume:                     # only what was typed is checked against the run
            kw["model_config"] = m or None
        elif m:
            kw["model_config"] = m if not isinstance(m, dict) else \
                ViTConfig.preset("cifar10-tiny", **m)
    kw.update(data_dir=args.data_dir, out_dir=args.out, resume=args.resume,
              overwrite=args.overwrite, progress=not args.no_progress)
    return kw


def _conv_preset(name, typed: dict):
    """The ResNet / hybrid config of preset ``name`` with the model flags the user typed
    (``typed``: ViTConfig field → value) that this family has; a ViT-only flag (e.g.
    --patch-size for a ResNet) is refused by name."""
    config = models.config_from_preset(name)
    fields = set(config.to_dict())
    alien = [k for k in typed if k not in fields]
    if alien:
        raise ConfigError(f"--preset {name} is a {models.model_kind(config)} model: "
                          f"{', '.join('--' + k.replace('_', '-') for k in alien)} "
                          f"only applies to a ViT")
    return config.replace(**typed) if typed else config


def report(r, out) -> None:
    """The final line of a CLI run (the data source says what the number means); a run
    ended early by --stop-after-epochs is not called done, nor its accuracy final."""
    hist, s = r.get("history") or [], r.get("settings")
    if hist and s is not None and hist[-1]["epoch"] < s.epochs:
        print(f"not finished: epoch {hist[-1]['epoch']} of {s.epochs} (outputs in {out}/)")
        return
    if r["test_acc"] is None:
        print(f"done (outputs in {out}/)")
        return
    what = "test accuracy" if r.get("objective", "classification") == "classification" \
        else f"{r['objective']} test accuracy"
    if r.get("data_source") == "synthetic":
        what += " on the synthetic set (a pipeline check, not a CIFAR-10 result)"
    # With --ema-decay the moving average is evaluated too, and a bundled model may be
    # that average (benchmarks/bundle_model.py --ema): the final line gives both figures.
    ema = hist[-1].get("ema_test_acc") if hist else None
    also = "" if ema is None else f"; moving average of the weights {100 * ema:.2f}%"
    print(f"final {what}: {100 * r['test_acc']:.2f}%{also}  (outputs in {out}/)")


def cli_main(fn, args, **kw) -> int:
    """Run ``fn(**kw)``; a signal ends it with 128 + signum (its message already logged).

    Under ``mpirun`` [mpi hook 8]: rank 0 alone prints, and a failed job ends with one
    line, from rank 0 or from the one rank that failed (:meth:`Communicator.job`)."""
    comm = distributed.current()
    kw.setdefault("log", comm.logger(print))
    with comm.job():
        try:
            r = fn(**kw)
        except TrainingInterrupted as e:
            return 128 + int(e.signum)
    if comm.is_root:
        report(r, args.out)
    return 0


def configure_parser(p):
    add_run_flags(p, defaults={"warmup_epochs": "2, at most a fifth of the run"})
    p.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                   help="end after N epochs of this call with the checkpoint written; the "
                        "schedule still spans --epochs and --resume continues (e.g. copy "
                        "the run stopped before its full-token epochs and finish each copy "
                        "with another --full-token-lr) (default: run to the end)")


def cli_run(args):
    return cli_main(train, args, **run_args(args), stop_after_epochs=args.stop_after_epochs)
