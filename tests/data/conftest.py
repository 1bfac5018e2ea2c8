"""Tiny stand-ins, written into tmp_path, for the files the data tasks read: CIFAR pickles, image folders, WikiText."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WIKI_TRAIN = "= Title =\n\nThe quick brown fox jumps over the lazy dog. " * 20
WIKI_VALID = "= Valid =\n\nPack my box with five dozen liquor jugs. " * 5
WIKI_TEST = "= Test =\n\nSphinx of black quartz, judge my vow. " * 5


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def _images(rng: np.random.Generator, num: int) -> np.ndarray:
    """Rows of 3072 uint8 values (R, G, B planes of 32x32), as in the official files."""
    return rng.integers(0, 256, size=(num, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """`tmp_path/cifar-10-batches-py` with 5 train batches of 4 images, a test batch of 6 and the meta file."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = [(4 * i + j) % 10 for j in range(4)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": _images(rng, 4), b"labels": labels})
    _dump(folder / "test_batch", {b"batch_label": b"t", b"data": _images(rng, 6), b"labels": list(range(6))})
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    """`tmp_path/cifar-100-python` with 12 train and 5 test images and the meta file."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train = {b"data": _images(rng, 12), b"fine_labels": list(range(90, 102)), b"coarse_labels": [0] * 12}
    train[b"fine_labels"] = [label % 100 for label in train[b"fine_labels"]]
    _dump(folder / "train", train)
    _dump(folder / "test", {b"data": _images(rng, 5), b"fine_labels": [1, 2, 3, 4, 5], b"coarse_labels": [0] * 5})
    _dump(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": []})
    return tmp_path


def write_png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """`tmp_path/images/{train,val}/{cat,dog}/*.png`: 3 train and 1 val image per class, of mixed sizes."""
    root = tmp_path / "images"
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for name, color in colors.items():
        for i, size in enumerate([(20, 12), (12, 20), (16, 16)]):
            write_png(root / "train" / name / f"{i}.png", size, color)
        write_png(root / "val" / name / "0.png", (10, 10), color)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def wikitext_dir(tmp_path: Path) -> Path:
    """`tmp_path/wikitext-2-raw` with wiki.train.raw, wiki.valid.raw and wiki.test.raw."""
    folder = tmp_path / "wikitext-2-raw"
    folder.mkdir()
    for name, text in (("train", WIKI_TRAIN), ("valid", WIKI_VALID), ("test", WIKI_TEST)):
        (folder / f"wiki.{name}.raw").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """A 4000-character UTF-8 text file with some non-ASCII letters."""
    path = tmp_path / "book.txt"
    path.write_text(("Chapter héllo wörld — line of text.\n" * 120)[:4000], encoding="utf-8")
    return path
