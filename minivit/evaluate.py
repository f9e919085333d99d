"""Evaluation: accuracy, loss, per-class accuracy and the confusion matrix; and the
``minivit eval CHECKPOINT`` command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .ops.losses import cross_entropy_forward
from .tta import TTA_MODES, predict_logits_tta


def evaluate(model, x_uint8, y, batch_size=500, mean=None, std=None, smoothing=0.0,
             progress=False, tta="none"):
    """Evaluate ``model`` on uint8 images.

    tta: "none"; "flip" to average the logits of each image and its horizontal mirror;
    "flip-shift" to add both moved one pixel each way (:func:`minivit.tta.predict_logits_tta`).

    x_uint8: (n, H, W, C) uint8; y: (n,) ints. Returns dict with loss (mean
    cross-entropy, with ``smoothing``), acc, per_class_acc (C,), confusion (C, C) int64
    (rows: true class), and predictions (n,). progress: a progress bar (images) on
    stderr. Raises DataError for labels that do not match the images or the model's
    classes, and for pixels normalize refuses (NaN/inf, outside 0..255, floats already
    scaled to 0..1).
    """
    from .data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize
    mean = CIFAR10_MEAN if mean is None else mean
    std = CIFAR10_STD if std is None else std
    C = model.config.num_classes
    y = np.asarray(y)
    n = len(x_uint8) if hasattr(x_uint8, "__len__") else None
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ConfigError(f"evaluate: batch_size must be an int >= 1, got {batch_size!r}")
    if y.ndim != 1 or n != len(y):
        raise DataError(f"evaluate: {n} images but labels of shape {y.shape}")
    if len(y) == 0:
        raise DataError("evaluate: no images to evaluate")
    if y.dtype.kind not in "iu":
        raise DataError(f"evaluate: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= C:
        raise DataError(f"evaluate: labels span {int(y.min())}..{int(y.max())}, the model "
                        f"has {C} classes (0..{C - 1})")
    preds = np.empty(len(y), dtype=np.int64)
    total_loss = 0.0
    from tqdm.auto import tqdm
    bar = tqdm(total=len(y), unit="img", desc="evaluating", disable=not progress,
               leave=False)
    for s in range(0, len(y), batch_size):
        xb = normalize(x_uint8[s:s + batch_size], mean, std)
        logits = predict_logits_tta(model, xb, tta)        # tta "none": one forward
        loss, _ = cross_entropy_forward(logits, y[s:s + batch_size], smoothing)
        total_loss += loss * len(xb)
        preds[s:s + batch_size] = np.argmax(logits, axis=1)
        bar.update(len(xb))
    bar.close()
    model.clear_cache()                     # drop activations kept for a backward pass
    confusion = np.zeros((C, C), dtype=np.int64)
    np.add.at(confusion, (y, preds), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {"loss": total_loss / max(len(y), 1), "acc": float((preds == y).mean()),
            "per_class_acc": per_class, "confusion": confusion, "predictions": preds}


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    from .flags import add_backend_flag
    p.add_argument("checkpoint", nargs="?", default="default",
                   help="checkpoint .npz, a run folder (its checkpoint.npz), or 'default' for "
                        "the bundled CIFAR-10 model (default: default)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 location (default: $MINIVIT_DATA_DIR, else the user cache; "
                        "downloaded on first use)")
    p.add_argument("--data-folder", default=None, metavar="DIR",
                   help="evaluate on your own images (one sub-folder per class) instead of "
                        "CIFAR-10; default for a model trained with --data-folder: its "
                        "folder's held-out split")
    add_backend_flag(p, default="numba")
    p.add_argument("--batch-size", type=int, default=500, help="default 500")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--tta", choices=list(TTA_MODES), default="none",
                   help="test-time augmentation: flip averages the logits of each image "
                        "and its horizontal mirror; flip-shift adds both moved one pixel "
                        "each way (6 forward passes; default: none)")
    p.add_argument("--ema", action="store_true",
                   help="evaluate the checkpoint's moving average of the weights (a run "
                        "trained with --ema-decay; default: off)")
    p.add_argument("--out", default=None,
                   help="folder for confusion.png and eval.json (default: beside the "
                        "checkpoint; for a bundled model runs/eval-NAME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_out_dir(ckpt) -> Path:
    """Where eval writes when --out is not given: the checkpoint's own folder (a run
    folder), or ``runs/eval-NAME`` for a model bundled with the package (never inside the
    installed package, never silently into the working directory)."""
    from .hub import is_bundled
    ckpt = Path(ckpt)
    return Path("runs") / f"eval-{ckpt.stem}" if is_bundled(ckpt) else ckpt.parent


def _test_data(args, model, meta, ckpt, classes):
    """(x_test, y_test, class names, description) for the checkpoint: its image folder
    when it was trained on one (or --data-folder), else CIFAR-10."""
    from .data import load_cifar10
    from .data.sources import load_dataset
    c = model.config
    folder = args.data_folder or meta.get("data_source")
    if not args.data_folder and folder and not Path(folder.get("folder", "")).is_dir():
        raise ConfigError(f"{ckpt} was trained on the images in {folder.get('folder')}, "
                          f"which is no longer there; give --data-folder DIR")
    if folder:
        d = load_dataset(folder, c.image_size, limit_train=0, limit_test=args.limit)
        if tuple(d["classes"]) != tuple(classes):
            raise ConfigError(f"{ckpt} was trained on classes {list(classes)}, the image "
                              f"folder has {list(d['classes'])}")
        held = "held-out" if d["source"].get("split") == "held-out" else "test"
        return d["x_test"], d["y_test"], d["classes"], f"{held} images of {d['source']['folder']}"
    if c.num_classes != 10 or c.image_size != 32 or c.channels != 3:
        raise ConfigError(f"{ckpt}: a model for {c.image_size}x{c.image_size}x{c.channels} "
                          f"images and {c.num_classes} classes cannot be evaluated on "
                          f"CIFAR-10 (32x32x3, 10 classes); fine-tune it first, or give "
                          f"--data-folder")
    d = load_cifar10(args.data_dir, limit_train=0, limit_test=args.limit)  # test split only
    return d["x_test"], d["y_test"], d["classes"], "CIFAR-10 test images"


def cli_run(args):
    from .checkpoint import load_model
    from .hub import class_names, require_classifier, resolve_checkpoint
    from .plots import plot_confusion_matrix
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    ckpt = resolve_checkpoint(args.checkpoint)
    model, meta = load_model(ckpt, backend=args.backend, ema=args.ema)
    require_classifier(meta, ckpt)
    classes = class_names(meta, model.config.num_classes, ckpt)
    x_test, y_test, classes, what = _test_data(args, model, meta, ckpt, classes)
    out = Path(args.out) if args.out else default_out_dir(ckpt)
    print(f"checkpoint: {ckpt}" + (" (its moving average of the weights)" if args.ema else ""))
    print(f"evaluating on {len(y_test)} {what}; outputs go to {out}/")
    r = evaluate(model, x_test, y_test, args.batch_size, progress=not args.no_progress,
                 tta=args.tta)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(r["confusion"], classes, out / "confusion.png")
    print(f"test accuracy: {100 * r['acc']:.2f}% on {len(y_test)} images "
          f"(loss {r['loss']:.4f})" + (f", TTA {args.tta}" if args.tta != "none" else "")
          + (", EMA weights" if args.ema else ""))
    for name, a in zip(classes, r["per_class_acc"]):
        print(f"  {name:<12s} {100 * a:6.2f}%")
    with open(out / "eval.json", "w") as f:
        json.dump({"checkpoint": str(ckpt), "data": what, "acc": r["acc"], "loss": r["loss"],
                   "tta": args.tta, "ema": bool(args.ema),
                   "per_class_acc": dict(zip(classes, map(float, r["per_class_acc"]))),
                   "confusion": r["confusion"].tolist()}, f, indent=1)
    print(f"wrote {out / 'eval.json'} and {out / 'confusion.png'}")
    return 0
