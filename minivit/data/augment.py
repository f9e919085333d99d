"""Image augmentation and normalisation on batches, in NumPy.

Every function works on a whole batch ``(B, H, W, C)`` at once (vectorised: no Python loop
over pixels, at most a loop over a handful of operation kinds), and every random one takes
a ``numpy.random.Generator`` and draws from it in a fixed order, so the same generator
state gives bit-identical output. That is what lets `BatchLoader` reproduce an epoch from
``(seed, epoch)`` alone.

The training recipe for ViT on CIFAR-10 from scratch (paper §4.1 and Appendix B, with the
common small-data additions) is: random crop with 4-pixel padding, horizontal flip,
optionally RandAugment and mixup/cutmix, then per-channel normalisation. `Augmenter` chains them in that order.
"""
from __future__ import annotations

import numpy as np

from minivit.errors import DataError

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "RAND_AUGMENT_OPS",
    "normalize", "random_crop", "random_flip", "rand_augment",
    "one_hot", "mixup", "cutmix", "Augmenter",
]

# Per-channel statistics of the CIFAR-10 training set for pixels scaled to 0..1.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _check_images(images, name="images", uint8=False) -> np.ndarray:
    """Return `images` as an array after checking it is a (B, H, W, C) batch."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"{name} must be a (B, H, W, C) batch, got shape {images.shape}")
    if uint8 and images.dtype != np.uint8:
        raise DataError(f"{name} must be uint8 (0..255), got dtype {images.dtype}")
    return images


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


# ----------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------

def normalize(images_uint8, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=np.float32):
    """Scale pixels to 0..1 and standardise each channel: ``(x / 255 - mean) / std``.

    images_uint8: (..., C) — normally (B, H, W, C) uint8. Other integer or float dtypes
    are accepted only if every value is finite and within 0..255. A float array whose
    values all lie in (0, 1] is refused: it is almost surely already scaled, and dividing
    it by 255 again would silently ruin training. mean, std: (C,) for 0..1-scaled pixels.

    Returns an array of the same shape in `dtype` (float32 by default).
    """
    x = np.asarray(images_uint8)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if x.ndim < 1 or mean.shape != std.shape or mean.ndim != 1 or x.shape[-1] != mean.size:
        raise DataError(f"normalize: images of shape {x.shape} do not end in the "
                        f"{mean.size} channels of mean/std")
    if not np.all(std > 0):
        raise DataError(f"normalize: std must be positive, got {std.tolist()}")
    if x.dtype != np.uint8:
        if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                       or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"normalize: expected uint8 pixels, got dtype {x.dtype}")
        if x.size:
            if not np.all(np.isfinite(x)):
                raise DataError("normalize: images contain NaN or infinite values")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 255:
                raise DataError(f"normalize: pixel values span [{lo:g}, {hi:g}], outside "
                                f"0..255; pass uint8 images")
            if np.issubdtype(x.dtype, np.floating) and 0 < hi <= 1.0:
                raise DataError(f"normalize: float pixels span [{lo:g}, {hi:g}], which looks "
                                f"already scaled to 0..1; pass uint8 images or scale them "
                                f"to 0..255 first")
    # (x/255 - mean)/std  ==  x * scale + shift, with one multiply-add per pixel.
    scale = (1.0 / (255.0 * std)).astype(dtype)
    shift = (-mean / std).astype(dtype)
    out = x.astype(dtype)
    out *= scale
    out += shift
    return out


# ----------------------------------------------------------------------------------------
# Crop and flip
# ----------------------------------------------------------------------------------------

def random_crop(images, padding, rng, mode="zero"):
    """Pad each image by `padding` pixels per side and cut a random H x W window from it.

    images: (B, H, W, C), any dtype. padding: int >= 0. rng: numpy Generator.
    mode: "zero" (pad with 0) or "reflect" (mirror without repeating the edge; needs
    padding < H and < W). Each image gets its own offset, drawn as
    ``rng.integers(0, 2 * padding + 1, size=(B, 2))``.

    Returns (B, H, W, C), same dtype; padding=0 returns an unchanged copy.
    """
    images = _check_images(images)
    rng = _check_rng(rng)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise DataError(f"random_crop: padding must be an int >= 0, got {padding!r}")
    padding = int(padding)
    if mode not in ("zero", "reflect"):
        raise DataError(f"random_crop: mode must be 'zero' or 'reflect', got {mode!r}")
    B, H, W, _ = images.shape
    if padding == 0:
        return images.copy()
    if mode == "reflect" and (padding >= H or padding >= W):
        raise DataError(f"random_crop: reflect padding {padding} needs images larger "
                        f"than that, got {H}x{W}")
    widths = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = np.pad(images, widths, mode="constant" if mode == "zero" else "reflect")
    offsets = rng.integers(0, 2 * padding + 1, size=(B, 2))
    # One gather for the whole batch: rows (B, H, 1) and columns (B, 1, W) broadcast
    # with the batch index (B, 1, 1) to pick each image's own window.
    rows = offsets[:, 0, None] + np.arange(H)
    cols = offsets[:, 1, None] + np.arange(W)
    return padded[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images, rng, p=0.5):
    """Mirror each image left-right with probability `p`.

    images: (B, H, W, C), any dtype. rng: numpy Generator (draws ``rng.random(B)``).
    Returns (B, H, W, C), a new array of the same dtype.
    """
    images = _check_images(images)
    rng = _check_rng(rng)
    if not 0.0 <= p <= 1.0:
        raise DataError(f"random_flip: p must be in [0, 1], got {p!r}")
    flip = rng.random(images.shape[0]) < p
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


# ----------------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020), NumPy on uint8
# ----------------------------------------------------------------------------------------
#
# The operation set and magnitude ranges follow torchvision/timm: a magnitude m on the
# 0..10 scale maps to level = m / 10 of each operation's maximum strength, and operations
# with a direction (rotate, shear, translate, the enhancers) take a random sign per image.
# Geometric operations resample with nearest neighbour about the image centre and fill
# uncovered pixels with 0.

RAND_AUGMENT_OPS = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
    "translate_y",
)
_MAX_MAGNITUDE = 10.0
_MAX_ROTATE_DEG = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.45          # fraction of the image side (timm's translate_pct)
_MAX_ENHANCE = 0.9             # enhancement factor 1 +- 0.9 * level


def _blend(degenerate, images, factor):
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), back to uint8.

    degenerate: broadcastable to images (k, H, W, C); factor: (k,) per image.
    """
    f = factor.reshape(-1, 1, 1, 1).astype(np.float32)
    d = degenerate.astype(np.float32)
    out = d + f * (images.astype(np.float32) - d)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _grayscale(images):
    """(k, H, W, C) uint8 -> (k, H, W, 1) float32 luma (ITU-R 601, as PIL's "L")."""
    x = images.astype(np.float32)
    if images.shape[-1] == 3:
        return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return x.mean(axis=-1, keepdims=True)


def _autocontrast(images):
    """Stretch each image's channels to span 0..255 (a flat channel is left alone)."""
    x = images.astype(np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    scale = np.where(span > 0, 255.0 / np.maximum(span, 1.0), 1.0)
    offset = np.where(span > 0, lo, 0.0)
    return np.clip(np.rint((x - offset) * scale), 0, 255).astype(np.uint8)


def _equalize(images):
    """Histogram-equalise each image's channels, following PIL's ImageOps.equalize.

    All (image, channel) histograms are built with one bincount over offset pixel
    values, and the lookup tables with one cumulative sum.
    """
    k, H, W, C = images.shape
    channels = images.transpose(0, 3, 1, 2).reshape(k * C, H * W)          # (K, HW)
    offsets = (np.arange(k * C) * 256)[:, None]
    hist = np.bincount((channels + offsets).ravel(), minlength=k * C * 256)
    hist = hist.reshape(k * C, 256)
    # PIL: step = (pixels - count of the brightest present value) // 255; step 0 (a flat
    # channel) keeps the identity table.
    last = 255 - np.argmax(hist[:, ::-1] > 0, axis=1)
    step = (H * W - hist[np.arange(k * C), last]) // 255
    before = np.cumsum(hist, axis=1) - hist                                # exclusive cumsum
    lut = (step[:, None] // 2 + before) // np.maximum(step, 1)[:, None]
    lut = np.where(step[:, None] > 0, np.minimum(lut, 255), np.arange(256))
    out = np.take_along_axis(lut.astype(np.uint8), channels.astype(np.intp), axis=1)
    return out.reshape(k, C, H, W).transpose(0, 2, 3, 1)


def _sharpness_degenerate(images):
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) on the interior; the border
    pixels keep their values, as in PIL's ImageEnhance.Sharpness."""
    x = images.astype(np.float32)
    out = x.copy()
    H, W = x.shape[1:3]
    if H >= 3 and W >= 3:
        acc = 4.0 * x[:, 1:-1, 1:-1]                 # centre weight 5 = 1 (in the 3x3 sum) + 4
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                acc = acc + x[:, dy:H - 2 + dy, dx:W - 2 + dx]
        out[:, 1:-1, 1:-1] = np.rint(acc / 13.0)
    return out


def _affine(images, a, b, c, d, tx, ty):
    """Nearest-neighbour affine resampling about the image centre, fill 0.

    Each output pixel p takes the input pixel at ``A (p - centre) + centre + t`` with
    A = [[a, b], [c, d]] acting on (x, y); a..ty are (k,) per image.
    """
    k, H, W, _ = images.shape
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(H, dtype=np.float64) - cy,
                         np.arange(W, dtype=np.float64) - cx, indexing="ij")
    col = lambda v: v.reshape(-1, 1, 1)  # noqa: E731  (k,) -> (k, 1, 1)
    src_x = np.rint(col(a) * xx + col(b) * yy + cx + col(tx)).astype(np.intp)
    src_y = np.rint(col(c) * xx + col(d) * yy + cy + col(ty)).astype(np.intp)
    inside = (src_x >= 0) & (src_x < W) & (src_y >= 0) & (src_y < H)
    gathered = images[np.arange(k)[:, None, None], np.clip(src_y, 0, H - 1),
                      np.clip(src_x, 0, W - 1)]
    return np.where(inside[..., None], gathered, np.uint8(0))


def _apply_op(op, images, level, sign):
    """Apply RandAugment operation `op` to images (k, H, W, C) uint8.

    level: (k,) strengths in 0..1; sign: (k,) of +-1 for directional operations.
    """
    k, H, W, _ = images.shape
    zeros, ones = np.zeros(k), np.ones(k)
    if op == "identity":
        return images
    if op == "autocontrast":
        return _autocontrast(images)
    if op == "equalize":
        return _equalize(images)
    if op == "solarize":
        # Invert pixels at or above the threshold; level 0 -> threshold 256 -> no-op.
        thr = (256.0 * (1.0 - level)).reshape(-1, 1, 1, 1)
        return np.where(images >= thr, 255 - images, images)
    if op == "posterize":
        bits = 8 - np.rint(4.0 * level).astype(np.int64)              # 8 .. 4 bits kept
        mask = ((0xFF << (8 - bits)) & 0xFF).astype(np.uint8).reshape(-1, 1, 1, 1)
        return images & mask
    factor = 1.0 + sign * _MAX_ENHANCE * level
    if op == "brightness":
        return _blend(np.zeros((1, 1, 1, 1), np.float32), images, factor)
    if op == "color":
        return _blend(_grayscale(images), images, factor)
    if op == "contrast":
        mean = np.rint(_grayscale(images).mean(axis=(1, 2, 3), keepdims=True))
        return _blend(mean, images, factor)
    if op == "sharpness":
        return _blend(_sharpness_degenerate(images), images, factor)
    if op == "rotate":
        theta = np.deg2rad(sign * _MAX_ROTATE_DEG * level)
        cos, sin = np.cos(theta), np.sin(theta)
        return _affine(images, cos, -sin, sin, cos, zeros, zeros)
    if op == "shear_x":
        return _affine(images, ones, sign * _MAX_SHEAR * level, zeros, ones, zeros, zeros)
    if op == "shear_y":
        return _affine(images, ones, zeros, sign * _MAX_SHEAR * level, ones, zeros, zeros)
    # Translations move the content by +shift pixels (right / down for sign +1): the
    # sampler reads the source at p - shift.
    if op == "translate_x":
        return _affine(images, ones, zeros, zeros, ones,
                       -np.rint(sign * _MAX_TRANSLATE * level * W), zeros)
    if op == "translate_y":
        return _affine(images, ones, zeros, zeros, ones, zeros,
                       -np.rint(sign * _MAX_TRANSLATE * level * H))
    raise DataError(f"rand_augment: unknown operation {op!r}; choose from {RAND_AUGMENT_OPS}")


def rand_augment(images_uint8, rng, num_ops=2, magnitude=9, ops=None, magnitude_std=0.0):
    """RandAugment: apply `num_ops` operations, each chosen uniformly per image.

    images_uint8: (B, H, W, C) uint8 (C = 3 for the colour operations to mean what they
    say; other C fall back to the channel mean as "grey"). rng: numpy Generator.
    num_ops: operations applied in sequence to every image. magnitude: strength on the
    0..10 scale (the paper's M; 9 is the DeiT/timm default). ops: subset of
    `RAND_AUGMENT_OPS` to draw from (default all). magnitude_std: if > 0, each image's
    magnitude is drawn from N(magnitude, magnitude_std) clipped to 0..10 (timm's "mstd").

    Returns (B, H, W, C) uint8, a new array.
    """
    images = _check_images(images_uint8, "rand_augment images", uint8=True)
    rng = _check_rng(rng)
    ops = tuple(RAND_AUGMENT_OPS if ops is None else ops)
    unknown = [op for op in ops if op not in RAND_AUGMENT_OPS]
    if unknown or not ops:
        raise DataError(f"rand_augment: unknown or empty ops {unknown or ops}; choose "
                        f"from {RAND_AUGMENT_OPS}")
    if isinstance(num_ops, bool) or not isinstance(num_ops, (int, np.integer)) or num_ops < 0:
        raise DataError(f"rand_augment: num_ops must be an int >= 0, got {num_ops!r}")
    if not 0.0 <= magnitude <= _MAX_MAGNITUDE or not magnitude_std >= 0.0:
        raise DataError(f"rand_augment: magnitude must be in 0..10 and magnitude_std >= 0, "
                        f"got {magnitude!r}, {magnitude_std!r}")
    out = images.copy()
    B = out.shape[0]
    for _ in range(int(num_ops)):
        # Draw every random number for this round up front, in a fixed order, so the
        # result depends only on the generator state (not on which ops happen to occur).
        choice = rng.integers(0, len(ops), size=B)
        sign = np.where(rng.random(B) < 0.5, -1.0, 1.0)
        if magnitude_std > 0:
            mags = np.clip(rng.normal(magnitude, magnitude_std, size=B), 0, _MAX_MAGNITUDE)
        else:
            mags = np.full(B, float(magnitude))
        level = mags / _MAX_MAGNITUDE
        for op_index in np.unique(choice):
            idx = np.flatnonzero(choice == op_index)
            out[idx] = _apply_op(ops[op_index], out[idx], level[idx], sign[idx])
    return out


# ----------------------------------------------------------------------------------------
# Soft-target mixing
# ----------------------------------------------------------------------------------------

def one_hot(labels, num_classes, dtype=np.float32):
    """labels: (B,) ints in 0..num_classes-1. Returns (B, num_classes) of 0/1 in `dtype`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"one_hot: labels must be a 1-D int array, got {labels.dtype} "
                        f"of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"one_hot: labels span {labels.min()}..{labels.max()}, outside "
                        f"0..{num_classes - 1}")
    out = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _check_mix_args(x, y_onehot, alpha, name):
    x = _check_images(x, f"{name} x")
    y = np.asarray(y_onehot)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise DataError(f"{name}: targets must be (B, classes) with B = {x.shape[0]}, "
                        f"got shape {y.shape}")
    if not alpha > 0:
        raise DataError(f"{name}: alpha must be > 0, got {alpha!r}")
    float_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    y_dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float32
    return x, y, float_dtype, y_dtype


def mixup(x, y_onehot, alpha, rng):
    """mixup (Zhang et al. 2018): blend each image and target with a partner's.

    x: (B, H, W, C); y_onehot: (B, classes) targets (rows summing to 1). alpha > 0: the
    Beta(alpha, alpha) parameter. One lambda per batch; partners are a random permutation.
    rng draws ``beta`` then ``permutation``.

    Returns x_mixed: (B, H, W, C) float (float32 unless x is float64) and
    y_mixed: (B, classes) = lam * y + (1 - lam) * y[perm], rows still summing to 1.
    """
    x, y, fdt, ydt = _check_mix_args(x, y_onehot, alpha, "mixup")
    rng = _check_rng(rng)
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(x.shape[0])
    xf = x.astype(fdt)
    x_mixed = lam * xf + (1.0 - lam) * xf[perm]
    y_mixed = lam * y.astype(ydt) + (1.0 - lam) * y.astype(ydt)[perm]
    return x_mixed.astype(fdt, copy=False), y_mixed.astype(ydt, copy=False)


def cutmix(x, y_onehot, alpha, rng):
    """CutMix (Yun et al. 2019): paste a partner's rectangle into each image.

    x: (B, H, W, C); y_onehot: (B, classes). alpha > 0. One box per batch, of area about
    (1 - lam) * H * W for lam ~ Beta(alpha, alpha), centred uniformly and clipped to the
    image; the targets use the *clipped* box, so target weight = pixel proportion
    exactly. rng draws ``beta``, the centre (y then x), then ``permutation``.

    Returns x_mixed: (B, H, W, C) float and y_mixed: (B, classes) with
    y_mixed = lam' * y + (1 - lam') * y[perm], lam' = 1 - box_area / (H * W).
    """
    x, y, fdt, ydt = _check_mix_args(x, y_onehot, alpha, "cutmix")
    rng = _check_rng(rng)
    B, H, W, _ = x.shape
    lam = float(rng.beta(alpha, alpha))
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(H * ratio), int(W * ratio)
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    y0, y1 = np.clip(cy - cut_h // 2, 0, H), np.clip(cy + cut_h // 2, 0, H)
    x0, x1 = np.clip(cx - cut_w // 2, 0, W), np.clip(cx + cut_w // 2, 0, W)
    perm = rng.permutation(B)
    x_mixed = x.astype(fdt)                      # a copy, so x itself is untouched
    x_mixed[:, y0:y1, x0:x1] = x_mixed[perm, y0:y1, x0:x1]
    lam_box = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    yf = y.astype(ydt)
    y_mixed = lam_box * yf + (1.0 - lam_box) * yf[perm]
    return x_mixed, y_mixed.astype(ydt, copy=False)


# ----------------------------------------------------------------------------------------
# The training/eval transform
# ----------------------------------------------------------------------------------------

class _EvalTransform:
    """transform(x_uint8, y, rng=None) -> (normalize(x), y): deterministic eval pipeline.

    A small class rather than a lambda so it pickles (e.g. into worker processes)."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x, y, rng=None):
        return normalize(x, self.mean, self.std), y

    def __repr__(self):
        return f"EvalTransform(mean={self.mean}, std={self.std})"


class Augmenter:
    """The training transform: [RandAugment] -> crop -> flip -> normalise -> [mix].

    Augmenter(crop_padding=4, flip=True, rand_augment=None | (num_ops, magnitude),
              mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=1.0, num_classes=10,
              mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_mode="zero", switch_prob=0.5)

    Calling it as ``aug(x_uint8, y_int, rng)`` with x: (B, H, W, C) uint8, y: (B,) ints and
    a numpy Generator returns x: (B, H, W, C) float32 normalised and, when no mixing is
    configured (see `mixing`: an alpha > 0 and mix_prob > 0), the int labels y unchanged;
    otherwise soft targets (B, num_classes) float32 (one-hot for batches that the
    `mix_prob` draw leaves unmixed). When both
    alphas are set, each mixed batch uses cutmix with probability `switch_prob`, else
    mixup (timm's convention). Holds only plain values, so it pickles.
    """

    def __init__(self, crop_padding=4, flip=True, rand_augment=None, mixup_alpha=0.0,
                 cutmix_alpha=0.0, mix_prob=1.0, num_classes=10, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, crop_mode="zero", switch_prob=0.5):
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, (int, np.integer)) \
                or crop_padding < 0:
            raise DataError(f"Augmenter: crop_padding must be an int >= 0, got {crop_padding!r}")
        if rand_augment is not None:
            try:
                n, m = rand_augment
            except (TypeError, ValueError):
                raise DataError(f"Augmenter: rand_augment must be None or (num_ops, "
                                f"magnitude), got {rand_augment!r}") from None
            rand_augment = (int(n), float(m))
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not value >= 0:
                raise DataError(f"Augmenter: {name} must be >= 0, got {value!r}")
        for name, value in (("mix_prob", mix_prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise DataError(f"Augmenter: {name} must be in [0, 1], got {value!r}")
        if len(tuple(mean)) != len(tuple(std)):
            raise DataError("Augmenter: mean and std must have one value per channel")
        self.crop_padding = int(crop_padding)
        self.crop_mode = crop_mode
        self.flip = bool(flip)
        self.rand_augment = rand_augment
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.mix_prob = float(mix_prob)
        self.switch_prob = float(switch_prob)
        self.num_classes = int(num_classes)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    @property
    def mixing(self) -> bool:
        """True if __call__ returns soft targets (mixup or cutmix configured)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def __call__(self, x_uint8, y_int, rng):
        """x_uint8: (B, H, W, C) uint8; y_int: (B,) ints; rng: numpy Generator.

        Returns (x: (B, H, W, C) float32, y: (B,) ints or (B, num_classes) float32)."""
        x = _check_images(x_uint8, "Augmenter input", uint8=True)
        rng = _check_rng(rng)
        y = np.asarray(y_int)
        if y.shape != (x.shape[0],):
            raise DataError(f"Augmenter: labels must have shape ({x.shape[0]},), got {y.shape}")
        if self.rand_augment is not None:
            x = rand_augment(x, rng, *self.rand_augment)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, rng, mode=self.crop_mode)
        if self.flip:
            x = random_flip(x, rng)
        xf = normalize(x, self.mean, self.std)
        if not self.mixing:
            return xf, y
        # Mixing after normalisation is equivalent (normalisation is affine per channel)
        # and saves a second pass over the mixed floats.
        targets = one_hot(y, self.num_classes)
        # Both draws happen every batch so the stream of random numbers has a fixed shape.
        do_mix = rng.random() < self.mix_prob
        use_cutmix = rng.random() < self.switch_prob
        if do_mix:
            if self.cutmix_alpha > 0 and (use_cutmix or self.mixup_alpha <= 0):
                xf, targets = cutmix(xf, targets, self.cutmix_alpha, rng)
            else:
                xf, targets = mixup(xf, targets, self.mixup_alpha, rng)
        return xf.astype(np.float32, copy=False), targets.astype(np.float32, copy=False)

    def prepare_eval(self, x_uint8):
        """x_uint8: (B, H, W, C) uint8 -> (B, H, W, C) float32, normalised only."""
        return normalize(x_uint8, self.mean, self.std)

    def eval(self):
        """The matching eval transform: a callable (x_uint8, y, rng=None) -> (x, y) that only
        normalises; usable with `iterate_eval` and `BatchLoader`."""
        return _EvalTransform(self.mean, self.std)

    def __repr__(self):
        return (f"Augmenter(crop_padding={self.crop_padding}, flip={self.flip}, "
                f"rand_augment={self.rand_augment}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha}, mix_prob={self.mix_prob}, "
                f"num_classes={self.num_classes})")
