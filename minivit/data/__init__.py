"""Data: CIFAR-10 loading (cifar10), augmentation (augment), mini-batches (batches)."""
from minivit.data.augment import (
    CIFAR10_MEAN, CIFAR10_STD, RAND_AUGMENT_OPS, Augmenter, cutmix, mixup, normalize,
    one_hot, rand_augment, random_crop, random_flip,
)
from minivit.data.batches import BatchLoader, iterate_eval
from minivit.data.cifar10 import (
    ARCHIVE_NAME, CLASSES, DIR_NAME, OFFICIAL_MD5, OFFICIAL_URL, RECORD_BYTES,
    default_data_dir, download, extract_archive, load_cifar10, read_batch,
)

__all__ = [
    "ARCHIVE_NAME", "CLASSES", "DIR_NAME", "OFFICIAL_MD5", "OFFICIAL_URL", "RECORD_BYTES",
    "default_data_dir", "download", "extract_archive", "load_cifar10", "read_batch",
    "CIFAR10_MEAN", "CIFAR10_STD", "RAND_AUGMENT_OPS", "Augmenter", "cutmix", "mixup",
    "normalize", "one_hot", "rand_augment", "random_crop", "random_flip",
    "BatchLoader", "iterate_eval",
]
