"""The version of ghn (a leaf module, so every layer can record it)."""

__version__ = "0.1.0"
