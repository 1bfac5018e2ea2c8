"""The task registry, `load_task` dispatch and argument errors, and a load of every registered task."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from ghn.data import TASKS, TaskData, list_tasks, load_task
from ghn.errors import ConfigError, UnknownNameError


@pytest.fixture
def task_kwargs(cifar10_root: Path, cifar100_root: Path, image_root: Path, wikitext_dir: Path) -> dict[str, dict]:
    """Small-data options for every registered task; a task missing here fails `test_every_task_loads`."""
    return {
        "digits": {},
        "cifar10": {"root": cifar10_root, "val_size": 4},
        "cifar100": {"root": cifar100_root, "val_size": 2},
        "imagefolder": {"root": image_root, "image_size": 8},
        "pydoc": {"context": 64},
        "textfile": {"path": wikitext_dir, "context": 32},
    }


def test_registered_task_names():
    assert list_tasks() == ["cifar10", "cifar100", "digits", "imagefolder", "pydoc", "textfile"]
    assert list_tasks("cifar*") == ["cifar10", "cifar100"]


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_loads(name: str, task_kwargs: dict[str, dict]):
    assert name in task_kwargs, f"add small-data options for task {name!r} to the task_kwargs fixture"
    spec = TASKS.get(name)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in inspect.signature(spec.load).parameters.values())
    task = load_task(name, **task_kwargs[name])
    assert isinstance(task, TaskData)
    assert (task.name, task.kind) == (name, spec.kind)
    for split in (task.train, task.val, task.test):
        assert len(split) > 0
        x, y = split[0]
        assert tuple(x.shape) == task.input_shape
        if task.kind == "image":
            assert x.dtype == torch.float32 and isinstance(y, int) and 0 <= y < task.num_outputs
        else:
            assert x.dtype == y.dtype == torch.long and int(x.max()) < task.num_outputs


def test_unknown_task_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Unknown task 'digit'. Did you mean 'digits'"):
        load_task("digit")


def test_unknown_option_suggests_close_option():
    with pytest.raises(
        ConfigError, match="Unknown option.*'image_sise' \\(did you mean 'image_size'\\?\\) for task 'digits'"
    ):
        load_task("digits", image_sise=32)


def test_missing_required_option():
    with pytest.raises(ConfigError, match="Task 'imagefolder' needs option.*'root'"):
        load_task("imagefolder")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("digits", {"image_size": 0}, "'image_size' must be an integer >= 1, got 0"),
        ("digits", {"in_channels": 2}, "'in_channels' must be one of 1, 3, got 2"),
        ("pydoc", {"context": "128"}, "'context' must be an integer >= 1, got '128'"),
        ("pydoc", {"stride": 0}, "'stride' must be an integer >= 1, got 0"),
        ("textfile", {"path": ".", "split": (0.5, 0.5)}, "'split' must be three positive"),
    ],
)
def test_bad_option_values(name: str, kwargs: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        load_task(name, **kwargs)


def test_task_data_validates_fields():
    with pytest.raises(ConfigError, match="'kind' must be 'image' or 'text', got 'audio'"):
        TaskData(name="x", kind="audio", train=[], val=[], test=[])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'vocab_size' must be a positive int for a text task, got None"):
        TaskData(name="x", kind="text", train=[], val=[], test=[], context=8)
    with pytest.raises(ConfigError, match="'mean' must hold one value per channel \\(3\\)"):
        TaskData(
            name="x",
            kind="image",
            train=[],
            val=[],
            test=[],
            num_classes=2,
            in_channels=3,
            image_size=4,
            mean=(0.5,),
            std=(1.0, 1.0, 1.0),
        )


def test_task_data_repr_and_properties():
    task = load_task("digits", image_size=16, in_channels=3)
    assert repr(task) == (
        "TaskData(name='digits', kind='image', num_train=1257, num_val=270, num_test=270, num_classes=10, "
        "in_channels=3, image_size=16)"
    )
    assert task.num_outputs == 10 and task.input_shape == (3, 16, 16)
    text = load_task("pydoc", context=32)
    assert repr(text).endswith("vocab_size=256, context=32)")
    assert text.num_outputs == 256 and text.input_shape == (32,)
