"""Image datasets held in memory and the few torch-only image transforms the image tasks use (no torchvision).

Shapes: `N` images, `C` channels, `H`/`W` height/width, `S` output image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ghn.errors import ShapeError

__all__ = ["ImageTensorDataset", "RandomCropFlip", "resize_images", "channel_stats"]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float `images` (N, C, H, W) to (N, C, S, S); anti-aliased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    is_shrinking = size < min(images.shape[-2:])
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=is_shrinking)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of float `images` (N, C, H, W), as tuples of C floats."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()  # (C, N*H*W)
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())


class RandomCropFlip:
    """Random crop of a zero-padded image back to its size, then an optional horizontal flip with probability 1/2.

    Padding is zero in [0, 1] pixel space (black), as in the usual CIFAR recipe (pad 4, crop 32, flip). Randomness comes
    from torch's global generator, which `DataLoader` seeds differently in each worker.

    Args:
        pad: Pixels of padding on each side; shifts are in [-pad, pad].
        use_flip: Also flip left-right with probability 1/2 (leave off for digits and text in images).

    Shapes:
        input: (C, H, W) in [0, 1].
        output: (C, H, W).
    """

    def __init__(self, pad: int, *, use_flip: bool) -> None:
        self.pad = pad
        self.use_flip = use_flip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.pad > 0:
            padded = F.pad(image, (self.pad, self.pad, self.pad, self.pad))  # (C, H+2p, W+2p)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            image = padded[:, top : top + height, left : left + width]
        if self.use_flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"RandomCropFlip(pad={self.pad}, use_flip={self.use_flip})"


class ImageTensorDataset(Dataset):
    """Labelled images kept in one tensor; each item is augmented (optional), resized (optional) and normalized.

    Args:
        images: uint8 images in [0, 255] or float images in [0, 1], (N, C, H, W). uint8 keeps CIFAR at 150 MB.
        labels: Integer class labels (N,).
        mean: Per-channel mean (C values) subtracted after scaling to [0, 1].
        std: Per-channel std (C values) divided by after subtracting `mean`.
        augment: Applied to each [0, 1] image before resizing and normalization; None for none.
        image_size: Resize each item to (S, S) with bilinear interpolation; None keeps (H, W).

    Shapes:
        item: `(x, y)` with `x` float32 (C, S, S) and `y` an int.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: RandomCropFlip | None = None,
        image_size: int | None = None,
    ) -> None:
        if images.dim() != 4 or labels.shape != (len(images),):
            raise ShapeError(
                f"Expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}."
            )
        if not images.shape[1] == len(mean) == len(std):
            raise ShapeError(f"Expected one mean and std per channel ({images.shape[1]}), got {mean!r} and {std!r}.")
        self.images = images
        self.labels = labels.long()
        self.augment = augment
        self.image_size = image_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()  # (C, H, W) in [0, 1]
        if self.augment is not None:
            image = self.augment(image)
        if self.image_size is not None:
            image = resize_images(image.unsqueeze(0), self.image_size).squeeze(0)  # (C, S, S)
        return (image - self._mean) / self._std, int(self.labels[index])

    def __repr__(self) -> str:
        shape = (
            tuple(self.images.shape[1:]) if self.image_size is None else (self.images.shape[1], *(self.image_size,) * 2)
        )
        return f"ImageTensorDataset(num_images={len(self)}, shape={shape}, augment={self.augment!r})"
