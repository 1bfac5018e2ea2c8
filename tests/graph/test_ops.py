"""The op vocabulary: pinned ids, registration rules, and a graph round trip for every registered op."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghn.errors import RegistryError, UnknownNameError
from ghn.graph import OPS, ROLES, ComputationGraph, OpSpec, ParamSlot, build_graph, register_op, unregister_op
from ghn.graph.ops import op_for_function, op_for_module

# A trained GHN stores one embedding row per id: changing a pinned id breaks every released checkpoint.
GOLDEN_OP_IDS = {
    "input": 0, "output": 1, "linear": 2, "conv": 3, "conv_transpose": 4, "embedding": 5, "layer_norm": 6,
    "batch_norm": 7, "group_norm": 8, "instance_norm": 9, "rms_norm": 10, "addmm": 11, "multihead_attention": 12,
    "prelu": 13, "shift": 14, "scale": 15, "token": 16, "rnn_tanh": 17, "rnn_relu": 18, "gru": 19, "lstm": 20,
    "add": 100, "sub": 101, "mul": 102, "div": 103, "concat": 104, "matmul": 105, "other": 106,
    "attention": 200, "softmax": 201, "max_pool": 202, "avg_pool": 203, "global_avg_pool": 204,
    "global_max_pool": 205, "mean": 206, "normalize": 207,
    "relu": 300, "gelu": 301, "silu": 302, "sigmoid": 303, "tanh": 304, "hardswish": 305, "hardsigmoid": 306,
    "relu6": 307, "leaky_relu": 308, "elu": 309, "mish": 310, "softplus": 311, "gelu_approx": 312,
}  # fmt: skip
GOLDEN_ROLES = ("weight", "bias", "norm_scale", "norm_shift", "embedding", "position_embedding", "classifier", "other")
BUILTIN_OPS = OPS.names()


def test_op_ids_match_the_golden_table():
    assert {spec.name: spec.id for spec in OPS.values()} == GOLDEN_OP_IDS


def test_op_ids_are_unique():
    ids = [spec.id for spec in OPS.values()]
    assert len(ids) == len(set(ids))


def test_roles_match_the_golden_table():
    assert ROLES == GOLDEN_ROLES


def test_every_function_maps_to_one_op():
    seen: dict = {}
    for spec in OPS.values():
        for fn in spec.functions:
            assert fn not in seen, f"{fn!r} is listed by both {seen[fn]!r} and {spec.name!r}"
            seen[fn] = spec.name
            assert op_for_function(fn) is spec


# -- registration ---------------------------------------------------------------------------------------------------
class _Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


@pytest.fixture
def user_op():
    """A user op registered for the test and removed afterwards, whatever the test does."""
    spec = register_op(name="test_user_op", kind="layer", module_types=(_Mixer,), slots={"w": ParamSlot("weight")})
    yield spec
    if "test_user_op" in OPS:
        unregister_op("test_user_op")


def test_register_op_gives_user_ops_ids_from_1000(user_op):
    assert user_op.id >= 1000
    assert OPS.get("test_user_op") is user_op
    second = register_op(name="test_user_op2", kind="node")
    try:
        assert second.id == user_op.id + 1
    finally:
        unregister_op("test_user_op2")


def test_register_op_rejects_a_duplicate_name(user_op):
    with pytest.raises(RegistryError, match="'test_user_op' is already registered"):
        register_op(name="test_user_op", kind="node")


def test_register_op_rejects_a_duplicate_id():
    with pytest.raises(RegistryError, match="Op id 2 is already used by 'linear'"):
        register_op(OpSpec(name="test_clash", id=2, kind="node"))
    assert "test_clash" not in OPS


def test_register_op_rejects_a_function_that_another_op_covers():
    with pytest.raises(RegistryError, match="already maps to op 'linear'"):
        register_op(name="test_clash", kind="layer", functions=(F.linear,))
    assert "test_clash" not in OPS
    assert op_for_function(F.linear) is OPS.get("linear")


def test_register_op_rejects_an_unknown_role():
    with pytest.raises(RegistryError, match="unknown role 'gain'"):
        register_op(name="test_clash", kind="layer", slots={"w": ParamSlot("gain")})


def test_register_op_rejects_a_bad_name():
    with pytest.raises(RegistryError, match="'My Op' is not allowed"):
        register_op(name="My Op", kind="node")


def test_unregister_op_forgets_functions_and_module_classes():
    def my_fn(x):  # a stand-in for a traced function
        return x

    register_op(name="test_fn_op", kind="node", functions=(my_fn,), module_types=(_Mixer,))
    assert op_for_function(my_fn).name == "test_fn_op"
    assert op_for_module(_Mixer()).name == "test_fn_op"
    spec = unregister_op("test_fn_op")
    assert spec.name == "test_fn_op"
    assert op_for_function(my_fn) is None
    assert op_for_module(_Mixer()) is None
    with pytest.raises(UnknownNameError, match="Unknown op 'test_fn_op'"):
        unregister_op("test_fn_op")


def test_unknown_op_lookup_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Did you mean 'linear'"):
        OPS.get("linaer")


# -- a graph round trip for every op --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A tiny module that uses one op, its inputs, and optionally a structural check instead of a node search."""

    make: Callable[[], nn.Module]
    inputs: Callable[[], object]
    check: Callable[[ComputationGraph], None] | None = None


def _x(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape)


class _Two(nn.Module):
    """Two linear branches of x joined by `join`.

    Shapes:
        x: (B, T, 4)
        output: whatever `join` returns
    """

    def __init__(self, join: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.a, self.b, self.join = nn.Linear(4, 4), nn.Linear(4, 4), join

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(self.a(x), self.b(x))


class _After(nn.Module):
    """A layer followed by a parameter-free function."""

    def __init__(self, layer: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.layer, self.fn = layer, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.layer(x))


class _WithParam(nn.Module):
    """A linear layer whose output meets a parameter `p` of `shape` in `join`."""

    def __init__(self, shape: tuple[int, ...], join: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc, self.p, self.join = nn.Linear(4, 4, bias=False), nn.Parameter(torch.randn(shape)), join

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(self.fc(x), self.p)


class _Addmm(nn.Module):
    """`torch.addmm` with the weight stored (in, out), as in Hugging Face's Conv1D."""

    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.zeros(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class NewGELUActivation(nn.Module):
    """The tanh GELU written as a formula, as in Hugging Face `transformers.activations`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _check_input(graph: ComputationGraph) -> None:
    inputs = [i for i, node in enumerate(graph.nodes) if node.op == "input"]
    assert len(inputs) == 2  # one per input tensor: x and the mask
    assert not [edge for edge in graph.edges if edge[1] in inputs]
    assert all(graph.nodes[i].op_id == 0 for i in inputs)


def _check_output(graph: ComputationGraph) -> None:
    outputs = [i for i, node in enumerate(graph.nodes) if node.op == "output"]
    assert outputs == [graph.num_nodes - 1]
    assert not [edge for edge in graph.edges if edge[0] in outputs]
    assert sorted(src for src, dst in graph.edges if dst in outputs) == [1, 2]  # both returned tensors


def _check_other(graph: ComputationGraph) -> None:
    (other,) = [i for i, node in enumerate(graph.nodes) if node.op == "other"]
    assert sorted(src for src, dst in graph.edges if dst == other) == [1, 2]
    assert not graph.nodes[other].params


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * mask


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


def _act(module: nn.Module) -> Case:
    return Case(lambda: nn.Sequential(nn.Linear(4, 4), module), _x(2, 4))


CASES: dict[str, Case] = {
    "input": Case(_Masked, lambda: (torch.randn(2, 4), torch.ones(2, 4)), _check_input),
    "output": Case(_TwoOutputs, _x(2, 4), _check_output),
    "linear": Case(lambda: nn.Linear(4, 3), _x(2, 4)),
    "conv": Case(lambda: nn.Conv2d(3, 4, 3), _x(1, 3, 8, 8)),
    "conv_transpose": Case(lambda: nn.ConvTranspose2d(3, 4, 2), _x(1, 3, 4, 4)),
    "embedding": Case(lambda: nn.Embedding(10, 4), lambda: torch.zeros(2, 5, dtype=torch.long)),
    "layer_norm": Case(lambda: nn.LayerNorm(4), _x(2, 4)),
    "batch_norm": Case(lambda: nn.BatchNorm2d(3), _x(2, 3, 4, 4)),
    "group_norm": Case(lambda: nn.GroupNorm(2, 4), _x(2, 4, 3, 3)),
    "instance_norm": Case(lambda: nn.InstanceNorm2d(3, affine=True), _x(2, 3, 4, 4)),
    "rms_norm": Case(lambda: nn.RMSNorm(4), _x(2, 4)),
    "addmm": Case(_Addmm, _x(2, 4)),
    "multihead_attention": Case(_MHA, _x(2, 5, 8)),
    "prelu": Case(lambda: nn.Sequential(nn.Linear(4, 4), nn.PReLU()), _x(2, 4)),
    "shift": Case(lambda: _WithParam((4,), torch.add), _x(2, 4)),
    "scale": Case(lambda: _WithParam((4,), torch.mul), _x(2, 4)),
    "token": Case(lambda: _WithParam((1, 1, 4), lambda x, p: torch.cat([p.expand(len(x), -1, -1), x], 1)), _x(2, 3, 4)),
    "rnn_tanh": Case(lambda: nn.RNN(4, 6), _x(5, 2, 4)),
    "rnn_relu": Case(lambda: nn.RNN(4, 6, nonlinearity="relu"), _x(5, 2, 4)),
    "gru": Case(lambda: nn.GRU(4, 6, batch_first=True), _x(2, 5, 4)),
    "lstm": Case(lambda: nn.LSTM(4, 6, batch_first=True), _x(2, 5, 4)),
    "add": Case(lambda: _Two(torch.add), _x(2, 4)),
    "sub": Case(lambda: _Two(torch.sub), _x(2, 4)),
    "mul": Case(lambda: _Two(torch.mul), _x(2, 4)),
    "div": Case(lambda: _Two(torch.div), _x(2, 4)),
    "concat": Case(lambda: _Two(lambda a, b: torch.cat([a, b], -1)), _x(2, 4)),
    "matmul": Case(lambda: _Two(lambda a, b: a @ b.transpose(-1, -2)), _x(2, 3, 4)),
    "other": Case(lambda: _Two(torch.maximum), _x(2, 4), _check_other),
    "attention": Case(_Attention, _x(2, 5, 4)),
    "softmax": Case(lambda: _After(nn.Linear(4, 4), lambda x: F.softmax(x, -1)), _x(2, 4)),
    "max_pool": Case(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2)), _x(1, 3, 8, 8)),
    "avg_pool": Case(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.AvgPool2d(2)), _x(1, 3, 8, 8)),
    "global_avg_pool": Case(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1)), _x(1, 3, 8, 8)),
    "global_max_pool": Case(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveMaxPool2d(1)), _x(1, 3, 8, 8)),
    "mean": Case(lambda: _After(nn.Linear(4, 4), lambda x: x.mean(1)), _x(2, 3, 4)),
    "normalize": Case(lambda: _After(nn.Linear(4, 4), lambda x: F.normalize(x, dim=-1)), _x(2, 4)),
    "relu": _act(nn.ReLU()),
    "gelu": _act(nn.GELU()),
    "silu": _act(nn.SiLU()),
    "sigmoid": _act(nn.Sigmoid()),
    "tanh": _act(nn.Tanh()),
    "hardswish": _act(nn.Hardswish()),
    "hardsigmoid": _act(nn.Hardsigmoid()),
    "relu6": _act(nn.ReLU6()),
    "leaky_relu": _act(nn.LeakyReLU()),
    "elu": _act(nn.ELU()),
    "mish": _act(nn.Mish()),
    "softplus": _act(nn.Softplus()),
    "gelu_approx": _act(NewGELUActivation()),
}


def test_every_registered_op_has_a_round_trip_case():
    """A new op must come with a case here (and a pinned id above)."""
    assert sorted(CASES) == OPS.names()


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_op_round_trip(name: str):
    spec, case = OPS.get(name), CASES[name]
    graph = build_graph(case.make(), case.inputs())
    assert graph.coverage().is_complete, graph.coverage()
    if case.check is not None:
        case.check(graph)
    elif spec.kind == "activation":
        assert [node.activation for node in graph.nodes if node.activation] == [name]
    else:
        nodes = [node for node in graph.nodes if node.op == spec.op]
        assert nodes, f"no {spec.op!r} node in {[node.op for node in graph.nodes]}"
        assert all(node.op_id == OPS.get(spec.op).id for node in nodes)
        if spec.kind == "layer":
            assert any(node.params for node in nodes)


def test_addmm_reads_its_weight_in_in_out_layout():
    graph = build_graph(_Addmm(), torch.randn(2, 4))
    weight = graph.params["weight"]
    assert (weight.layout, weight.fan_in, weight.fan_out) == ("in_out", 4, 6)
    assert weight.logical_shape == (6, 4, 0, 0)


def test_fused_projections_record_their_blocks():
    """nn.MultiheadAttention's in_proj stacks q, k and v; a GRU's weights stack 3 gates (tests/graph/test_recurrent.py)."""
    graph = build_graph(_MHA(), torch.randn(2, 5, 8))
    blocks = {name: info.num_blocks for name, info in graph.params.items()}
    assert blocks == {"attn.in_proj_weight": 3, "attn.in_proj_bias": 3, "attn.out_proj.weight": 1, "attn.out_proj.bias": 1}


def test_merges_with_a_parameter_get_roles_by_shape():
    bias = build_graph(_WithParam((4,), torch.add), torch.randn(2, 4)).params["p"]
    position = build_graph(_WithParam((3, 4), torch.add), torch.randn(2, 3, 4)).params["p"]
    token = build_graph(CASES["token"].make(), torch.randn(2, 3, 4)).params["p"]
    assert (bias.role, position.role, token.role) == ("bias", "position_embedding", "embedding")


def test_torch_gelu_module_is_exact_gelu_not_the_approximation():
    """nn.GELU and F.gelu are the same op; only formula modules (NewGELUActivation, QuickGELU) are 'gelu_approx'."""
    for module, expected in ((nn.GELU(), "gelu"), (NewGELUActivation(), "gelu_approx")):
        graph = build_graph(nn.Sequential(nn.Linear(4, 4), module), torch.randn(2, 4))
        assert graph.nodes[1].activation == expected


@pytest.mark.parametrize("fn", [F.relu6, torch.sigmoid, F.silu], ids=["relu6", "sigmoid", "silu"])
def test_functional_activations_fold_like_their_modules(fn):
    graph = build_graph(_After(nn.Linear(4, 4), fn), torch.randn(2, 4))
    assert graph.nodes[1].activation == op_for_function(fn).name


def test_relu6_module_is_relu6_although_it_runs_hardtanh():
    graph = build_graph(nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 2)), torch.randn(2, 4))
    assert [(node.op, node.activation) for node in graph.nodes[1:3]] == [("linear", "relu6"), ("linear", None)]


def test_hand_written_rms_norm_is_one_node():
    class MyRMSNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    graph = build_graph(nn.Sequential(MyRMSNorm()), torch.randn(2, 4))
    assert [node.op for node in graph.nodes] == ["input", "rms_norm", "output"]
    assert graph.params["0.weight"].role == "norm_scale"
