"""Tokenizers for text tasks: a byte-level one (vocab 256, no files) and Hugging Face tokenizers from a local folder.

Shapes: `L` tokens in an encoded text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ghn.errors import ConfigError, MissingDependencyError
from ghn.registry import Registry

__all__ = ["Tokenizer", "ByteTokenizer", "HFTokenizer", "TOKENIZERS", "load_tokenizer"]

# Texts are handed to Hugging Face tokenizers in pieces of about this many characters, cut at line ends, so that a
# 500 MB corpus is encoded in batches (fast tokenizers run a batch in parallel) instead of one huge call.
_CHUNK_CHARS = 1 << 16
_CHUNKS_PER_CALL = 64


@runtime_checkable
class Tokenizer(Protocol):
    """What a text task needs from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def encode_to_tensor(self, text: str) -> torch.Tensor: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255, nothing to download, every string round-trips.

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hé")
        [104, 195, 169]
        >>> tok.decode([104, 195, 169])
        'hé'
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of `text`."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """The text whose UTF-8 bytes are `ids`; invalid byte sequences become U+FFFD."""
        return bytes(ids).decode("utf-8", errors="replace")

    def encode_to_tensor(self, text: str) -> torch.Tensor:
        """The UTF-8 bytes of `text` as a uint8 tensor (L,), without a Python list in between."""
        return torch.frombuffer(bytearray(text, "utf-8"), dtype=torch.uint8)

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"


class HFTokenizer:
    """A Hugging Face tokenizer loaded from a local folder (never downloaded).

    Args:
        path: A folder written by `tokenizer.save_pretrained(path)` (tokenizer.json, tokenizer_config.json, ...).

    Raises:
        MissingDependencyError: `transformers` is not installed.
        ConfigError: `path` is not a folder or holds no tokenizer that `transformers` can load.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise ConfigError(
                f"Tokenizer folder '{self.path}' does not exist. Save one there with tokenizer.save_pretrained(path)."
            )
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise MissingDependencyError(
                "Loading a Hugging Face tokenizer needs 'transformers'. Install it with: pip install 'ghn[hf]'."
            ) from err
        try:
            self._tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"Folder '{self.path}' holds no tokenizer transformers can load ({err}). "
                "Save one there with tokenizer.save_pretrained(path)."
            ) from err
        self.vocab_size = len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """The text of token `ids`."""
        return self._tokenizer.decode(ids)

    def encode_to_tensor(self, text: str) -> torch.Tensor:
        """Token ids of `text` as an int32 tensor (L,), encoded in line-aligned chunks of about 64K characters.

        Token ids can differ from one-call encoding only where a chunk boundary falls, at a line end.
        """
        chunks = _split_lines(text, _CHUNK_CHARS)
        pieces = [torch.zeros(0, dtype=torch.int32)]
        for start in range(0, len(chunks), _CHUNKS_PER_CALL):  # bounds the Python ints alive at once
            ids = self._tokenizer(chunks[start : start + _CHUNKS_PER_CALL], add_special_tokens=False)["input_ids"]
            pieces += [torch.tensor(piece, dtype=torch.int32) for piece in ids]
        return torch.cat(pieces)

    def __repr__(self) -> str:
        return f"HFTokenizer(path='{self.path}', vocab_size={self.vocab_size})"


def _split_lines(text: str, size: int) -> list[str]:
    """`text` cut into consecutive pieces of at least `size` characters (the last may be shorter) that end lines."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        chunks.append(text[start:end])
        start = end
    return chunks


TOKENIZERS = Registry[Callable[[], Tokenizer]]("tokenizer")
TOKENIZERS.register("bytes", ByteTokenizer)


def load_tokenizer(name_or_path: str | Path | Tokenizer) -> Tokenizer:
    """A tokenizer from a registered name ('bytes'), a local Hugging Face tokenizer folder, or a tokenizer as is.

    Raises:
        ConfigError: `name_or_path` is neither a registered name nor an existing folder.
        MissingDependencyError: a folder was given but `transformers` is not installed.
    """
    if isinstance(name_or_path, Tokenizer):
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in TOKENIZERS:
        return TOKENIZERS.get(name_or_path)()
    if Path(name_or_path).expanduser().is_dir():
        return HFTokenizer(name_or_path)
    raise ConfigError(
        f"Tokenizer {str(name_or_path)!r} is neither a registered tokenizer ({', '.join(TOKENIZERS.names())}) nor a "
        "local folder. Pass 'bytes' or the path of a folder saved with tokenizer.save_pretrained(path)."
    )
