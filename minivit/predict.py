"""``minivit predict CHECKPOINT IMAGE_OR_FOLDER...``: top-5 classes with probabilities.

Images of any size are resized (bilinear) to the model's input size, and the output says
so. ``default`` names the small CIFAR-10 model bundled with the package, so this works
before training; a run folder stands for its checkpoint.npz. A model knows only the
classes it was trained on (CIFAR-10's ten for the bundled one), which the output says
too. An unreadable file gets a one-line error and the others are still predicted; the
exit status is then 2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.images import IMAGE_SUFFIXES, load_image, read_image, resize_rgb  # noqa: F401
from .errors import DataError
from .hub import bundled_checkpoint


def default_checkpoint() -> Path:
    """Path of the bundled CIFAR-10 model (raises CheckpointError if it is not shipped)."""
    return bundled_checkpoint("default")


def expand_paths(items) -> list[Path]:
    """Image paths from command-line items: a file stays itself, a folder stands for every
    image file directly inside it (suffixes in ``IMAGE_SUFFIXES``, hidden files skipped,
    sorted by name). Raises DataError for a folder holding no image file."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"no image files in folder {p} (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(p)
    return out


def read_images(paths, size, errors=None):
    """Read and resize image files for the model.

    paths: files; size: the model's image size. errors: None raises DataError on the first
    unreadable file; a list collects ``(path, one-line message)`` for each unreadable file
    and skips it. Returns (x: (n, size, size, 3) uint8 of the readable files, their
    paths, their original (width, height) sizes)."""
    xs, ok, sizes = [], [], []
    for p in paths:
        try:
            img = read_image(p)
            x = resize_rgb(img, size, p)
        except DataError as e:
            if errors is None:
                raise
            errors.append((str(p), " ".join(str(e).split())))
            continue
        xs.append(x)
        ok.append(str(p))
        sizes.append(img.size)
    x = np.stack(xs) if xs else np.zeros((0, size, size, 3), np.uint8)
    return x, ok, sizes


def _check_model(model, classes):
    if model.config.channels != 3:
        raise DataError(f"predict reads RGB images; this model expects "
                        f"{model.config.channels} channels")
    if len(classes) < model.config.num_classes:
        raise DataError(f"{len(classes)} class names for a model with "
                        f"{model.config.num_classes} classes")


def top_k(model, x_uint8, classes, k=5):
    """Top-k (class, probability) lists for uint8 images x: (n, H, W, 3). Raises DataError
    when the model's outputs are not finite."""
    from .data.augment import normalize
    if len(x_uint8) == 0:
        return []
    probs = np.asarray(model.predict_proba(normalize(x_uint8)))
    if not np.isfinite(probs).all():
        raise DataError("the model produced non-finite probabilities (corrupt weights?)")
    return [[(classes[i], float(pr[i])) for i in np.argsort(-pr)[:k]] for pr in probs]


def predict_files(model, paths, classes, k=5):
    """Top-k predictions for image files. Returns a list of (path, [(class, prob), …]).
    Raises DataError naming the first unreadable file (before any model work), and
    if the model's outputs are not finite."""
    _check_model(model, classes)
    x, ok, _ = read_images(paths, model.config.image_size)
    return list(zip(ok, top_k(model, x, classes, k)))


def configure_parser(p):
    from .flags import add_backend_flag
    p.add_argument("checkpoint", help="checkpoint .npz, a run folder (its checkpoint.npz), or "
                   "'default' for the bundled CIFAR-10 model")
    p.add_argument("images", nargs="+", help="image files or folders of images (any size; "
                   "resized to the model's input size)")
    add_backend_flag(p, default="numpy")
    p.add_argument("--top", type=int, default=5, help="how many classes to list (default 5)")


def _describe_classes(classes, path):
    from .data.cifar10 import CLASSES
    from .hub import is_bundled
    name = f"{Path(path).stem} (bundled)" if is_bundled(path) else str(path)
    kind = "the 10 CIFAR-10 classes" if tuple(classes) == CLASSES else \
        f"{len(classes)} classes"
    return (f"model: {name}; it knows only {kind} ({', '.join(classes)}): every image gets "
            f"the closest of these")


def cli_run(args):
    import sys

    from .checkpoint import load_model
    from .errors import ConfigError
    from .hub import class_names, require_classifier, resolve_checkpoint
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    ckpt = resolve_checkpoint(args.checkpoint)
    model, meta = load_model(ckpt, backend=args.backend)
    require_classifier(meta, ckpt)
    classes = class_names(meta, model.config.num_classes, ckpt)
    _check_model(model, classes)
    paths = expand_paths(args.images)
    S = model.config.image_size
    errors = []
    x, ok, sizes = read_images(paths, S, errors)
    # one line per unreadable file, the good ones still get their predictions
    for _, message in errors:
        print(f"minivit predict: error: {message}", file=sys.stderr)
    if ok:
        print(_describe_classes(classes, ckpt))
        print(f"each image is resized to {S}x{S} pixels, the model's input size")
    for path, (w, h), top in zip(ok, sizes, top_k(model, x, classes, min(args.top, len(classes)))):
        print(f"{path}  ({w}x{h})")
        for name, prob in top:
            print(f"  {name:<12s} {100 * prob:6.2f}%")
    return 2 if errors else 0
