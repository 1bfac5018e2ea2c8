"""Lazy imports of optional libraries, failing with the pip command that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ghn.errors import MissingDependencyError

__all__ = ["require"]


def require(module_name: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module_name`, or raise `MissingDependencyError` naming the ghn extra that provides it.

    Args:
        module_name: The library to import ('transformers').
        extra: The ghn extra that installs it ('hf').
        purpose: What needs it, for the message ("Spec 'hf:gpt2'").
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs {module_name!r}, which cannot be imported ({err}). "
            f"Install it with: pip install 'ghn[{extra}]'."
        ) from err
