"""The 'cifar10' and 'cifar100' tasks, read from the extracted python version of the datasets (no download).

Data: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009,
https://www.cs.toronto.edu/~kriz/cifar.html.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ghn._checks import check_int_arg
from ghn._logging import get_logger
from ghn.data.images import ImageTensorDataset, RandomCropFlip
from ghn.data.task import TASKS, TaskData, TaskSpec
from ghn.errors import ConfigError

__all__ = ["load_cifar10", "load_cifar100", "CifarSpec", "CIFAR10", "CIFAR100"]

logger = get_logger(__name__)

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True, kw_only=True)
class CifarSpec:
    """Where one CIFAR variant keeps its files and labels, and its channel statistics."""

    name: str
    """Task name."""
    title: str
    """Name used in messages."""
    folder: str
    """Folder the official archive extracts to."""
    train_files: tuple[str, ...]
    """Pickles holding the 50000 training images, in order."""
    test_file: str
    """Pickle holding the 10000 test images."""
    meta_file: str
    """Pickle holding the class names."""
    label_key: bytes
    """Key of the labels in each data pickle."""
    names_key: bytes
    """Key of the class names in the meta pickle."""
    num_classes: int
    """Number of classes."""
    mean: tuple[float, float, float]
    """Per-channel mean of the 50000 training images in [0, 1]."""
    std: tuple[float, float, float]
    """Per-channel std of the 50000 training images in [0, 1]."""


CIFAR10 = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)

# The pickles hold only dicts, lists, bytes and NumPy arrays; these are the globals pickled NumPy arrays refer to
# (Python 2 and NumPy 1 names as in the official files, NumPy 2 names as in re-saved ones). Anything else is refused,
# so a tampered file cannot run code when unpickled.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path: Path, title: str) -> dict[bytes, Any]:
    """One CIFAR pickle as the dict it holds, with bytes keys (the files were written by Python 2)."""
    if not path.is_file():
        raise ConfigError(
            f"Missing {title} file '{path}'. Extract the python version from {_URL} again so the folder is complete."
        )
    # Local data the user placed there, in the dataset's documented format: pickle.load(f, encoding="bytes"). Only
    # arrays, lists and bytes are read (see _ALLOWED_GLOBALS).
    try:
        with path.open("rb") as file:
            data = _ArrayUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ConfigError(
            f"File '{path}' is not a readable {title} pickle ({err}). Extract it again from {_URL}."
        ) from err
    if not isinstance(data, dict):
        raise ConfigError(
            f"File '{path}' holds {type(data).__name__!r}, not a {title} dict. Extract it again from {_URL}."
        )
    return data


def _find_folder(root: str | Path, spec: CifarSpec) -> Path:
    """`root/<folder>`, or `root` itself when it already is that folder."""
    root = Path(root).expanduser()
    for folder in (root / spec.folder, root):
        if (folder / spec.test_file).is_file():
            return folder
    raise ConfigError(
        f"Expected {spec.title} at '{root / spec.folder}' (the extracted python version from {_URL}). "
        f"Download and extract it there, or pass root=... pointing to the folder that holds '{spec.folder}'."
    )


def _read_split(folder: Path, files: tuple[str, ...], spec: CifarSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 32, 32) and long labels (N,) of the given pickles, concatenated in order."""
    images, labels = [], []
    for name in files:
        data = _read_pickle(folder / name, spec.title)
        if b"data" not in data or spec.label_key not in data:
            raise ConfigError(
                f"File '{folder / name}' lacks the keys b'data' and {spec.label_key!r}; is it a {spec.title} file? "
                f"Extract it again from {_URL}."
            )
        images.append(np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows are R, G, B planes
        labels.append(np.asarray(data[spec.label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _load_cifar(spec: CifarSpec, *, root: str | Path, val_size: int, augment: bool, image_size: int) -> TaskData:
    check_int_arg("val_size", val_size)
    check_int_arg("image_size", image_size)
    folder = _find_folder(root, spec)
    train_images, train_labels = _read_split(folder, spec.train_files, spec)
    test_images, test_labels = _read_split(folder, (spec.test_file,), spec)
    if val_size >= len(train_images):
        raise ConfigError(
            f"Argument 'val_size' must be below the {len(train_images)} training images of {spec.title}, "
            f"got {val_size}."
        )
    names = _read_pickle(folder / spec.meta_file, spec.title).get(spec.names_key, [])
    resize = None if image_size == 32 else image_size
    augmenter = RandomCropFlip(4, use_flip=True) if augment else None
    cut = len(train_images) - val_size
    common: dict[str, Any] = {"mean": spec.mean, "std": spec.std, "image_size": resize}
    task = TaskData(
        name=spec.name,
        kind="image",
        train=ImageTensorDataset(train_images[:cut], train_labels[:cut], augment=augmenter, **common),
        val=ImageTensorDataset(train_images[cut:], train_labels[cut:], **common),
        test=ImageTensorDataset(test_images, test_labels, **common),
        num_classes=spec.num_classes,
        in_channels=3,
        image_size=image_size,
        mean=spec.mean,
        std=spec.std,
        class_names=tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names),
    )
    logger.info(
        "Loaded task %r from '%s': %d/%d/%d images, %d classes.",
        spec.name,
        folder,
        cut,
        val_size,
        len(test_images),
        spec.num_classes,
    )
    return task


def load_cifar10(
    *, root: str | Path = "data", val_size: int = 5000, augment: bool = False, image_size: int = 32
) -> TaskData:
    """CIFAR-10 from `root/cifar-10-batches-py` (data_batch_1..5, test_batch, batches.meta).

    Splits: train is the first 50000 - `val_size` training images (45000), val the last `val_size` (5000), test the
    official 10000. Images are normalized with the CIFAR-10 training mean/std.

    Args:
        root: Folder holding 'cifar-10-batches-py', or that folder itself.
        val_size: Training images held out, from the end, as the val split.
        augment: Random crop with 4 px zero padding plus horizontal flip on the train split.
        image_size: Resize every image (bilinear, per item) to this size; 32 keeps the originals.

    Raises:
        ConfigError: the folder or one of its files is missing or unreadable, or an argument is out of range.
    """
    return _load_cifar(CIFAR10, root=root, val_size=val_size, augment=augment, image_size=image_size)


def load_cifar100(
    *, root: str | Path = "data", val_size: int = 5000, augment: bool = False, image_size: int = 32
) -> TaskData:
    """CIFAR-100 (100 fine labels) from `root/cifar-100-python` (train, test, meta).

    Splits: train is the first 50000 - `val_size` training images (45000), val the last `val_size` (5000), test the
    official 10000. Images are normalized with the CIFAR-100 training mean/std.

    Args:
        root: Folder holding 'cifar-100-python', or that folder itself.
        val_size: Training images held out, from the end, as the val split.
        augment: Random crop with 4 px zero padding plus horizontal flip on the train split.
        image_size: Resize every image (bilinear, per item) to this size; 32 keeps the originals.

    Raises:
        ConfigError: the folder or one of its files is missing or unreadable, or an argument is out of range.
    """
    return _load_cifar(CIFAR100, root=root, val_size=val_size, augment=augment, image_size=image_size)


TASKS.register("cifar10", TaskSpec(name="cifar10", kind="image", load=load_cifar10, summary="CIFAR-10, 10 classes"))
TASKS.register(
    "cifar100", TaskSpec(name="cifar100", kind="image", load=load_cifar100, summary="CIFAR-100, 100 classes")
)
