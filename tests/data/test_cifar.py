"""The 'cifar10' and 'cifar100' tasks on tiny pickle folders in the official format."""

from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ghn.data import load_cifar10, load_cifar100
from ghn.data.cifar import CIFAR10, CIFAR100
from ghn.errors import ConfigError


def test_cifar10_splits_labels_and_names(cifar10_root: Path):
    task = load_cifar10(root=cifar10_root, val_size=4)
    assert (len(task.train), len(task.val), len(task.test)) == (16, 4, 6)
    assert task.num_classes == 10 and task.in_channels == 3 and task.image_size == 32
    assert task.class_names == tuple(f"class{i}" for i in range(10))
    assert task.mean == CIFAR10.mean and task.std == CIFAR10.std
    # val is the last 4 training images: batch 5 holds labels (20 + j) % 10.
    assert [task.val[i][1] for i in range(4)] == [0, 1, 2, 3]
    assert [task.test[i][1] for i in range(6)] == list(range(6))


def test_cifar10_pixels_are_read_as_rgb_planes_and_normalized(cifar10_root: Path):
    with (cifar10_root / "cifar-10-batches-py" / "test_batch").open("rb") as file:
        rows = pickle.load(file, encoding="bytes")[b"data"]
    x, _ = load_cifar10(root=cifar10_root, val_size=4).test[1]
    expected = torch.from_numpy(rows[1].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(CIFAR10.mean).view(3, 1, 1), torch.tensor(CIFAR10.std).view(3, 1, 1)
    torch.testing.assert_close(x, (expected - mean) / std)


def test_root_may_be_the_extracted_folder_itself(cifar10_root: Path):
    task = load_cifar10(root=cifar10_root / "cifar-10-batches-py", val_size=1)
    assert len(task.train) == 19


def test_cifar100_fine_labels(cifar100_root: Path):
    task = load_cifar100(root=cifar100_root, val_size=2)
    assert (len(task.train), len(task.val), len(task.test)) == (10, 2, 5)
    assert task.num_classes == 100 and len(task.class_names) == 100
    assert task.mean == CIFAR100.mean
    assert [task.train[i][1] for i in range(3)] == [90, 91, 92]
    assert [task.val[i][1] for i in range(2)] == [0, 1]


def test_augment_and_resize_options(cifar10_root: Path):
    task = load_cifar10(root=cifar10_root, val_size=4, augment=True, image_size=16)
    assert repr(task.train.augment) == "RandomCropFlip(pad=4, use_flip=True)"
    assert task.val.augment is None and task.test.augment is None
    assert task.train[0][0].shape == task.test[0][0].shape == (3, 16, 16)
    assert task.input_shape == (3, 16, 16)


def test_missing_folder_says_what_to_put_where(tmp_path: Path):
    expected = re.escape(str(tmp_path / "cifar-10-batches-py"))
    with pytest.raises(ConfigError, match=f"Expected CIFAR-10 at '{expected}'.*cs.toronto.edu.*pass root="):
        load_cifar10(root=tmp_path)
    with pytest.raises(ConfigError, match="Expected CIFAR-100 at .*cifar-100-python"):
        load_cifar100(root=tmp_path)


def test_missing_batch_file(cifar10_root: Path):
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="Missing CIFAR-10 file .*data_batch_3"):
        load_cifar10(root=cifar10_root, val_size=4)


def test_val_size_must_leave_training_images(cifar10_root: Path):
    with pytest.raises(ConfigError, match="'val_size' must be below the 20 training images of CIFAR-10, got 20"):
        load_cifar10(root=cifar10_root, val_size=20)


def test_pickles_with_other_objects_are_refused(cifar10_root: Path):
    path = cifar10_root / "cifar-10-batches-py" / "test_batch"
    with path.open("wb") as file:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": collections.OrderedDict()}, file)
    with pytest.raises(ConfigError, match="not a readable CIFAR-10 pickle.*collections.OrderedDict.*not allowed"):
        load_cifar10(root=cifar10_root, val_size=4)
