"""`Registry[T]`: the one extension point for ops, model families and pretrained GHNs."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ghn.errors import RegistryError, UnknownNameError

__all__ = ["Registry", "close_matches"]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9_./-]+$")


def close_matches(name: str, choices: list[str], limit: int = 5) -> list[str]:
    """Up to `limit` entries of `choices` that look like `name`, best first."""
    return difflib.get_close_matches(name, choices, n=limit, cutoff=0.5)


class Registry(Generic[T]):
    """A named table of entries with exact lookups and helpful misses.

    Example:
        >>> FAMILIES = Registry[FamilySpec]("model family")
        >>> FAMILIES.register("resnet", spec)
        >>> FAMILIES.get("resnet")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False) -> T | Callable[[T], T]:
        """Add `entry` under `name`; used bare it returns a decorator."""
        if entry is None:
            return lambda obj: self.register(name, obj, overwrite=overwrite)  # type: ignore[return-value]
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(
                f"{self.kind.capitalize()} name {name!r} is not allowed. Use lowercase letters, digits and '_./-'."
            )
        if name in self._entries and not overwrite:
            raise RegistryError(
                f"{self.kind.capitalize()} {name!r} is already registered. Pick another name or pass overwrite=True."
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry under `name`."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry under `name`; raises `UnknownNameError` with close matches when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            hint = close_matches(name, list(self._entries))
            known = f"Did you mean {', '.join(map(repr, hint))}?" if hint else f"Known: {', '.join(self.names()[:20])}."
            raise UnknownNameError(f"Unknown {self.kind} {name!r}. {known}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style `pattern` such as 'vit-*'."""
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def values(self) -> list[T]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, num_entries={len(self)})"
