"""Checks shared across ghn: the task kinds, validators of config fields (`check_int(config, name)`) and of loader
arguments (`check_int_arg(name, value)`); each failure is a `ConfigError` naming the field or argument and the fix."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from ghn.errors import ConfigError

__all__ = [
    "TaskKind",
    "TASK_KINDS",
    "check_bool",
    "check_choice",
    "check_choice_arg",
    "check_dir",
    "check_float",
    "check_fractions",
    "check_int",
    "check_int_arg",
    "check_positive",
    "fail",
    "freeze",
]

TaskKind = Literal["image", "text"]
"""'image' for classifiers of (B, C, H, W) images, 'text' for language models over (B, T) token ids."""
TASK_KINDS: tuple[str, ...] = ("image", "text")
"""The values of `TaskKind`, for run-time checks."""


# -- fields of a config dataclass (called from `__post_init__`) ------------------------------------------------------
def fail(config: Any, name: str, allowed: str) -> None:
    """Raise `ConfigError` for field `name` of `config`, saying what is `allowed`."""
    value = getattr(config, name)
    raise ConfigError(f"{type(config).__name__}.{name} is {value!r}; it must be {allowed}.")


def check_int(config: Any, name: str, *, low: int = 1, high: int | None = None) -> None:
    """Field `name` must be an int in [low, high] (no upper bound when `high` is None)."""
    value = getattr(config, name)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        fail(config, name, f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}")


def check_positive(config: Any, *names: str) -> None:
    """Fields `names` must each be an int > 0 (bools are refused)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}.")


def check_float(config: Any, name: str, *, low: float, high: float | None = None, is_low_open: bool = False) -> None:
    """Field `name` must be a real number in [low, high] (or (low, high] when `is_low_open`)."""
    value = getattr(config, name)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    too_low = is_number and (value <= low if is_low_open else value < low)
    too_high = is_number and high is not None and value > high
    if not is_number or too_low or too_high:
        bracket = "(" if is_low_open else "["
        fail(config, name, f"a number in {bracket}{low}, {high if high is not None else 'inf'}]")


def check_choice(config: Any, name: str, choices: Collection[str]) -> None:
    """Field `name` must be one of `choices`."""
    if getattr(config, name) not in choices:
        fail(config, name, f"one of {', '.join(map(repr, sorted(choices)))}")


def check_bool(config: Any, name: str) -> None:
    """Field `name` must be True or False."""
    if not isinstance(getattr(config, name), bool):
        fail(config, name, "True or False")


def freeze(config: Any, name: str) -> None:
    """Turn a list given for tuple field `name` (from YAML, JSON or a caller) into a tuple, recursively.

    Configs are frozen, so this is the one sanctioned write in `__post_init__`: it keeps configs hashable and
    equal to their presets whichever sequence type the caller used.
    """
    object.__setattr__(config, name, _as_tuple(getattr(config, name)))


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


# -- arguments of a function (task loaders) --------------------------------------------------------------------------
def check_int_arg(name: str, value: object, *, minimum: int = 1) -> int:
    """`value` if it is an int >= `minimum` (bools are refused), else a `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Argument {name!r} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_choice_arg(name: str, value: object, choices: tuple[object, ...]) -> object:
    """`value` if it is one of `choices`, else a `ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"Argument {name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def check_fractions(name: str, value: object) -> tuple[float, float, float]:
    """`value` as three positive (train, val, test) fractions summing to 1."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        or abs(sum(value) - 1.0) > 1e-6
    ):
        raise ConfigError(
            f"Argument {name!r} must be three positive (train, val, test) fractions summing to 1, got {value!r}."
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def check_dir(path: str | Path, what: str, hint: str) -> Path:
    """`path` as a `Path` if it is an existing directory, else a `ConfigError` saying `what` was expected and `hint`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"Expected {what} at '{path}', but that folder does not exist. {hint}")
    return path
