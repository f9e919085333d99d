"""One entry point for every data set a command can train or evaluate on.

``load_dataset(spec, …)`` takes what a user names — ``"cifar10"``, ``"synthetic"``, a
folder of their own images (one sub-folder per class), or the ``"source"`` record a
checkpoint saved — and returns the same dict as :func:`minivit.data.load_cifar10`:
x_train (n, S, S, C) uint8, y_train (n,) int64, x_test, y_test, classes, and ``source``
(what to save in a checkpoint to find the same data again).
"""
from __future__ import annotations

from pathlib import Path

from minivit.errors import DataError


def load_dataset(spec="cifar10", image_size=32, *, data_dir=None, limit_train=None,
                 limit_test=None, seed=0, num_classes=10, test_fraction=0.2) -> dict:
    """Load the data set ``spec`` names.

    spec: ``"cifar10"`` (found in ``data_dir`` / ``$MINIVIT_DATA_DIR`` / the cache, see
    :func:`~minivit.data.load_cifar10`), ``"synthetic"`` (a small generated set of
    ``num_classes`` classes, no files), a folder path (folder-per-class images, see
    :func:`~minivit.data.folder.load_folder_dataset`, resized to ``image_size``), or a
    checkpoint's ``source`` dict. limit_train, limit_test: keep that many images.
    Returns the data dict described in the module docstring.
    """
    if isinstance(spec, dict):                    # a checkpoint's record of its data
        if spec.get("kind") != "image-folder" or not isinstance(spec.get("folder"), str):
            raise DataError(f"unknown data source record {spec!r:.120}")
        return load_dataset(spec["folder"], image_size, limit_train=limit_train,
                            limit_test=limit_test, seed=int(spec.get("seed", 0)),
                            test_fraction=float(spec.get("test_fraction", test_fraction)))
    if spec == "cifar10":
        from minivit.data.cifar10 import load_cifar10
        d = load_cifar10(data_dir, limit_train=limit_train, limit_test=limit_test)
        if image_size != 32:
            raise DataError(f"CIFAR-10 images are 32x32, the model expects "
                            f"{image_size}x{image_size}")
        return dict(d, source={"kind": "cifar10"})
    if spec == "synthetic":
        from minivit.data.synthetic import make_synthetic
        d = make_synthetic(n_train=limit_train or 1024, n_test=limit_test or 256,
                           image_size=image_size, num_classes=num_classes, seed=seed)
        return dict(d, source={"kind": "synthetic"})
    from minivit.data.folder import load_folder_dataset
    if not Path(str(spec)).expanduser().is_dir():
        raise DataError(f"data {spec!r}: not cifar10, synthetic, or an existing folder of "
                        f"images (one sub-folder per class)")
    return load_folder_dataset(spec, image_size, test_fraction, seed,
                               limit_train=limit_train, limit_test=limit_test)


def checkpoint_meta(data: dict) -> dict:
    """What a checkpoint should remember of the data it was trained on: the class names
    (so predict and eval print them) and, for an image folder, where it is and how it was
    split (so ``minivit eval`` finds the same held-out images)."""
    meta = {}
    if "classes" in data:
        meta["classes"] = [str(c) for c in data["classes"]]
    source = data.get("source")
    if isinstance(source, dict) and source.get("kind") == "image-folder":
        meta["data_source"] = dict(source)
    return meta
