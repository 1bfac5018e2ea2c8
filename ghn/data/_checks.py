"""Argument checks shared by the task loaders; each failure is a `ConfigError` naming the argument and the fix."""

from __future__ import annotations

from pathlib import Path

from ghn.errors import ConfigError

__all__ = ["check_int", "check_choice", "check_fractions", "check_dir"]


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """`value` if it is an int >= `minimum` (bools are refused), else a `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Argument {name!r} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> object:
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
