"""``minivit predict CHECKPOINT IMAGE...``: top-5 classes with probabilities.

Images of any size are resized (bilinear) to the model's input size. Without a checkpoint
the small CIFAR-10 model bundled with the package is used, so this works before training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataError

BUNDLED = Path(__file__).parent / "weights" / "cifar10-tiny.npz"


def default_checkpoint() -> Path:
    """Path of the bundled CIFAR-10 model (raises CheckpointError if it is not shipped)."""
    if not BUNDLED.is_file():
        raise CheckpointError(f"no bundled model at {BUNDLED}; pass a checkpoint path")
    return BUNDLED


def load_image(path, size) -> np.ndarray:
    """Read an image file (PNG/JPEG/… via Pillow, or .npy (H, W, 3) uint8) and resize it
    to (size, size). Returns (size, size, 3) uint8. Raises DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy image ({e})") from None
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise DataError(f"{path}: expected an (H, W, 3) uint8 array, got {a.shape} {a.dtype}")
        from PIL import Image
        img = Image.fromarray(a)
    else:
        from PIL import Image, UnidentifiedImageError
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def predict_files(model, paths, classes, k=5):
    """Top-k predictions for image files. Returns a list of (path, [(class, prob), …])."""
    from .data.augment import normalize
    x = np.stack([load_image(p, model.config.image_size) for p in paths])
    probs = model.predict_proba(normalize(x))
    out = []
    for p, pr in zip(paths, probs):
        top = np.argsort(-pr)[:k]
        out.append((str(p), [(classes[i], float(pr[i])) for i in top]))
    return out


def configure_parser(p):
    p.add_argument("checkpoint", help="checkpoint .npz, or 'default' for the bundled model")
    p.add_argument("images", nargs="+", help="image files (any size; resized)")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--top", type=int, default=5)


def cli_run(args):
    from .checkpoint import load_model
    from .data.cifar10 import CLASSES
    from .errors import ConfigError
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    ckpt = default_checkpoint() if args.checkpoint == "default" else Path(args.checkpoint)
    model, meta = load_model(ckpt, backend=args.backend)
    classes = meta.get("classes") or (CLASSES if model.config.num_classes == 10 else
                                      [f"class{i}" for i in range(model.config.num_classes)])
    for path, top in predict_files(model, args.images, classes, min(args.top, len(classes))):
        print(path)
        for name, prob in top:
            print(f"  {name:<12s} {100 * prob:6.2f}%")
    return 0
