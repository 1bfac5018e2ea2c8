"""`TaskData`: the train/val/test data a GHN's predicted networks train and are evaluated on; the `TASKS` registry.

Shapes: `C` channels, `H`/`W` image height/width, `T` context (tokens per window).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from ghn._checks import TASK_KINDS, TaskKind
from ghn.data.tokenizers import Tokenizer
from ghn.errors import ConfigError
from ghn.registry import Registry, close_matches

__all__ = ["TaskData", "TaskSpec", "TASKS", "load_task", "list_tasks"]


@dataclass(frozen=True, kw_only=True)
class TaskData:
    """The three splits of one task plus what a network needs to know to fit it.

    Image tasks yield `(x, y)` with `x` a float tensor (C, H, W), normalized with `mean`/`std`, and `y` an int label.
    Text tasks yield `(x, y)` with `x = tokens[:-1]` and `y = tokens[1:]`, both long tensors (T,).
    """

    name: str
    """The registry name the task was loaded under (for example 'digits')."""
    kind: TaskKind
    """'image' (classification) or 'text' (next-token prediction)."""
    train: Dataset
    """Training split."""
    val: Dataset
    """Validation split, for model selection."""
    test: Dataset
    """Held-out split, for the numbers you report."""
    num_classes: int | None = None
    """Number of classes (image tasks)."""
    vocab_size: int | None = None
    """Number of token ids (text tasks)."""
    in_channels: int | None = None
    """Channels C of every image (image tasks)."""
    image_size: int | None = None
    """Height and width of every (square) image (image tasks)."""
    context: int | None = None
    """Tokens T per input window (text tasks)."""
    mean: tuple[float, ...] | None = None
    """Per-channel mean subtracted from images in [0, 1] (image tasks)."""
    std: tuple[float, ...] | None = None
    """Per-channel std images are divided by after subtracting `mean` (image tasks)."""
    class_names: tuple[str, ...] = ()
    """Class names in label order, where the source has them."""
    tokenizer: Tokenizer | None = field(default=None, compare=False)
    """The tokenizer that made the token ids (text tasks), to decode them."""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"TaskData field 'kind' must be 'image' or 'text', got {self.kind!r}.")
        needed = ("num_classes", "in_channels", "image_size") if self.kind == "image" else ("vocab_size", "context")
        for name in needed:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"TaskData field {name!r} must be a positive int for a {self.kind} task, got {value!r}."
                )
        if self.kind == "image":
            for name in ("mean", "std"):
                value = getattr(self, name)
                if value is None or len(value) != self.in_channels:
                    raise ConfigError(
                        f"TaskData field {name!r} must hold one value per channel ({self.in_channels}), got {value!r}."
                    )

    @property
    def num_outputs(self) -> int:
        """Width of the output layer a network needs: `num_classes` for images, `vocab_size` for text."""
        return self.num_classes if self.kind == "image" else self.vocab_size  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input `x`: (C, H, W) for images, (T,) for text."""
        if self.kind == "image":
            return (self.in_channels, self.image_size, self.image_size)  # type: ignore[return-value]
        return (self.context,)  # type: ignore[return-value]

    def __repr__(self) -> str:
        splits = {"train": self.train, "val": self.val, "test": self.test}
        sizes = ", ".join(f"num_{name}={len(split)}" for name, split in splits.items())  # type: ignore[arg-type]
        if self.kind == "image":
            shape = f"num_classes={self.num_classes}, in_channels={self.in_channels}, image_size={self.image_size}"
        else:
            shape = f"vocab_size={self.vocab_size}, context={self.context}"
        return f"TaskData(name={self.name!r}, kind={self.kind!r}, {sizes}, {shape})"


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A registered task: its name, kind and the function that loads it."""

    name: str
    """Registry key."""
    kind: TaskKind
    """'image' or 'text', known without loading."""
    load: Callable[..., TaskData]
    """Keyword-only loader returning the task's `TaskData`."""
    summary: str = ""
    """One line shown by `list_tasks`."""

    def options(self) -> dict[str, Any]:
        """The loader's keyword arguments and their defaults (`inspect.Parameter.empty` where required)."""
        return {name: p.default for name, p in inspect.signature(self.load).parameters.items()}


TASKS = Registry[TaskSpec]("task")


def list_tasks(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered tasks, optionally filtered by a shell-style `pattern` such as 'cifar*'."""
    return TASKS.names(pattern)


def load_task(name: str, **kwargs: Any) -> TaskData:
    """Load the registered task `name` with the loader's keyword arguments.

    Example:
        >>> task = load_task("digits", image_size=32, in_channels=3)
        >>> x, y = task.train[0]  # x: (3, 32, 32), y: int

    Args:
        name: A registered task name (see `list_tasks()`): 'digits', 'cifar10', 'cifar100', 'imagefolder', 'pydoc',
            'textfile'.
        **kwargs: Options of that task's loader (for example `root=` for 'cifar10').

    Returns:
        The task's splits and metadata.

    Raises:
        UnknownNameError: `name` is not registered; the message lists close matches.
        ConfigError: an option is unknown, a required one is missing, or a value is not allowed.
    """
    spec = TASKS.get(name)
    options = spec.options()
    unknown = [key for key in kwargs if key not in options]
    if unknown:
        hints = []
        for key in unknown:
            close = close_matches(key, list(options), limit=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"Unknown option(s) {', '.join(hints)} for task {name!r}. Valid options: {', '.join(options) or 'none'}."
        )
    missing = [key for key, default in options.items() if default is inspect.Parameter.empty and key not in kwargs]
    if missing:
        keys = ", ".join(map(repr, missing))
        call = ", ".join(f"{key}=..." for key in missing)
        json_options = ", ".join(f'"{key}": ...' for key in missing)
        raise ConfigError(
            f"Task {name!r} needs option(s) {keys}: load_task({name!r}, {call}), train_ghn.py --data.task_options "
            f"'{{{json_options}}}' or ghn eval --task-option {missing[0]}=..."
        )
    return spec.load(**kwargs)
