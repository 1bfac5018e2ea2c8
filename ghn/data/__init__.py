"""Task data a GHN trains and is evaluated on: images (digits, CIFAR, ImageFolder) and text (pydoc, text files).

Example:
    >>> from ghn.data import load_task
    >>> task = load_task("digits", image_size=32, in_channels=3)
"""

from ghn.data.cifar import load_cifar10, load_cifar100
from ghn.data.digits import load_digits
from ghn.data.imagefolder import ImageFileDataset, load_imagefolder
from ghn.data.images import ImageTensorDataset, RandomCropFlip
from ghn.data.task import TASKS, TaskData, TaskSpec, list_tasks, load_task
from ghn.data.text import TokenWindows, load_pydoc, load_textfile
from ghn.data.tokenizers import TOKENIZERS, ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "TASKS",
    "TaskData",
    "TaskSpec",
    "list_tasks",
    "load_task",
    "TOKENIZERS",
    "Tokenizer",
    "ByteTokenizer",
    "HFTokenizer",
    "load_tokenizer",
    "ImageTensorDataset",
    "ImageFileDataset",
    "RandomCropFlip",
    "TokenWindows",
    "load_digits",
    "load_cifar10",
    "load_cifar100",
    "load_imagefolder",
    "load_pydoc",
    "load_textfile",
]
