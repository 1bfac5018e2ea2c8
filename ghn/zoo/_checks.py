"""Validation helpers for the family configs: each raises `ConfigError` naming the field, the value and the fix."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ghn.errors import ConfigError

__all__ = ["check_int", "check_float", "check_choice", "check_bool", "fail", "freeze"]


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
