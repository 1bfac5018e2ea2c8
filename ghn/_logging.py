"""The `ghn` logger tree: WARNING by default, changed by `GHN_VERBOSITY` or `set_verbosity`; no handlers added."""

from __future__ import annotations

import logging

from ghn._config import env_verbosity
from ghn.errors import ConfigError

__all__ = ["get_logger", "set_verbosity", "warn_once"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_warned: set[str] = set()


def _root() -> logging.Logger:
    root = logging.getLogger("ghn")
    if root.level == logging.NOTSET:
        root.setLevel(_LEVELS.get(env_verbosity() or "warning", logging.WARNING))
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (pass `__name__`); the ghn root level is applied on first use."""
    _root()
    return logging.getLogger(name)


def set_verbosity(level: str | int) -> None:
    """Set how much ghn logs: 'debug', 'info', 'warning' (default) or 'error'."""
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise ConfigError(f"Unknown verbosity {level!r}. Use one of {', '.join(_LEVELS)}.")
        level = _LEVELS[level.lower()]
    logging.getLogger("ghn").setLevel(level)


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log `message` as a warning the first time it is seen in this process."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
