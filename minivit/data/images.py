"""Reading one image file into the model's input size: PNG/JPEG/… through Pillow, or an
(H, W, 3) uint8 ``.npy``; never silently mis-scaled (16-bit images are rescaled, float
or 32-bit ones refused), always resized to (size, size) with Pillow's bilinear filter.

Used by ``minivit predict`` and by the image-folder data set (:mod:`minivit.data.folder`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minivit.errors import DataError

# File suffixes read as images (lower case). Others in a folder are skipped, not errors.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".npy")


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


def read_image(path):
    """Read an image file (PNG/JPEG/… via Pillow, or .npy (H, W, 3) uint8) as an 8-bit RGB
    Pillow image at its own size. Raises DataError naming the file for a missing,
    unreadable, truncated, corrupt or empty file, a decompression bomb, and pixels of no
    defined 8-bit scale (float/32-bit images; .npy arrays that are not uint8, so NaN/inf
    can never get in). 16-bit images are scaled to 8 bits."""
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
    return img


def resize_rgb(img, size, path="image") -> np.ndarray:
    """A Pillow RGB image resized (bilinear) to (size, size, 3) uint8."""
    from PIL import Image
    try:
        img = img.resize((size, size), Image.BILINEAR)
    except Exception as e:
        raise DataError(f"{path}: cannot resize the image ({type(e).__name__}: {e})") from None
    return np.asarray(img, dtype=np.uint8)


def load_image(path, size) -> np.ndarray:
    """Read an image file (see :func:`read_image`, which names every refusal) and resize
    it to (size, size). Returns (size, size, 3) uint8."""
    return resize_rgb(read_image(path), size, path)
