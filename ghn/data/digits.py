"""The 'digits' task: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), no download needed.

Data: the UCI optical recognition of handwritten digits test set, https://archive.ics.uci.edu/dataset/80.
"""

from __future__ import annotations

import numpy as np
import torch

from ghn._checks import check_choice_arg, check_int_arg
from ghn._logging import get_logger
from ghn.data.images import ImageTensorDataset, RandomCropFlip, channel_stats, resize_images
from ghn.data.task import TASKS, TaskData, TaskSpec

__all__ = ["load_digits", "DIGITS_SPLIT", "DIGITS_SEED"]

logger = get_logger(__name__)

DIGITS_SEED = 0
"""Seed of the `numpy.random.RandomState` permutation that assigns images to splits."""
DIGITS_SPLIT = (1257, 270, 270)
"""Images in (train, val, test): positions [0, 1257), [1257, 1527), [1527, 1797) of the permutation."""


def load_digits(*, image_size: int = 8, in_channels: int = 1, augment: bool = False) -> TaskData:
    """The digits task, split 1257/270/270 by a fixed permutation and normalized with the train split's mean/std.

    The permutation is `numpy.random.RandomState(0).permutation(1797)` (NumPy's legacy generator, whose stream is
    frozen across NumPy versions): its first 1257 entries are train, the next 270 val, the last 270 test. Pixels
    (0..16) are scaled to [0, 1], resized once (bilinear) and kept in memory, 22 MB at 3x32x32.

    Args:
        image_size: Height and width of the images; 32 gives CIFAR-sized inputs.
        in_channels: 1 (gray) or 3 (gray copied to RGB, for networks built for color images).
        augment: Shift training images randomly by up to max(1, image_size // 8) pixels (1 px at 8x8, 4 px at 32x32),
            filling with background; no flips, since digits are not mirror-symmetric.

    Returns:
        An image task with 10 classes; `mean`/`std` are the train split's, the same value for every channel.

    Raises:
        ConfigError: `image_size` < 1 or `in_channels` not 1 or 3.
    """
    check_int_arg("image_size", image_size)
    check_choice_arg("in_channels", in_channels, (1, 3))
    from sklearn.datasets import load_digits as _load_sklearn_digits  # imported here: sklearn takes ~1 s to import

    bunch = _load_sklearn_digits()
    images = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    images = resize_images(images, image_size).clamp_(0.0, 1.0).expand(-1, in_channels, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target).long()  # (1797,)

    order = torch.from_numpy(np.random.RandomState(DIGITS_SEED).permutation(len(images)))
    num_train, num_val, _ = DIGITS_SPLIT
    index = {
        "train": order[:num_train],
        "val": order[num_train : num_train + num_val],
        "test": order[num_train + num_val :],
    }
    mean, std = channel_stats(images[index["train"]])
    augmenter = RandomCropFlip(max(1, image_size // 8), use_flip=False) if augment else None
    splits = {
        name: ImageTensorDataset(
            images[ids], labels[ids], mean=mean, std=std, augment=augmenter if name == "train" else None
        )
        for name, ids in index.items()
    }
    logger.info(
        "Loaded task 'digits': 1257/270/270 images of %dx%dx%d, 10 classes.", in_channels, image_size, image_size
    )
    return TaskData(
        name="digits",
        kind="image",
        **splits,
        num_classes=10,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        class_names=tuple(str(c) for c in bunch.target_names),
    )


TASKS.register(
    "digits", TaskSpec(name="digits", kind="image", load=load_digits, summary="sklearn 8x8 digits, 10 classes")
)
