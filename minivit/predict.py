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


# Pillow modes whose pixels are not 8-bit: "I;16*" (16-bit greyscale PNG/TIFF), "I"
# (32-bit int; Pillow also opens 16-bit PNGs this way), "F" (32-bit float). Pillow's
# convert("RGB") *clips* them to 0..255 instead of scaling, which would silently turn a
# 16-bit photo white: they are rescaled from 16 bits, or refused.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_rgb8(img, path):
    """An 8-bit RGB Pillow image from any mode, never silently mis-scaled."""
    from PIL import Image
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and img.format == "PNG"):
        a = np.asarray(img, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 16-bit image with values outside 0..65535")
        a8 = ((a * 255 + 32767) // 65535).astype(np.uint8)      # 0..65535 -> 0..255
        return Image.fromarray(a8, mode="L").convert("RGB")
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        kind = "32-bit integer" if mode[0] == "I" else "floating-point"
        raise DataError(f"{path}: {mode!r} images ({kind} pixels) have no defined 0..255 "
                        f"scale; save it as an 8-bit (or 16-bit PNG) image, or as an "
                        f"(H, W, 3) uint8 .npy")
    return img.convert("RGB")


def load_image(path, size) -> np.ndarray:
    """Read an image file (PNG/JPEG/… via Pillow, or .npy (H, W, 3) uint8) and resize it
    to (size, size). Returns (size, size, 3) uint8. Raises DataError naming the file for
    a missing, unreadable, truncated, corrupt or empty file, a decompression bomb, and
    pixels of no defined 8-bit scale (float/32-bit images; .npy arrays that are not
    uint8, so NaN/inf can never get in). 16-bit images are scaled to 8 bits."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    from PIL import Image
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:              # ValueError (pickle, bad header), EOFError, …
            raise DataError(f"{path}: not a readable .npy image "
                            f"({type(e).__name__}: {' '.join(str(e).split())})") from None
        if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise DataError(f"{path}: expected an (H, W, 3) uint8 array, got "
                            f"{getattr(a, 'shape', '?')} {getattr(a, 'dtype', type(a).__name__)}"
                            f"; convert floats yourself (x * 255 for 0..1 data), so "
                            f"nothing is scaled silently")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise DataError(f"{path}: empty image {a.shape}")
        img = Image.fromarray(np.ascontiguousarray(a))
    else:
        try:
            with Image.open(path) as opened:
                opened.load()
                if opened.width < 1 or opened.height < 1:
                    raise DataError(f"{path}: empty image ({opened.width}x{opened.height})")
                img = _to_rgb8(opened, path)
        except DataError:
            raise
        except Image.DecompressionBombError as e:
            raise DataError(f"{path}: refused: {e}") from None
        except Exception as e:              # Pillow raises many types on corrupt files
            raise DataError(f"{path}: not a readable image "
                            f"({type(e).__name__}: {' '.join(str(e).split())})") from None
    try:
        img = img.resize((size, size), Image.BILINEAR)
    except Exception as e:
        raise DataError(f"{path}: cannot resize the image ({type(e).__name__}: {e})") from None
    return np.asarray(img, dtype=np.uint8)


def predict_files(model, paths, classes, k=5):
    """Top-k predictions for image files. Returns a list of (path, [(class, prob), …]).
    Raises DataError naming the first unreadable file (before any model work), and
    if the model's outputs are not finite."""
    from .data.augment import normalize
    if model.config.channels != 3:
        raise DataError(f"predict reads RGB images; this model expects "
                        f"{model.config.channels} channels")
    if len(classes) < model.config.num_classes:
        raise DataError(f"{len(classes)} class names for a model with "
                        f"{model.config.num_classes} classes")
    x = np.stack([load_image(p, model.config.image_size) for p in paths])
    probs = np.asarray(model.predict_proba(normalize(x)))
    if not np.isfinite(probs).all():
        raise DataError("the model produced non-finite probabilities (corrupt weights?)")
    out = []
    for p, pr in zip(paths, probs):
        top = np.argsort(-pr)[:k]
        out.append((str(p), [(classes[i], float(pr[i])) for i in top]))
    return out


def configure_parser(p):
    from .flags import add_backend_flag
    p.add_argument("checkpoint", help="checkpoint .npz, or 'default' for the bundled model")
    p.add_argument("images", nargs="+", help="image files (any size; resized)")
    add_backend_flag(p, default="numpy")
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
    if (not isinstance(classes, (list, tuple)) or len(classes) != model.config.num_classes
            or not all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{ckpt}: meta.json 'classes' must list "
                              f"{model.config.num_classes} class names")
    for path, top in predict_files(model, args.images, classes, min(args.top, len(classes))):
        print(path)
        for name, prob in top:
            print(f"  {name:<12s} {100 * prob:6.2f}%")
    return 0
