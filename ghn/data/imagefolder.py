"""The 'imagefolder' task: ImageNet-style `root/{train,val[,test]}/<class>/<image>` folders, decoded with PIL.

Shapes: `S` image size.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ghn._checks import check_dir, check_int_arg
from ghn._logging import get_logger
from ghn.data.images import ImageTensorDataset, RandomCropFlip
from ghn.data.task import TASKS, TaskData, TaskSpec
from ghn.errors import ConfigError

__all__ = ["load_imagefolder", "ImageFileDataset", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD"]

logger = get_logger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
"""File suffixes (any case) read as images; other files are skipped."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Default per-channel mean: ImageNet's."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Default per-channel std: ImageNet's."""

_LAYOUT = "Lay images out as root/train/<class>/<image> and root/val/<class>/<image> (root/test/<class>/... optional)."


def read_image(path: Path, size: int) -> torch.Tensor:
    """The RGB image at `path`, shorter side resized to `size` (bilinear), center-cropped to (3, S, S), as uint8."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.uint8)  # (S, S, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, S, S)


class ImageFileDataset(Dataset):
    """Labelled image files decoded on access, for folders too large to hold in memory.

    Args:
        paths: Image files.
        labels: Class index of each file.
        image_size: Height and width of every item.
        mean: Per-channel mean (3 values) subtracted after scaling to [0, 1].
        std: Per-channel std (3 values).
        augment: Applied to each [0, 1] image before normalization; None for none.

    Shapes:
        item: `(x, y)` with `x` float32 (3, S, S) and `y` an int.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: RandomCropFlip | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = list(labels)
        self.image_size = image_size
        self.augment = augment
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.paths[index], self.image_size).float() / 255.0  # (3, S, S) in [0, 1]
        if self.augment is not None:
            image = self.augment(image)
        return (image - self._mean) / self._std, self.labels[index]

    def __repr__(self) -> str:
        return f"ImageFileDataset(num_images={len(self)}, image_size={self.image_size}, augment={self.augment!r})"


def _list_split(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """Image files under `folder/<class>/`, their labels, and the class names (sorted, or the given `classes`)."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise ConfigError(f"Folder '{folder}' has no class subfolders. {_LAYOUT}")
    classes = found if classes is None else classes
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ConfigError(
            f"Folder '{folder}' has class folders {unknown[:5]!r} that are not in the train split. "
            "Use the same class folder names in every split."
        )
    paths, labels = [], []
    for name in found:
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise ConfigError(
                f"Class folder '{folder / name}' holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove it."
            )
        paths += files
        labels += [classes.index(name)] * len(files)
    return paths, labels, classes


def _preload(paths: list[Path], image_size: int, *, progress: bool, desc: str) -> torch.Tensor:
    """All `paths` decoded into one uint8 tensor (N, 3, S, S)."""
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        paths = tqdm(paths, desc=f"Decoding {desc}", unit="img")  # type: ignore[assignment]
    return torch.stack([read_image(path, image_size) for path in paths])


def load_imagefolder(
    *,
    root: str | Path,
    image_size: int = 224,
    augment: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    preload: bool = False,
    progress: bool = False,
) -> TaskData:
    """Images in `root/train/<class>/`, `root/val/<class>/` and optionally `root/test/<class>/`.

    Classes are the sorted names of the train class folders; label i is the i-th. Images are converted to RGB, their
    shorter side resized to `image_size` (bilinear), center-cropped to a square and normalized with `mean`/`std`.
    Without a test folder the test split is the val split.

    Args:
        root: The folder holding 'train' and 'val'.
        image_size: Height and width of every image.
        augment: Random crop with max(1, image_size // 8) px zero padding plus horizontal flip on the train split.
        mean: Per-channel mean of images in [0, 1]; ImageNet's by default.
        std: Per-channel std; ImageNet's by default.
        preload: Decode every image once into memory (N * 3 * S * S bytes) instead of on every access.
        progress: Show a progress bar while preloading (only when stderr is a terminal).

    Raises:
        ConfigError: a folder is missing or empty, val/test hold classes train does not, or an argument is not allowed.
    """
    check_int_arg("image_size", image_size)
    for name, value in (("mean", mean), ("std", std)):
        if len(tuple(value)) != 3:
            raise ConfigError(f"Argument {name!r} must hold 3 values (R, G, B), got {value!r}.")
    root = check_dir(root, "an image folder", _LAYOUT)
    train_paths, train_labels, classes = _list_split(check_dir(root / "train", "the train split", _LAYOUT), None)
    splits = {"train": (train_paths, train_labels)}
    splits["val"] = _list_split(check_dir(root / "val", "the val split", _LAYOUT), classes)[:2]
    has_test = (root / "test").is_dir()
    if has_test:
        splits["test"] = _list_split(root / "test", classes)[:2]

    augmenter = RandomCropFlip(max(1, image_size // 8), use_flip=True) if augment else None
    datasets: dict[str, Dataset] = {}
    for split, (paths, labels) in splits.items():
        split_augment = augmenter if split == "train" else None
        if preload:
            images = _preload(paths, image_size, progress=progress, desc=split)
            datasets[split] = ImageTensorDataset(
                images, torch.tensor(labels), mean=mean, std=std, augment=split_augment
            )
        else:
            datasets[split] = ImageFileDataset(
                paths, labels, image_size=image_size, mean=mean, std=std, augment=split_augment
            )
    if not has_test:
        datasets["test"] = datasets["val"]
    logger.info(
        "Loaded task 'imagefolder' from '%s': %d/%d/%d images, %d classes%s.",
        root,
        len(datasets["train"]),
        len(datasets["val"]),
        len(datasets["test"]),
        len(classes),
        "" if has_test else " (test = val)",
    )
    return TaskData(
        name="imagefolder",
        kind="image",
        **datasets,
        num_classes=len(classes),
        in_channels=3,
        image_size=image_size,
        mean=tuple(mean),
        std=tuple(std),
        class_names=tuple(classes),
    )


TASKS.register(
    "imagefolder",
    TaskSpec(
        name="imagefolder", kind="image", load=load_imagefolder, summary="root/{train,val}/<class>/<image> folders"
    ),
)
