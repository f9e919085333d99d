"""A small learnable synthetic image set with the CIFAR-10 layout, for demos and tests.

Each class is a fixed random 4×4 colour pattern upsampled to the image size, shifted by a
random offset and covered with noise, so a ViT can learn it in a few hundred steps while
it still exercises the whole pipeline (uint8 pixels, augmentation, batching).
"""
import numpy as np


def make_synthetic(n_train=512, n_test=256, image_size=32, num_classes=10, seed=0,
                   noise=40.0):
    """Returns a dict like ``load_cifar10``: x_train (n_train, S, S, 3) uint8, y_train
    (n_train,) int64, x_test, y_test, classes (names "class0"…)."""
    rng = np.random.default_rng(seed)
    reps = -(-image_size // 4)
    protos = rng.integers(0, 256, size=(num_classes, 4, 4, 3)).astype(np.float64)
    protos = np.repeat(np.repeat(protos, reps, axis=1), reps, axis=2)[:, :image_size, :image_size]

    def draw(n):
        y = rng.integers(0, num_classes, size=n)
        x = protos[y]
        shift = rng.integers(-2, 3, size=(n, 2))
        x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shift)])
        x = x + rng.normal(0.0, noise, size=x.shape)
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "classes": tuple(f"class{i}" for i in range(num_classes))}
