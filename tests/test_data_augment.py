"""Augmentation: shapes, dtypes, ranges, determinism, and the exact identities."""
import pickle

import numpy as np
import pytest

from minivit.data.augment import (
    CIFAR10_MEAN, CIFAR10_STD, RAND_AUGMENT_OPS, Augmenter, _apply_op, _equalize, cutmix,
    mixup, normalize, one_hot, rand_augment, random_crop, random_flip,
)
from minivit.errors import DataError


def batch(b=16, h=32, w=32, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8)


def rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------
# normalize
# ----------------------------------------------------------------------------------------

def test_normalize_values():
    x = batch(4)
    out = normalize(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    ref = (x / 255.0 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert normalize(x, dtype=np.float64).dtype == np.float64


def test_normalize_accepts_float_in_0_255():
    x = batch(2)
    np.testing.assert_allclose(normalize(x.astype(np.float32)), normalize(x), atol=1e-6)
    np.testing.assert_allclose(normalize(x.astype(np.int64)), normalize(x), atol=1e-6)


def test_normalize_refuses_0_1_floats():
    x = batch(2).astype(np.float32) / 255.0
    with pytest.raises(DataError, match="pass uint8 images or scale them"):
        normalize(x)


@pytest.mark.parametrize("bad, match", [
    (np.full((1, 2, 2, 3), 300.0), "outside 0..255"),
    (np.full((1, 2, 2, 3), -1.0), "outside 0..255"),
    (np.array([[[[np.nan, 1, 2]]]]), "NaN"),
    (np.array([[[[np.inf, 1, 2]]]]), "NaN or infinite"),
    (np.full((1, 2, 2, 4), 3, np.uint8), "channels"),
    (np.ones((1, 2, 2, 3), bool), "dtype bool"),
])
def test_normalize_refuses_bad_input(bad, match):
    with pytest.raises(DataError, match=match):
        normalize(bad)


# ----------------------------------------------------------------------------------------
# crop and flip
# ----------------------------------------------------------------------------------------

def test_crop_padding_zero_is_identity():
    x = batch()
    out = random_crop(x, 0, rng())
    np.testing.assert_array_equal(out, x)
    assert out is not x


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crop_shape_determinism_and_content(mode):
    x = batch(32)
    a = random_crop(x, 4, rng(1), mode=mode)
    b = random_crop(x, 4, rng(1), mode=mode)
    c = random_crop(x, 4, rng(2), mode=mode)
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # each output equals the padded image shifted by that image's own offset
    offsets = rng(1).integers(0, 9, size=(32, 2))
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)),
                    mode="constant" if mode == "zero" else "reflect")
    for i in (0, 7, 31):
        oy, ox = offsets[i]
        np.testing.assert_array_equal(a[i], padded[i, oy:oy + 32, ox:ox + 32])
    assert len({tuple(o) for o in offsets}) > 1               # offsets differ per image


def test_crop_rejects_bad_args():
    with pytest.raises(DataError, match="padding"):
        random_crop(batch(), -1, rng())
    with pytest.raises(DataError, match="mode"):
        random_crop(batch(), 2, rng(), mode="wrap")
    with pytest.raises(DataError, match="Generator"):
        random_crop(batch(), 2, np.random.RandomState(0))
    with pytest.raises(DataError, match=r"\(B, H, W, C\)"):
        random_crop(batch()[0], 2, rng())


def test_flip():
    x = batch(64)
    np.testing.assert_array_equal(random_flip(random_flip(x, rng(), p=1.0), rng(), p=1.0), x)
    np.testing.assert_array_equal(random_flip(x, rng(), p=1.0), x[:, :, ::-1])
    np.testing.assert_array_equal(random_flip(x, rng(), p=0.0), x)
    a, b = random_flip(x, rng(3)), random_flip(x, rng(3))
    np.testing.assert_array_equal(a, b)
    flipped = [np.array_equal(a[i], x[i, :, ::-1]) for i in range(64)]
    assert 10 < sum(flipped) < 54                          # about half, per image


# ----------------------------------------------------------------------------------------
# RandAugment
# ----------------------------------------------------------------------------------------

def test_rand_augment_shape_dtype_determinism():
    x = batch(32)
    a = rand_augment(x, rng(5), num_ops=2, magnitude=9)
    b = rand_augment(x, rng(5), num_ops=2, magnitude=9)
    c = rand_augment(x, rng(6), num_ops=2, magnitude=9)
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(rand_augment(x, rng(), num_ops=0), x)
    d = rand_augment(x, rng(5), magnitude_std=0.5)
    np.testing.assert_array_equal(d, rand_augment(x, rng(5), magnitude_std=0.5))


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_each_op_shape_dtype_and_zero_magnitude(op):
    x = batch(6, 32, 32, 3)
    level, sign = np.full(6, 0.9), np.where(np.arange(6) % 2, 1.0, -1.0)
    out = _apply_op(op, x, level, sign)
    assert out.shape == x.shape and out.dtype == np.uint8
    if op not in ("identity", "autocontrast", "equalize"):
        # magnitude 0 leaves the images untouched (these ops have a strength)
        np.testing.assert_array_equal(_apply_op(op, x, np.zeros(6), sign), x)


def test_geometric_ops_move_pixels_exactly():
    x = batch(2, 8, 8, 3)
    level = np.full(2, 1.0)                                  # translate 0.45 * 8 = 3.6 -> 4 px
    right = _apply_op("translate_x", x, level, np.ones(2))
    np.testing.assert_array_equal(right[:, :, 4:], x[:, :, :4])
    assert (right[:, :, :4] == 0).all()
    down = _apply_op("translate_y", x, level, -np.ones(2))
    np.testing.assert_array_equal(down[:, :4], x[:, 4:])
    # a 90-degree rotation through the same sampler is an exact quarter turn
    from minivit.data.augment import _affine
    quarter = _affine(x, np.zeros(2), -np.ones(2), np.ones(2), np.zeros(2),
                      np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(quarter, np.rot90(x, k=1, axes=(1, 2)))


def test_color_ops_on_known_values():
    x = np.full((1, 4, 4, 3), 100, np.uint8)
    x[0, 0, 0] = (200, 10, 0)
    assert (_apply_op("solarize", x, np.array([0.5]), np.ones(1))[0, 0, 0] == (55, 10, 0)).all()
    assert (_apply_op("posterize", x, np.array([1.0]), np.ones(1))[0, 1, 1] == 96).all()
    np.testing.assert_array_equal(
        _apply_op("brightness", x, np.array([1.0]), -np.ones(1)),
        np.rint(x * 0.1).astype(np.uint8))
    grey = np.full((1, 4, 4, 3), 77, np.uint8)                # no colour to remove
    np.testing.assert_array_equal(_apply_op("color", grey, np.array([1.0]), -np.ones(1)), grey)
    auto = _apply_op("autocontrast", x, np.zeros(1), np.ones(1))
    assert auto[..., 0].min() == 0 and auto[..., 0].max() == 255


def test_equalize_flattens_histogram_and_matches_pil_rule():
    r = rng(9)
    x = r.integers(0, 64, (3, 32, 32, 3), dtype=np.uint8)   # dark, low-contrast
    out = _equalize(x)
    assert out.max() > 200                                   # stretched to the full range
    # each channel keeps the order of its pixels (the table is monotone)
    a, b = x[0, ..., 1].ravel(), out[0, ..., 1].ravel()
    order = np.argsort(a, kind="stable")
    assert np.all(np.diff(b[order].astype(int)) >= 0)
    # PIL's loop, written out for one channel
    h = np.bincount(a, minlength=256)
    step = (h.sum() - h[np.flatnonzero(h)[-1]]) // 255
    lut, n = [], step // 2
    for i in range(256):
        lut.append(min(n // step, 255))
        n += h[i]
    np.testing.assert_array_equal(b, np.array(lut)[a])
    flat = np.full((1, 4, 4, 3), 9, np.uint8)                # one value: identity
    np.testing.assert_array_equal(_equalize(flat), flat)


def test_rand_augment_rejects_bad_args():
    with pytest.raises(DataError, match="uint8"):
        rand_augment(batch().astype(np.float32), rng())
    with pytest.raises(DataError, match="magnitude"):
        rand_augment(batch(), rng(), magnitude=11)
    with pytest.raises(DataError, match="unknown"):
        rand_augment(batch(), rng(), ops=("blur",))


# ----------------------------------------------------------------------------------------
# one_hot, mixup, cutmix
# ----------------------------------------------------------------------------------------

def test_one_hot():
    y = one_hot(np.array([0, 3, 9]), 10)
    assert y.dtype == np.float32 and y.shape == (3, 10)
    assert y.sum(axis=1).tolist() == [1, 1, 1] and y[1, 3] == 1
    with pytest.raises(DataError, match="outside"):
        one_hot(np.array([10]), 10)


def constant_images(b=8, h=16, w=16):
    """Image i is filled with value 10*(i+1): which image a pixel came from is visible."""
    values = 10.0 * (np.arange(b) + 1)
    return np.broadcast_to(values[:, None, None, None], (b, h, w, 3)).copy(), values


def test_mixup():
    x, values = constant_images()
    y = one_hot(np.arange(8), 10)
    xm, ym = mixup(x, y, 0.4, rng(2))                       # seed 2: lambda = 0.42
    assert xm.shape == x.shape and xm.dtype == np.float64 and ym.shape == (8, 10)
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    # the pixel mixture and the target mixture use the same lambda and partner:
    # image i is filled with sum_j ym[i, j] * value_j
    np.testing.assert_allclose(xm[:, 0, 0, 0], ym[:, :8] @ values)
    np.testing.assert_allclose(xm, xm[:, :1, :1, :1] * np.ones_like(xm))
    assert np.any((ym > 0.01) & (ym < 0.99))                # something was really mixed
    a = mixup(x.astype(np.uint8), y, 0.4, rng(1))
    b = mixup(x.astype(np.uint8), y, 0.4, rng(1))
    assert a[0].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], mixup(x.astype(np.uint8), y, 0.4, rng(2))[0])


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_lambda_matches_pixel_proportions(seed):
    x, values = constant_images()
    y = one_hot(np.arange(8), 10)
    xm, ym = cutmix(x, y, 1.0, rng(seed))
    assert xm.shape == x.shape and ym.shape == (8, 10)
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(8):
        own = np.mean(xm[i] == values[i])                   # share of pixels still its own
        if ym[i, i] < 1:
            assert ym[i, i] == pytest.approx(own)
            partner = int(np.argmax(ym[i] * (np.arange(10) != i)))
            assert ym[i, partner] == pytest.approx(1 - own)
            assert np.mean(xm[i] == values[partner]) == pytest.approx(1 - own)
    assert np.array_equal(xm, cutmix(x, y, 1.0, rng(seed))[0])


def test_mix_rejects_bad_args():
    x, _ = constant_images()
    with pytest.raises(DataError, match="alpha"):
        mixup(x, one_hot(np.arange(8), 10), 0.0, rng())
    with pytest.raises(DataError, match="targets"):
        cutmix(x, np.zeros(8), 1.0, rng())


# ----------------------------------------------------------------------------------------
# Augmenter
# ----------------------------------------------------------------------------------------

def test_augmenter_default():
    x, y = batch(16), np.arange(16) % 10
    aug = Augmenter()
    xa, ya = aug(x, y, rng(1))
    assert xa.shape == x.shape and xa.dtype == np.float32
    np.testing.assert_array_equal(ya, y)
    xb, _ = aug(x, y, rng(1))
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, aug(x, y, rng(2))[0])
    np.testing.assert_array_equal(aug.prepare_eval(x), normalize(x))
    xe, ye = aug.eval()(x, y)
    np.testing.assert_array_equal(xe, normalize(x))
    np.testing.assert_array_equal(ye, y)


def test_augmenter_without_randomness_is_normalize():
    x, y = batch(4), np.arange(4)
    xa, _ = Augmenter(crop_padding=0, flip=False)(x, y, rng())
    np.testing.assert_array_equal(xa, normalize(x))


@pytest.mark.parametrize("kwargs", [
    {"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0},
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "rand_augment": (2, 9)},
    {"mixup_alpha": 0.8, "mix_prob": 0.5},
])
def test_augmenter_mixing_soft_targets(kwargs):
    x, y = batch(16), np.arange(16) % 10
    aug = Augmenter(**kwargs)
    xa, ya = aug(x, y, rng(4))
    assert xa.dtype == np.float32 and ya.dtype == np.float32 and ya.shape == (16, 10)
    np.testing.assert_allclose(ya.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(xa, aug(x, y, rng(4))[0])
    if "mix_prob" in kwargs:
        # batches the mix_prob draw leaves unmixed still get (one-hot) soft targets
        outs = [aug(x, y, rng(s))[1] for s in range(12)]
        assert any(np.array_equal(t, one_hot(y, 10)) for t in outs)
        assert not all(np.array_equal(t, one_hot(y, 10)) for t in outs)
    aug2 = pickle.loads(pickle.dumps(aug))                  # plain values only: it pickles
    np.testing.assert_array_equal(aug2(x, y, rng(4))[0], xa)


def test_augmenter_mix_prob_zero_means_no_mixing():
    aug = Augmenter(mixup_alpha=0.8, mix_prob=0.0)
    assert not aug.mixing
    y = np.arange(4)
    np.testing.assert_array_equal(aug(batch(4), y, rng())[1], y)


def test_augmenter_rejects_bad_config_and_input():
    with pytest.raises(DataError):
        Augmenter(mix_prob=2.0)
    with pytest.raises(DataError):
        Augmenter(rand_augment=3)
    with pytest.raises(DataError, match="uint8"):
        Augmenter()(batch().astype(np.float32) / 255, np.zeros(16, int), rng())


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_training_settings_choose_the_crop_padding(mode):
    # TrainSettings.crop_mode reaches the training transform: reflect padding (airbench's
    # translate) never shows the black border that zero padding adds to a white image.
    from minivit.config import ViTConfig
    from minivit.objectives import Classification
    from minivit.train import TrainSettings
    s = TrainSettings(crop_padding=2, crop_mode=mode, flip=False)
    aug = Classification().transform(ViTConfig.preset("cifar10-tiny"), s)
    white = np.full((64, 32, 32, 3), 255, np.uint8)
    x, _ = aug(white, np.zeros(64, int), np.random.default_rng(0))
    borders = (x != x[0, 16, 16]).any(axis=-1)            # pixels that are not white
    assert borders.any() == (mode == "zero")
