"""Atomic file and directory writes: everything ghn writes appears whole or not at all (layer 0: imports nothing of
ghn).

A file is written to a unique temporary name beside its destination and renamed into place with `os.replace`; a
directory is filled in a staging directory beside it and its entries (or the directory itself) are renamed in.
A failed write leaves the destination as it was and no temporary file behind. `write_safetensors` streams a
safetensors file whose tensors arrive one at a time, in any order.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch
from torch import Tensor

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_open",
    "staging_directory",
    "atomic_directory",
    "SAFETENSORS_DTYPES",
    "TensorSlot",
    "SafetensorsWriter",
    "write_safetensors",
]


def atomic_write(path: str | Path, write: Callable[[Path], object], *, suffix: str = ".tmp") -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def atomic_open(path: str | Path, *, suffix: str = ".tmp") -> Iterator[IO[bytes]]:
    """A binary file object on a temporary file beside `path`, renamed into place when the block exits cleanly
    (for streamed writes, e.g. a download); on an exception the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def staging_directory(target: str | Path, *, prefix: str | None = None) -> Iterator[Path]:
    """An empty temporary directory beside `target` (same filesystem, so its entries rename in), removed on exit."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | Path, *, names: Iterable[str] | None = None) -> Iterator[Path]:
    """Fill the yielded staging directory; on a clean exit it becomes `target`.

    With `names`, `target` may already exist (an export directory that holds other files): each named entry is
    renamed into it, replacing its old version, and nothing else in `target` is touched. Without `names`, `target`
    must not exist yet and the staging directory is renamed to it as a whole (another process that made it first
    wins and this copy is dropped), so readers see all of it or none of it.
    """
    target = Path(target)
    with staging_directory(target) as staging:
        yield staging
        if names is None:
            try:
                os.replace(staging, target)
            except OSError:
                if not target.is_dir():
                    raise
        else:
            target.mkdir(exist_ok=True)
            for name in names:
                os.replace(staging / name, target / name)


# -- streamed safetensors files ---------------------------------------------------------------------------------------
#: safetensors' dtype codes (https://github.com/huggingface/safetensors, `Dtype` in safetensors/src/tensor.rs).
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


@dataclass(frozen=True)
class TensorSlot:
    """One tensor of a safetensors file, planned before its values exist: its key, shape and stored dtype."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write_safetensors(
    path: str | Path, slots: Sequence[TensorSlot], fill: Callable[[SafetensorsWriter], object], *,
    metadata: Mapping[str, str],
) -> None:  # fmt: skip
    """Write a safetensors file of `slots` (in that order) at `path`: the header first, then `fill(writer)` writes
    every slot's tensor through `writer.write(key, tensor)`, one at a time in any order; the file is synced to disk.
    Not atomic by itself: write into `atomic_write`'s temporary file or a staging directory.

    Raises:
        ValueError: a slot's dtype is not in `SAFETENSORS_DTYPES`, or a tensor has another shape than its slot.
    """
    with open(path, "wb") as file:
        writer = SafetensorsWriter(file, slots, metadata)
        fill(writer)
        writer.close()


class SafetensorsWriter:
    """Writes a safetensors file whose tensors arrive in any order, one at a time.

    The header is known up front (keys, shapes, dtypes), so it is written first and each tensor is then written at
    its own offset as it comes: no tensor is kept after its write and none is copied beyond its cast. The format:
    an 8-byte little-endian header length, a JSON header (space-padded to 8 bytes), then the raw little-endian data
    (the native byte order of every platform torch ships for).
    """

    def __init__(self, file: BinaryIO, slots: Sequence[TensorSlot], metadata: Mapping[str, str]) -> None:
        header: dict[str, Any] = {"__metadata__": dict(metadata)}
        self._offsets: dict[str, tuple[TensorSlot, int]] = {}
        begin = 0
        for slot in slots:
            if slot.dtype not in SAFETENSORS_DTYPES:
                raise ValueError(f"Tensor {slot.key!r} has dtype {slot.dtype} that safetensors cannot store.")
            header[slot.key] = {
                "dtype": SAFETENSORS_DTYPES[slot.dtype],
                "shape": list(slot.shape),
                "data_offsets": [begin, begin + slot.nbytes],
            }
            self._offsets[slot.key] = (slot, begin)
            begin += slot.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._file = file
        self._start = 8 + len(text)
        self.keys = [slot.key for slot in slots]
        self.pending = set(self.keys)
        file.write(struct.pack("<Q", len(text)) + text)
        file.truncate(self._start + begin)

    def write(self, key: str, tensor: Tensor) -> None:
        """Cast `tensor` to the key's dtype and write it at the key's offset."""
        slot, begin = self._offsets[key]
        assert key in self.pending, f"{key!r} written twice"  # internal: each key is filled exactly once
        if tuple(tensor.shape) != slot.shape:
            raise ValueError(f"Tensor {key!r} has shape {tuple(tensor.shape)}, but {slot.shape} was planned.")
        data = tensor.detach().to(device="cpu", dtype=slot.dtype).contiguous().reshape(-1)
        if data.numel():
            self._file.seek(self._start + begin)
            self._file.write(memoryview(data.view(torch.uint8).numpy()))
        self.pending.discard(key)

    def close(self) -> None:
        """Flush and sync the file; every key must have been written."""
        assert not self.pending, f"unwritten tensors {sorted(self.pending)[:5]}"  # internal: every key is filled
        self._file.flush()
        os.fsync(self._file.fileno())
