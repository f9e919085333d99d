"""Evaluation: accuracy, loss, per-class accuracy and the confusion matrix; and the
``minivit eval CHECKPOINT`` command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .ops.losses import cross_entropy_forward


def evaluate(model, x_uint8, y, batch_size=500, mean=None, std=None, smoothing=0.0,
             tta="none"):
    """Evaluate ``model`` on uint8 images.

    tta: "none", or "flip" to average the logits of each image and its horizontal
    mirror (:func:`minivit.tta.predict_logits_tta`).

    x_uint8: (n, H, W, C) uint8; y: (n,) ints. Returns dict with loss (mean
    cross-entropy, with ``smoothing``), acc, per_class_acc (C,), confusion (C, C) int64
    (rows: true class), and predictions (n,). Raises DataError for labels that do not
    match the images or the model's classes, and for pixels normalize refuses (NaN/inf,
    outside 0..255, floats already scaled to 0..1).
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
    for s in range(0, len(y), batch_size):
        xb = normalize(x_uint8[s:s + batch_size], mean, std)
        if tta != "none":
            from .tta import predict_logits_tta
            logits = predict_logits_tta(model, xb, tta)
        else:
            logits = model.be.to_host(model.forward(xb))
        loss, _ = cross_entropy_forward(np.asarray(logits, np.float64), y[s:s + batch_size],
                                        smoothing)
        total_loss += loss * len(xb)
        preds[s:s + batch_size] = np.argmax(logits, axis=1)
    model._cache = {}                       # drop activations kept for a backward pass
    confusion = np.zeros((C, C), dtype=np.int64)
    np.add.at(confusion, (y, preds), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {"loss": total_loss / max(len(y), 1), "acc": float((preds == y).mean()),
            "per_class_acc": per_class, "confusion": confusion, "predictions": preds}


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint .npz (default: the bundled cifar10-tiny model)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 location (see minivit train)")
    p.add_argument("--backend", default="numba", help="numpy | numba | cuda")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--tta", choices=["none", "flip"], default="none",
                   help="test-time augmentation: flip averages the logits of each image "
                        "and its horizontal mirror")
    p.add_argument("--ema", action="store_true",
                   help="evaluate the checkpoint's moving average of the weights")
    p.add_argument("--out", default=None, help="directory for confusion.png and eval.json "
                   "(default: beside the checkpoint)")


def cli_run(args):
    from .checkpoint import load_model
    from .data import load_cifar10
    from .plots import plot_confusion_matrix
    from .predict import default_checkpoint
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    model, meta = load_model(ckpt, backend=args.backend, ema=args.ema)
    c = model.config
    if c.num_classes != 10 or c.image_size != 32 or c.channels != 3:
        raise ConfigError(f"{ckpt}: a model for {c.image_size}x{c.image_size}x{c.channels} "
                          f"images and {c.num_classes} classes cannot be evaluated on "
                          f"CIFAR-10 (32x32x3, 10 classes); fine-tune it first")
    data = load_cifar10(args.data_dir, limit_train=0, limit_test=args.limit)  # test split only
    classes = data["classes"]
    r = evaluate(model, data["x_test"], data["y_test"], args.batch_size, tta=args.tta)
    out = Path(args.out) if args.out else (ckpt.parent if args.checkpoint else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(r["confusion"], classes, out / "confusion.png")
    print(f"checkpoint: {ckpt}")
    print(f"test accuracy: {100 * r['acc']:.2f}% on {len(data['y_test'])} images "
          f"(loss {r['loss']:.4f})" + (f", TTA {args.tta}" if args.tta != "none" else "")
          + (", EMA weights" if args.ema else ""))
    for c, a in zip(classes, r["per_class_acc"]):
        print(f"  {c:<12s} {100 * a:6.2f}%")
    with open(out / "eval.json", "w") as f:
        json.dump({"checkpoint": str(ckpt), "acc": r["acc"], "loss": r["loss"],
                   "tta": args.tta, "ema": bool(args.ema),
                   "per_class_acc": dict(zip(classes, map(float, r["per_class_acc"]))),
                   "confusion": r["confusion"].tolist()}, f, indent=1)
    print(f"confusion matrix: {out / 'confusion.png'}")
    return 0
