"""Your own images: a folder per class, the layout torchvision's ``ImageFolder`` and
Keras' ``image_dataset_from_directory`` read::

    photos/                      or, with the split given:   photos/train/cats/…
      cats/   a.jpg  b.png …                                  photos/train/dogs/…
      dogs/   …                                               photos/test/cats/…  (or val/)

Class names are the sub-folder names in sorted order (class i is the i-th name), as in
torchvision. Every image is read with :func:`minivit.data.images.read_image` (PNG, JPEG,
… or (H, W, 3) uint8 ``.npy``) and resized to the model's (S, S). Without ``train/`` and
``test/`` (or ``val/``) folders, a fixed share of every class (``test_fraction``) is held
out as the test split, chosen by a seeded shuffle: the same split every time, so
``minivit eval`` sees exactly the images training never did.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minivit.data.images import IMAGE_SUFFIXES, load_image
from minivit.errors import DataError

TRAIN_NAMES = ("train",)
TEST_NAMES = ("test", "val", "validation")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted, hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def scan_image_folder(root):
    """The images of a folder-per-class tree, without reading them.

    root: a folder whose sub-folders are the classes. Returns (paths: list of N files,
    labels: (N,) int64, classes: tuple of C names, sorted). Raises DataError when the
    folder does not exist, has no class sub-folders, or a class folder holds no image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    classes = tuple(sorted(d.name for d in root.iterdir()
                           if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected "
                        f"{root}/<class name>/<images>, one folder per class)")
    if len(classes) < 2:
        raise DataError(f"image folder {root} has one class folder ({classes[0]}); a "
                        f"classifier needs at least two")
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = _image_files(root / name)
        if not files:
            raise DataError(f"class folder {root / name} holds no images (looked for "
                            f"{', '.join(IMAGE_SUFFIXES)})")
        paths += files
        labels += [c] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def load_image_folder(root, image_size):
    """Read a folder-per-class tree into arrays.

    Returns (images: (N, S, S, 3) uint8 with S = image_size, labels: (N,) int64,
    classes: tuple of C names). Raises DataError naming the first unreadable image (a
    training set with a corrupt file is not silently shrunk).
    """
    paths, labels, classes = scan_image_folder(root)
    images = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for i, p in enumerate(paths):
        images[i] = load_image(p, image_size)
    return images, labels, classes


def _split_dirs(root: Path):
    """(train dir, test dir) when ``root`` holds an explicit split, else None."""
    train = next((root / n for n in TRAIN_NAMES if (root / n).is_dir()), None)
    test = next((root / n for n in TEST_NAMES if (root / n).is_dir()), None)
    return (train, test) if train is not None and test is not None else None


def held_out_split(labels, test_fraction, seed=0):
    """Indices (train, test) holding out ``test_fraction`` of every class.

    labels: (N,) ints. Per class of n images, round(test_fraction · n) go to the test
    split (at least 1 when n >= 2 and test_fraction > 0, never all n), chosen by a
    seeded permutation. Returns two sorted int64 index arrays.
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(test_fraction * len(idx)))
        if test_fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _limited(x, y, limit, seed):
    """The first ``limit`` images after a seeded shuffle (so a limit keeps every class)."""
    order = np.random.default_rng(seed).permutation(len(y))
    if limit is not None:
        order = order[:limit]
    return x[order], y[order]


def load_folder_dataset(root, image_size, test_fraction=0.2, seed=0, *, limit_train=None,
                        limit_test=None) -> dict:
    """A folder of your own images as a train/test data set, in the same form as
    :func:`minivit.data.load_cifar10`.

    root: a folder-per-class tree, or one holding ``train/`` and ``test/`` (or ``val/``)
    folder-per-class trees. image_size: S, every image is resized to (S, S).
    test_fraction, seed: the held-out share of each class and the split's seed when there
    is no explicit split. limit_train, limit_test: keep that many images (a seeded
    random subset, every class represented in expectation).

    Returns {"x_train": (n, S, S, 3) uint8, "y_train": (n,) int64, "x_test", "y_test",
    "classes": tuple of C names, "source": dict describing the data (folder, split) —
    saved in a checkpoint so ``minivit eval`` finds the same test images}.
    Raises DataError for a missing folder, no classes, an empty class, an unreadable
    image, train and test folders with different classes, or an empty test split.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    source = {"kind": "image-folder", "folder": str(root.resolve())}
    split = _split_dirs(root)
    if split is not None:
        x_tr, y_tr, classes = load_image_folder(split[0], image_size)
        x_te, y_te, test_classes = load_image_folder(split[1], image_size)
        if test_classes != classes:
            raise DataError(f"{split[0]} has classes {list(classes)} but {split[1]} has "
                            f"{list(test_classes)}; both need the same class folders")
        source["split"] = "folders"
    else:
        x, y, classes = load_image_folder(root, image_size)
        tr, te = held_out_split(y, test_fraction, seed)
        if len(te) == 0:
            raise DataError(f"image folder {root}: test_fraction {test_fraction} holds out "
                            f"no image; add images or raise it")
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        source.update(split="held-out", test_fraction=float(test_fraction), seed=int(seed))
    x_tr, y_tr = _limited(x_tr, y_tr, limit_train, seed)
    x_te, y_te = _limited(x_te, y_te, limit_test, seed + 1)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
            "classes": tuple(classes), "source": source}
