"""`ghn._memory.empty_for_writing`: the storage `predict` fills meta models into."""

from __future__ import annotations

import pytest
import torch

from ghn import _memory


@pytest.mark.parametrize("shape", [(3, 5), (4096, 1024)], ids=["small", "huge-page sized"])
def test_storage_has_the_shape_dtype_and_device_asked_for_and_takes_writes(shape) -> None:
    tensor = _memory.empty_for_writing(shape, torch.float32, torch.device("cpu"))
    assert tensor.shape == shape and tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    tensor.fill_(1.5)
    assert float(tensor.sum()) == 1.5 * tensor.numel()


def test_large_cpu_storage_is_advised_for_huge_pages_on_whole_pages_only(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(_memory, "_madvise", lambda: lambda start, length, advice: calls.append((start, length, advice)) or 0)
    tensor = _memory.empty_for_writing((4096, 1024), torch.float32, torch.device("cpu"))
    (start, length, advice), = calls
    assert advice == _memory._MADV_HUGEPAGE
    assert start % _memory._HUGE_PAGE == 0 and length % _memory._HUGE_PAGE == 0
    begin, end = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * 4
    assert begin <= start and start + length <= end  # never advises memory outside the tensor
    calls.clear()
    _memory.empty_for_writing((3, 5), torch.float32, torch.device("cpu"))
    assert not calls  # small tensors are left alone


def test_without_madvise_it_is_a_plain_empty(monkeypatch) -> None:
    monkeypatch.setattr(_memory, "_madvise", lambda: None)
    assert _memory.empty_for_writing((4096, 1024), torch.bfloat16, torch.device("cpu")).dtype == torch.bfloat16
