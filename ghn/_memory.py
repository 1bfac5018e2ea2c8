"""Fresh tensor storage for predicted parameters, backed by transparent huge pages where the OS allows it.

Predicting a meta model writes every value once into memory nobody has touched, so the page faults of that first
touch cost more than the prediction itself (GPT-2 Large: 3.1 GB, about 760K 4-KiB faults). On Linux, advising
large CPU allocations with MADV_HUGEPAGE before they are written lets the kernel fault them in 2-MiB pages (with
THP in 'madvise' or 'always' mode, the default on most distributions). Elsewhere, or if the call fails, the
tensor is an ordinary `torch.empty`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch

__all__ = ["empty_for_writing"]

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux
_MIN_BYTES = 4 * _HUGE_PAGE  # smaller tensors gain little and may share pages with other allocations


@functools.cache
def _madvise():
    """libc's madvise, or None where it cannot be had."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def empty_for_writing(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`torch.empty(shape)` whose whole 2-MiB pages are advised for huge pages when large, on the CPU, on Linux."""
    tensor = torch.empty(shape, dtype=dtype, device=device)
    nbytes = tensor.numel() * tensor.element_size()
    madvise = _madvise() if tensor.device.type == "cpu" and nbytes >= _MIN_BYTES else None
    if madvise is not None:
        start = -(-tensor.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (tensor.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: a failure leaves ordinary pages
    return tensor
