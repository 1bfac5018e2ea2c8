"""Config helpers: dataclass <-> dict/YAML/JSON with strict key checks, and the environment variables ghn reads."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ghn.errors import ConfigError

__all__ = ["from_dict", "from_yaml", "to_dict", "to_json", "from_json", "ghn_home", "is_offline", "env_verbosity", "manifest_override"]

C = TypeVar("C")


def to_dict(config: Any) -> dict[str, Any]:
    """A nested config as plain dicts, lists and scalars (tuples become lists), ready for JSON or YAML."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"Expected a config dataclass, got {type(config).__name__!r}.")
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[C], data: dict[str, Any] | C) -> C:
    """Build config `cls` from `data`, recursing into nested configs; unknown keys raise with a suggestion."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"Expected a mapping for {cls.__name__!r}, got {type(data).__name__!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"Unknown field(s) {', '.join(hints)} for {cls.__name__!r}. Valid fields: {', '.join(sorted(fields))}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints.get(key, Any), value) for key, value in data.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    """Convert a YAML/JSON value to the field's declared type (nested configs and tuples)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
        return value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_convert(inner, v) for v in value)
    return value


def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
    """Load config `cls` from a YAML file."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return from_dict(cls, data)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def from_json(cls: type[C], text: str) -> C:
    return from_dict(cls, json.loads(text))


def ghn_home() -> Path:
    """Cache folder for downloaded checkpoints: `$GHN_HOME`, default `~/.cache/ghn`."""
    return Path(os.environ.get("GHN_HOME", Path.home() / ".cache" / "ghn")).expanduser()


def is_offline() -> bool:
    """True when `GHN_OFFLINE` is set to 1/true/yes: ghn then never reaches the network."""
    return os.environ.get("GHN_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def manifest_override() -> Path | None:
    """The pretrained-GHN manifest named in `$GHN_PRETRAINED_MANIFEST`, replacing the one shipped in `pretrained/`."""
    value = os.environ.get("GHN_PRETRAINED_MANIFEST", "").strip()
    return Path(value).expanduser() if value else None


def env_verbosity() -> str | None:
    """The log level named in `GHN_VERBOSITY` (debug, info, warning, error), if any."""
    value = os.environ.get("GHN_VERBOSITY")
    return value.strip().lower() if value else None
