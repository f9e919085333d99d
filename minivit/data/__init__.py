"""Data: CIFAR-10 loading (cifar10), your own images in a folder per class (folder, read
by images), one entry point for both (sources.load_dataset), augmentation (augment),
mini-batches (batches)."""
from minivit.data.augment import (
    CIFAR10_MEAN, CIFAR10_STD, RAND_AUGMENT_OPS, Augmenter, cutmix, mixup, normalize,
    one_hot, rand_augment, random_crop, random_flip,
)
from minivit.data.batches import BatchLoader, iterate_eval
from minivit.data.cifar10 import (
    ARCHIVE_NAME, CLASSES, DIR_NAME, OFFICIAL_MD5, OFFICIAL_URL, RECORD_BYTES,
    default_data_dir, download, extract_archive, load_cifar10, read_batch,
)
from minivit.data.folder import load_folder_dataset, load_image_folder, scan_image_folder
from minivit.data.images import IMAGE_SUFFIXES, load_image, read_image
from minivit.data.sources import load_dataset

__all__ = [
    "ARCHIVE_NAME", "CLASSES", "DIR_NAME", "OFFICIAL_MD5", "OFFICIAL_URL", "RECORD_BYTES",
    "default_data_dir", "download", "extract_archive", "load_cifar10", "read_batch",
    "CIFAR10_MEAN", "CIFAR10_STD", "RAND_AUGMENT_OPS", "Augmenter", "cutmix", "mixup",
    "normalize", "one_hot", "rand_augment", "random_crop", "random_flip",
    "BatchLoader", "iterate_eval",
    "load_folder_dataset", "load_image_folder", "scan_image_folder", "IMAGE_SUFFIXES",
    "load_image", "read_image", "load_dataset",
]
