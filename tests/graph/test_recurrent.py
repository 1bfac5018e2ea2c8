"""nn.RNN, nn.GRU and nn.LSTM in the graph: one node per layer and direction, parameter roles, fan-in, gate blocks,
PyTorch's init statistics, derived inputs and `ghn graph`, for models written in plain torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from recurrent_models import ByteLM, SequenceClassifier  # tests/ is on sys.path (its conftest.py)
from torch import nn

from ghn.graph import ComputationGraph, build_graph


def make_sequence_classifier() -> nn.Module:
    """Factory for the 'module:test_recurrent:make_sequence_classifier' spec of `ghn graph`."""
    return SequenceClassifier()


def _recurrent_nodes(graph: ComputationGraph) -> list[int]:
    return [i for i, node in enumerate(graph.nodes) if node.op in ("rnn_tanh", "rnn_relu", "gru", "lstm")]


def _parents(graph: ComputationGraph, index: int) -> list[int]:
    return sorted(src for src, dst in graph.edges if dst == index)


@pytest.mark.parametrize("device", ["meta", None], ids=["meta", "real"])
def test_gru_is_one_node_per_layer_and_direction_joined_by_a_concat(device):
    graph = build_graph(SequenceClassifier(), torch.randn(2, 7, 8), device=device)
    assert graph.coverage().is_complete, graph.coverage()
    l0, l0r, l1, l1r = _recurrent_nodes(graph)
    assert [graph.nodes[i].params for i in (l0, l1r)] == [
        ["gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"],
        ["gru.weight_ih_l1_reverse", "gru.weight_hh_l1_reverse", "gru.bias_ih_l1_reverse", "gru.bias_hh_l1_reverse"],
    ]
    assert all(graph.nodes[i].module == "gru" and graph.nodes[i].module_type == "GRU" for i in (l0, l0r, l1, l1r))
    (inputs,) = [i for i, node in enumerate(graph.nodes) if node.op == "input"]
    (concat,) = [i for i, node in enumerate(graph.nodes) if node.op == "concat"]
    head = next(i for i, node in enumerate(graph.nodes) if node.module == "head")
    assert _parents(graph, l0) == _parents(graph, l0r) == [inputs]
    assert _parents(graph, l1) == _parents(graph, l1r) == [l0, l0r]
    assert _parents(graph, concat) == [l1, l1r]
    assert _parents(graph, head) == [concat]


def test_gru_parameters_are_gated_weights_and_biases_at_pytorchs_init():
    graph = build_graph(SequenceClassifier(), torch.randn(2, 7, 8))
    std = 1 / math.sqrt(3 * 16)  # uniform(-1/sqrt(hidden), 1/sqrt(hidden))
    expected = {  # name: (role, layout, fan_in, num_blocks)
        "gru.weight_ih_l0": ("weight", "out_in", 8, 3),
        "gru.weight_hh_l0": ("weight", "out_in", 16, 3),
        "gru.weight_ih_l1_reverse": ("weight", "out_in", 32, 3),  # both directions of layer 0
        "gru.bias_ih_l1": ("bias", "vector", 48, 3),
        "gru.bias_hh_l0_reverse": ("bias", "vector", 48, 3),
    }
    for name, (role, layout, fan_in, blocks) in expected.items():
        info = graph.params[name]
        assert (info.role, info.layout, info.fan_in, info.num_blocks) == (role, layout, fan_in, blocks), name
    for name, info in graph.params.items():
        if name.startswith("gru."):
            assert (info.init_mean, info.init_std) == pytest.approx((0.0, std)), name
    assert graph.params["head.weight"].role == "classifier"


@pytest.mark.parametrize("proj_size", [0, 12], ids=["plain", "proj_size"])
def test_lstm_language_model_has_four_gate_blocks_and_projections(proj_size):
    graph = build_graph(ByteLM(proj_size))  # inputs derived from the embedding: byte ids
    assert graph.coverage().is_complete, graph.coverage()
    assert [graph.nodes[i].op for i in _recurrent_nodes(graph)] == ["lstm", "lstm"]
    embed, head = (next(i for i, n in enumerate(graph.nodes) if n.module == m) for m in ("embed", "head"))
    l0, l1 = _recurrent_nodes(graph)
    assert (_parents(graph, l0), _parents(graph, l1), _parents(graph, head)) == ([embed], [l0], [l1])
    out = proj_size or 48
    ih, hh = graph.params["lstm.weight_ih_l1"], graph.params["lstm.weight_hh_l1"]
    assert (ih.shape, ih.fan_in, ih.num_blocks) == ((4 * 48, out), out, 4)
    assert (hh.shape, hh.fan_in, hh.num_blocks) == ((4 * 48, out), out, 4)
    if proj_size:
        hr = graph.params["lstm.weight_hr_l0"]
        assert (hr.role, hr.shape, hr.fan_in, hr.num_blocks) == ("weight", (12, 48), 48, 1)
        assert graph.nodes[l0].params[:3] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_hr_l0"]
        assert hr.init_std == pytest.approx(1 / math.sqrt(3 * 48))


@pytest.mark.parametrize(
    ("rnn", "inputs", "op"),
    [
        (nn.RNN(4, 6), torch.randn(5, 2, 4), "rnn_tanh"),  # (T, B, F): batch_first=False
        (nn.RNN(4, 6, nonlinearity="relu"), torch.randn(5, 2, 4), "rnn_relu"),
        (nn.RNN(4, 6, num_layers=3, bias=False, nonlinearity="relu"), torch.randn(5, 4), "rnn_relu"),  # unbatched
        (nn.GRU(4, 6, bias=False), torch.randn(5, 2, 4), "gru"),
        (nn.LSTM(4, 6, bidirectional=True, proj_size=3, bias=False), torch.randn(5, 2, 4), "lstm"),
    ],
    ids=["rnn-tanh", "rnn-relu", "rnn-relu-deep-no-bias-unbatched", "gru-no-bias", "lstm-bidirectional-proj-no-bias"],
)
def test_every_recurrent_layer_variant_is_traced_completely(rnn: nn.RNNBase, inputs: torch.Tensor, op: str):
    graph = build_graph(rnn, inputs)
    assert graph.coverage().is_complete, graph.coverage()
    nodes = _recurrent_nodes(graph)
    assert {graph.nodes[i].op for i in nodes} == {op}
    assert len(nodes) == rnn.num_layers * (2 if rnn.bidirectional else 1)
    assert sum(len(graph.nodes[i].params) for i in nodes) == len(list(rnn.parameters()))
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}[op]
    for name, info in graph.params.items():
        assert info.role == ("bias" if name.startswith("bias") else "weight")
        assert info.num_blocks == (1 if name.startswith("weight_hr") else gates)


@pytest.mark.parametrize("batch_first", [True, False])
def test_inputs_are_derived_for_a_model_that_starts_with_a_recurrent_layer(batch_first: bool):
    model = nn.GRU(8, 16, batch_first=batch_first)
    graph = build_graph(model)
    assert graph.coverage().is_complete and _recurrent_nodes(graph)


def test_measured_pytorch_init_snaps_to_the_rule():
    graph = build_graph(ByteLM(), device=None)  # real tensors: their values are measured
    for name, info in graph.params.items():
        if name.startswith("lstm."):
            assert info.init_std == pytest.approx(1 / math.sqrt(3 * 48)), name


def test_ghn_graph_command_prints_the_recurrent_nodes(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from ghn.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for the 'module:test_recurrent:...' spec
    spec = "module:test_recurrent:make_sequence_classifier"
    assert main(["graph", spec, "--stats", "--out", str(tmp_path / "gru.svg")]) == 0
    out = capsys.readouterr().out
    assert "7,461/7,461 parameters (100.00%)" in out
    assert any(line.split()[:4] == ["gru", "layer", "19", "4"] for line in out.splitlines())
    assert (tmp_path / "gru.svg").stat().st_size > 0
