"""The 'digits' task: fixed split, determinism, resize/channel options, normalization and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghn.data import ImageTensorDataset, RandomCropFlip, load_digits
from ghn.errors import ShapeError


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_split_sizes_and_labels(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 270, 270)
    assert digits.num_classes == 10 and digits.class_names == tuple("0123456789")
    _, labels = _stack(digits.train)
    assert set(labels.tolist()) == set(range(10))


def test_splits_are_disjoint_and_cover_the_dataset(digits):
    from sklearn.datasets import load_digits as load_sklearn_digits

    images = torch.cat([digits.train.images, digits.val.images, digits.test.images])  # (1797, 1, 8, 8)
    ours = np.unique(np.round(images.flatten(1).numpy() * 16), axis=0, return_counts=True)
    theirs = np.unique(load_sklearn_digits().images.reshape(1797, 64), axis=0, return_counts=True)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_same_tensors_every_load(digits):
    again = load_digits()
    for first, second in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        torch.testing.assert_close(first.images, second.images, rtol=0, atol=0)
        assert torch.equal(first.labels, second.labels)
    assert digits.mean == again.mean and digits.std == again.std


def test_train_split_is_normalized(digits):
    x, _ = _stack(digits.train)
    assert x.shape == (1257, 1, 8, 8)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    val, _ = _stack(digits.val)
    assert abs(val.mean().item()) < 0.1  # val uses the train statistics, so it is only close to 0


@pytest.mark.parametrize(("image_size", "in_channels"), [(8, 3), (32, 1), (32, 3), (4, 1)])
def test_resize_and_channel_options(image_size: int, in_channels: int):
    task = load_digits(image_size=image_size, in_channels=in_channels)
    x, _ = task.test[0]
    assert x.shape == (in_channels, image_size, image_size)
    assert task.input_shape == (in_channels, image_size, image_size)
    assert len(task.mean) == len(task.std) == in_channels
    if in_channels == 3:
        torch.testing.assert_close(x[0], x[2])
    train, _ = _stack(task.train)
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1) < 1e-3


def test_augment_only_shifts_train_images():
    plain, augmented = load_digits(image_size=16), load_digits(image_size=16, augment=True)
    assert repr(augmented.train.augment) == "RandomCropFlip(pad=2, use_flip=False)"
    assert plain.train.augment is None and augmented.val.augment is None
    torch.manual_seed(0)
    shifted = torch.stack([augmented.train[0][0] for _ in range(20)])
    assert shifted.shape == (20, 1, 16, 16)
    assert not all(torch.equal(shifted[0], s) for s in shifted[1:])
    torch.testing.assert_close(augmented.val[3][0], plain.val[3][0])


def test_random_crop_flip_moves_pixels_within_pad():
    image = torch.zeros(1, 9, 9)
    image[0, 4, 4] = 1.0
    crop = RandomCropFlip(2, use_flip=False)
    torch.manual_seed(0)
    for _ in range(30):
        row, col = divmod(int(crop(image).argmax()), 9)
        assert abs(row - 4) <= 2 and abs(col - 4) <= 2


def test_image_tensor_dataset_repr():
    dataset = ImageTensorDataset(
        torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.zeros(5), mean=(0, 0, 0), std=(1, 1, 1), image_size=16
    )
    assert repr(dataset) == "ImageTensorDataset(num_images=5, shape=(3, 16, 16), augment=None)"
    assert dataset[0][0].shape == (3, 16, 16)
    with pytest.raises(ShapeError, match="one mean and std per channel \\(3\\)"):
        ImageTensorDataset(torch.zeros(5, 3, 8, 8), torch.zeros(5), mean=(0,), std=(1,))
    with pytest.raises(ShapeError, match="labels \\(N,\\), got \\(5, 3, 8, 8\\) and \\(4,\\)"):
        ImageTensorDataset(torch.zeros(5, 3, 8, 8), torch.zeros(4), mean=(0, 0, 0), std=(1, 1, 1))
