"""The 'imagefolder' task on tiny PNG folders written with PIL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ghn.data import ImageFileDataset, ImageTensorDataset, load_imagefolder
from ghn.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from ghn.errors import ConfigError


def test_classes_shapes_and_labels(image_root: Path):
    task = load_imagefolder(root=image_root, image_size=8)
    assert task.class_names == ("cat", "dog") and task.num_classes == 2
    assert (len(task.train), len(task.val), len(task.test)) == (6, 2, 2)  # notes.txt is skipped
    assert isinstance(task.train, ImageFileDataset)
    assert task.test is task.val
    assert [task.train[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]
    for i in range(6):
        assert task.train[i][0].shape == (3, 8, 8)  # non-square images are resized and center-cropped


def test_pixels_are_normalized_with_imagenet_stats(image_root: Path):
    task = load_imagefolder(root=image_root, image_size=8)
    x, _ = task.val[0]  # a pure red image
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[:, 4, 4], (torch.tensor([1.0, 0.0, 0.0]) - mean) / std)


def test_custom_mean_std(image_root: Path):
    task = load_imagefolder(root=image_root, image_size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(task.val[1][0][:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))


def test_preload_gives_the_same_items(image_root: Path):
    lazy = load_imagefolder(root=image_root, image_size=8)
    eager = load_imagefolder(root=image_root, image_size=8, preload=True, progress=True)
    assert isinstance(eager.train, ImageTensorDataset)
    for i in range(len(lazy.train)):
        torch.testing.assert_close(eager.train[i][0], lazy.train[i][0])
        assert eager.train[i][1] == lazy.train[i][1]


def test_test_folder_is_used_when_present(image_root: Path):
    for name in ("cat", "dog"):
        shutil.copytree(image_root / "val" / name, image_root / "test" / name)
    Image.new("RGB", (9, 9), (0, 255, 0)).save(image_root / "test" / "dog" / "extra.png")
    task = load_imagefolder(root=image_root, image_size=8, augment=True)
    assert len(task.test) == 3 and task.test is not task.val
    assert task.test.augment is None and task.train.augment is not None
    assert task.train[0][0].shape == (3, 8, 8)


def test_missing_root_and_split(tmp_path: Path, image_root: Path):
    with pytest.raises(ConfigError, match="Expected an image folder at .*nowhere.*root/train/<class>/<image>"):
        load_imagefolder(root=tmp_path / "nowhere")
    shutil.rmtree(image_root / "val")
    with pytest.raises(ConfigError, match="Expected the val split at .*val'.*root/val/<class>/<image>"):
        load_imagefolder(root=image_root)


def test_empty_folders(image_root: Path):
    (image_root / "train" / "emu").mkdir()
    with pytest.raises(ConfigError, match="Class folder .*emu' holds no images"):
        load_imagefolder(root=image_root)
    shutil.rmtree(image_root / "train")
    (image_root / "train").mkdir()
    with pytest.raises(ConfigError, match="has no class subfolders"):
        load_imagefolder(root=image_root)


def test_val_classes_must_exist_in_train(image_root: Path):
    Image.new("RGB", (9, 9)).save(image_root / "val" / "cat" / "x.png")
    (image_root / "val" / "owl").mkdir()
    Image.new("RGB", (9, 9)).save(image_root / "val" / "owl" / "0.png")
    with pytest.raises(ConfigError, match="class folders \\['owl'\\] that are not in the train split"):
        load_imagefolder(root=image_root)
