"""Every exception ghn raises; each inherits from `GHNError` and from the matching builtin."""

__all__ = [
    "GHNError",
    "ConfigError",
    "UnknownNameError",
    "RegistryError",
    "GraphError",
    "UnsupportedOpError",
    "ShapeError",
    "CheckpointError",
    "IntegrityError",
    "OfflineError",
    "MissingDependencyError",
    "MetaBufferError",
]


class GHNError(Exception):
    """Base class of all ghn errors, so callers can catch everything ghn raises at once."""


class ConfigError(GHNError, ValueError):
    """A config field holds a value that is not allowed."""


class UnknownNameError(GHNError, LookupError):
    """A registry lookup or spec string names nothing that exists."""

    def __str__(self) -> str:  # LookupError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class RegistryError(GHNError, RuntimeError):
    """A registry was used wrongly (for example, a name registered twice)."""


class GraphError(GHNError, RuntimeError):
    """A computation graph cannot be built from the model as given."""


class UnsupportedOpError(GraphError):
    """The model uses an operation on parameters that the op vocabulary does not cover."""


class ShapeError(GHNError, ValueError):
    """A tensor has a shape that does not fit where it is used."""


class CheckpointError(GHNError, RuntimeError):
    """A checkpoint cannot be read, or holds values that cannot be used."""


class IntegrityError(CheckpointError):
    """A downloaded or cached file does not match its expected sha256."""


class OfflineError(GHNError, ConnectionError):
    """The network is needed but ghn is offline (GHN_OFFLINE=1) or cannot reach it."""


class MissingDependencyError(GHNError, ImportError):
    """An optional dependency (an extra) is needed for this call but is not installed."""


class MetaBufferError(GHNError, RuntimeError):
    """A model holds a buffer on `meta` (no values) that ghn cannot recompute; a GHN predicts parameters only."""
