"""`ghn.meta`: `empty_weights()` builds parameters on meta with real buffers, and `recompute_buffers` gives the
buffers of a model built wholly on meta their real values (or raises saying how to build it instead)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import ghn
import ghn.meta
from ghn.errors import MetaBufferError
from ghn.meta import empty_weights, recompute_buffers


class Positions(nn.Module):
    """An embedding plus the position ids its constructor computes from the argument it keeps.

    Shapes:
        input: (B, T) token ids < 10, T <= length
        output: (B, T, 4)
    """

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length
        self.embedding = nn.Embedding(10, 4)
        self.register_buffer("ids", torch.arange(length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(x) + self.ids[: x.shape[1], None]


class Forgetful(nn.Module):
    """Two buffers made from an argument it does not keep; `reset_running_stats` resets only the first."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("table", torch.full((3,), value))

    def reset_running_stats(self) -> None:
        self.count.zero_()


def test_empty_weights_puts_parameters_on_meta_and_keeps_buffers() -> None:
    with empty_weights():
        model = nn.Sequential(Positions(6), nn.BatchNorm1d(4))
    assert all(p.is_meta and isinstance(p, nn.Parameter) for p in model.parameters())
    assert torch.equal(model[0].ids, torch.arange(6)) and torch.equal(model[1].running_var, torch.ones(4))
    assert "ids" in model[0]._non_persistent_buffers_set
    assert not nn.Linear(2, 2).weight.is_meta  # the hook is gone after the block


def test_empty_weights_keeps_ties_and_frozen_parameters_and_ends_on_error() -> None:
    with empty_weights():
        embedding, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
        head.weight = embedding.weight
        frozen = nn.Linear(2, 2).requires_grad_(False)
    assert head.weight is embedding.weight and embedding.weight.is_meta
    assert not frozen.weight.requires_grad
    with pytest.raises(RuntimeError, match="boom"), empty_weights():
        raise RuntimeError("boom")
    assert not nn.Linear(2, 2).weight.is_meta


def test_recompute_buffers_gives_the_values_construction_gives() -> None:
    with torch.device("meta"):
        model = nn.Sequential(Positions(6), nn.BatchNorm1d(4))
    state = torch.random.get_rng_state()
    values = recompute_buffers(model)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert torch.equal(values["0.ids"], torch.arange(6))  # the constructor, run again with `length`
    assert torch.equal(values["1.running_var"], torch.ones(4)) and values["1.num_batches_tracked"].item() == 0
    assert all(b.is_meta for b in model.buffers())  # the model is not changed
    assert recompute_buffers(model, names={"0.ids"}).keys() == {"0.ids"}


def test_recompute_buffers_of_a_transformers_model_uses_its_init() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16,
    )  # fmt: skip
    reference = transformers.BertModel(config)
    with torch.device("meta"):
        model = transformers.BertModel(config)
    values = recompute_buffers(model)
    assert values.keys() == {"embeddings.position_ids", "embeddings.token_type_ids"}
    for name, value in values.items():
        torch.testing.assert_close(value, reference.get_buffer(name), rtol=0, atol=0, msg=name)


def test_a_buffer_an_init_hook_leaves_is_not_trusted() -> None:
    """`Forgetful.reset_running_stats` sets 'count' but leaves 'table': whatever 'table' held would survive it."""
    with torch.device("meta"):
        model = nn.Sequential(Forgetful(0.5))
    with pytest.raises(MetaBufferError, match=r"buffer\(s\) '0\.table' on 'meta'.*argument 'value'.*empty_weights"):
        recompute_buffers(model)
    assert torch.equal(recompute_buffers(model, names={"0.count"})["0.count"], torch.zeros(()))


def test_a_registered_buffer_source_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def table_source(model: nn.Module, path: str, module: nn.Module, device: torch.device) -> dict[str, Tensor]:
        return {"table": torch.full((3,), 0.5, device=device)} if isinstance(module, Forgetful) else {}

    monkeypatch.setattr(ghn.meta, "BUFFER_SOURCES", [table_source, *ghn.meta.BUFFER_SOURCES])
    with torch.device("meta"):
        model = Forgetful(0.5)
    values = recompute_buffers(model)
    assert torch.equal(values["table"], torch.full((3,), 0.5)) and torch.equal(values["count"], torch.zeros(()))


def test_empty_weights_is_exported_from_ghn() -> None:
    assert ghn.empty_weights is empty_weights
