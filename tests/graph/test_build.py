"""`build_graph` on user modules, Hugging Face models and the zoo: structure, parameters, coverage and bad input."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghn.errors import GHNError, GraphError, UnsupportedOpError
from ghn.graph import OPS, ComputationGraph, ParamSlot, build_graph, register_op, unregister_op
from ghn.zoo import FAMILIES, create, names

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs transformers (pip install 'ghn[hf]')"
)


def _parents(graph: ComputationGraph, index: int) -> list[int]:
    return sorted(src for src, dst in graph.edges if dst == index)


def _nodes(graph: ComputationGraph, op: str) -> list[int]:
    return [i for i, node in enumerate(graph.nodes) if node.op == op]


def _only(graph: ComputationGraph, op: str) -> int:
    (index,) = _nodes(graph, op)
    return index


def _node_of(graph: ComputationGraph, module: str) -> int:
    (index,) = [i for i, node in enumerate(graph.nodes) if node.module == module and node.params]
    return index


# -- structure of user modules --------------------------------------------------------------------------------------
class Branches(nn.Module):
    """Two conv paths of the same input, added, then concatenated with a third path.

    Shapes:
        x: (B, 3, H, W)
        output: (B, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right, self.side = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.left(x) + self.right(x)  # (B, 4, H, W)
        z = torch.cat([y, self.side(x)], dim=1)  # (B, 8, H, W)
        return self.head(z.mean((2, 3)))


def test_branches_join_at_add_and_concat():
    graph = build_graph(Branches(), torch.randn(1, 3, 8, 8))
    left, right, side = (_node_of(graph, name) for name in ("left", "right", "side"))
    add, concat, mean, head = _only(graph, "add"), _only(graph, "concat"), _only(graph, "mean"), _node_of(graph, "head")
    assert _parents(graph, left) == _parents(graph, right) == _parents(graph, side) == [_only(graph, "input")]
    assert _parents(graph, add) == sorted([left, right])
    assert _parents(graph, concat) == sorted([add, side])
    assert _parents(graph, mean) == [concat]
    assert _parents(graph, head) == [mean]
    assert _parents(graph, _only(graph, "output")) == [head]
    assert graph.coverage().is_complete


def test_final_linear_of_a_classifier_has_the_classifier_role(tiny_cnn):
    graph = build_graph(tiny_cnn)
    roles = {name: info.role for name, info in graph.params.items()}
    assert roles == {
        "stem.weight": "weight",
        "bn.weight": "norm_scale",
        "bn.bias": "norm_shift",
        "conv.weight": "weight",
        "conv.bias": "bias",
        "head.weight": "classifier",
        "head.bias": "bias",
    }
    assert graph.nodes[_node_of(graph, "bn")].activation == "relu"


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4)
        self.decode = nn.Linear(4, 4, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.tanh(self.encode(x)))


def test_tied_weights_appear_once_with_an_alias():
    graph = build_graph(Tied(), torch.randn(2, 4))
    assert sorted(graph.params) == ["encode.bias", "encode.weight"]
    weight = graph.params["encode.weight"]
    encode, decode = _node_of(graph, "encode"), graph.num_nodes - 2
    assert weight.aliases == ("decode.weight",)
    assert weight.uses == [encode, decode]
    assert weight.node == encode
    assert graph.nodes[encode].params == ["encode.weight", "encode.bias"]
    assert graph.nodes[decode].module == "decode" and graph.nodes[decode].shared == ["encode.weight"]
    assert graph.nodes[decode].params == []
    assert graph.num_params == 20 and graph.coverage().is_complete


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.block(x))))


def test_a_module_called_twice_makes_two_nodes_that_share_its_parameters():
    graph = build_graph(Reused(), torch.randn(2, 4))
    first, second = [i for i, node in enumerate(graph.nodes) if node.module == "block"]
    assert graph.nodes[first].params == ["block.weight", "block.bias"]
    assert graph.nodes[second].shared == ["block.weight", "block.bias"] and not graph.nodes[second].params
    assert _parents(graph, second) == [first]
    assert graph.params["block.weight"].uses == [first, second]
    assert graph.params["block.weight"].node == first
    assert graph.nodes[first].activation == "relu"


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"logits": self.head(features), "features": features, "note": "not a tensor"}


class TupleOutput(DictOutput):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, None]]:
        features = self.body(x)
        return self.head(features), (features, None)


@dataclass
class Output:
    """A `ModelOutput`-like dataclass."""

    logits: torch.Tensor
    hidden: tuple[torch.Tensor, ...] = ()
    loss: torch.Tensor | None = None


class DataclassOutput(DictOutput):
    def forward(self, x: torch.Tensor) -> Output:
        features = self.body(x)
        return Output(logits=self.head(features), hidden=(features,))


@pytest.mark.parametrize("model_cls", [DictOutput, TupleOutput, DataclassOutput])
def test_every_tensor_of_a_nested_output_feeds_the_output_node(model_cls):
    graph = build_graph(model_cls(), torch.randn(2, 4))
    assert _parents(graph, _only(graph, "output")) == sorted([_node_of(graph, "body"), _node_of(graph, "head")])
    assert graph.params["head.weight"].role == "classifier"


class Masked(nn.Module):
    """A token model that takes ids and a float mask.

    Shapes:
        ids: (B, T) long
        mask: (B, T)
        output: (B, 2)
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(20, 8), nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(ids)
        if mask is not None:
            h = h * mask[..., None]
        return self.head(h.sum(1))


IDS, MASK = torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5)


@pytest.mark.parametrize(
    "inputs",
    [(IDS, MASK), ((IDS,), {"mask": MASK}), {"ids": IDS, "mask": MASK}],
    ids=["positional", "args-kwargs", "kwargs"],
)
def test_non_image_inputs_given_as_example_inputs(inputs):
    graph = build_graph(Masked(), inputs)
    ids_node, mask_node = _nodes(graph, "input")
    assert _parents(graph, _node_of(graph, "embed")) == [ids_node]
    assert _parents(graph, _only(graph, "mul")) == sorted([_node_of(graph, "embed"), mask_node])
    assert graph.params["embed.weight"].role == "embedding"
    assert graph.coverage().is_complete


def test_example_inputs_are_not_moved(tiny_cnn):
    x = torch.randn(1, 3, 8, 8)
    build_graph(tiny_cnn, x)
    assert x.device.type == "cpu"


def test_mlp_input_is_derived_from_its_first_linear(tiny_mlp):
    graph = build_graph(tiny_mlp)
    assert [node.op for node in graph.nodes] == ["input", "linear", "linear", "output"]
    assert graph.nodes[1].activation == "relu"
    assert graph.params["fc1.weight"].shape == (16, 8)
    assert (graph.params["fc1.weight"].fan_in, graph.params["fc2.weight"].fan_in) == (8, 16)


class WithExampleInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, *, scale: float) -> torch.Tensor:
        return self.fc(x) * scale

    def example_inputs(self) -> tuple[tuple[torch.Tensor], dict[str, float]]:
        return (torch.zeros(3, 6),), {"scale": 2.0}


def test_a_model_example_inputs_method_is_used():
    graph = build_graph(WithExampleInputs())
    assert [node.op for node in graph.nodes] == ["input", "linear", "output"]


# -- parameter layouts ----------------------------------------------------------------------------------------------
class LinearT(nn.Module):
    """F.linear with a weight stored (in, out) and transposed at use."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w.t())


class MatmulT(nn.Module):
    """x @ W.T with W stored (out, in), as nn.Linear stores it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T


class Matmul(nn.Module):
    """x @ W with W stored (in, out)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class MatmulTwiceT(nn.Module):
    """x @ W.T.contiguous().T: transposed twice, so W is read as stored (in, out)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.transpose(0, 1).contiguous().permute(1, 0)


@pytest.mark.parametrize(
    ("model_cls", "layout", "fan_in"),
    [(LinearT, "in_out", 4), (MatmulT, "out_in", 4), (Matmul, "in_out", 4), (MatmulTwiceT, "in_out", 4)],
)
def test_transposed_parameter_views_flip_the_layout(model_cls, layout, fan_in):
    graph = build_graph(model_cls(), torch.randn(2, 4))
    weight = graph.params["w"]
    assert (graph.nodes[weight.node].op, weight.role, weight.layout, weight.fan_in) == (
        "linear", "classifier", layout, fan_in,
    )  # fmt: skip


def test_transposed_square_weight_is_detected_by_strides():
    class SquareT(Matmul):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w.mT

    assert build_graph(SquareT(), torch.randn(2, 4)).params["w"].layout == "out_in"


def test_hf_conv1d_weight_has_in_out_layout_and_fan_in_rows():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    model = nn.Sequential(Conv1D(12, 4), nn.ReLU(), Conv1D(3, 12))  # Conv1D(nf=out, nx=in): weight (in, out)
    graph = build_graph(model, torch.randn(2, 5, 4))
    first, second = graph.params["0.weight"], graph.params["2.weight"]
    assert transformers is not None and first.shape == (4, 12)
    assert (first.layout, first.fan_in, first.fan_out, first.logical_shape) == ("in_out", 4, 12, (12, 4, 0, 0))
    assert (second.fan_in, second.role) == (12, "classifier")


class ScaledWeight(nn.Module):
    """Weights transformed before use: scaled by a constant and normalized (equalized lr, cosine heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4))
        self.v = nn.Parameter(torch.randn(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w * 0.5) + F.linear(x, F.normalize(self.v, dim=1))


def test_a_parameter_transformed_by_constants_keeps_its_layer():
    graph = build_graph(ScaledWeight(), torch.randn(2, 4))
    assert [node.op for node in graph.nodes] == ["input", "linear", "linear", "add", "output"]
    assert [(p.role, p.layout) for p in graph.params.values()] == [("weight", "out_in")] * 2


class SliceWrites(nn.Module):
    """Writes two branches into slices of a fresh buffer, and a learned token into its first row."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)
        self.token = nn.Parameter(torch.zeros(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0] + 1, 6)  # shape and device of x, none of its data
        out[1:, :3] = self.a(x)
        out[1:, 3:] = self.b(x)
        out[0] = self.token
        return out


def test_slice_writes_join_like_concat_and_fresh_buffers_carry_no_data():
    graph = build_graph(SliceWrites(), torch.randn(2, 4))
    concat, token = _only(graph, "concat"), _only(graph, "token")
    assert _parents(graph, concat) == sorted([_node_of(graph, "a"), _node_of(graph, "b")])
    assert _parents(graph, token) == [concat]
    assert _parents(graph, _only(graph, "output")) == [token]
    assert graph.params["token"].role == "embedding"
    assert not [edge for edge in graph.edges if edge[0] == _only(graph, "input") and edge[1] not in (1, 2)]


class TwoTokens(nn.Module):
    """A class and a distillation token before the patches, as in DeiT.

    Shapes:
        x: (B, T, 4)
        output: (B, T + 2, 4)
    """

    def __init__(self) -> None:
        super().__init__()
        self.cls, self.dist = nn.Parameter(torch.zeros(1, 1, 4)), nn.Parameter(torch.zeros(1, 1, 4))
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        return torch.cat((self.cls.expand(batch, -1, -1), self.dist.expand(batch, -1, -1), self.proj(x)), dim=1)


def test_a_concat_of_several_learned_tokens_owns_them_all():
    graph = build_graph(TwoTokens(), torch.randn(2, 3, 4))
    token = _only(graph, "token")
    assert graph.nodes[token].params == ["cls", "dist"]
    assert _parents(graph, token) == [_node_of(graph, "proj")]
    assert graph.params["cls"].role == graph.params["dist"].role == "embedding"


def test_an_add_of_two_parameters_is_unsupported():
    class SumOfParams(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * (self.a + self.b)

    with pytest.raises(UnsupportedOpError, match=r"\(SumOfParams\) passes parameter\(s\) 'a', 'b'"):
        build_graph(SumOfParams(), torch.randn(2, 4))


class BiasedAttention(nn.Module):
    """Self-attention with a learned additive bias of its logits passed as the mask.

    Shapes:
        x: (B, T, 4) with T = 5
        output: (B, T, 4)
    """

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.bias = nn.Parameter(torch.zeros(5, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)


def test_a_parameter_passed_as_attention_mask_is_a_position_embedding():
    graph = build_graph(BiasedAttention(), torch.randn(2, 5, 4))
    attention = _only(graph, "attention")
    assert graph.nodes[attention].params == ["bias"]
    assert graph.params["bias"].role == "position_embedding"
    assert _parents(graph, attention) == [_node_of(graph, "qkv")]


# -- determinism and side effects -----------------------------------------------------------------------------------
def test_building_twice_gives_identical_graphs(tiny_cnn):
    first, second = build_graph(tiny_cnn), build_graph(tiny_cnn)
    assert first.nodes == second.nodes
    assert first.edges == second.edges
    assert first.params == second.params
    assert first == second


def test_tracing_on_meta_leaves_a_cpu_model_untouched(tiny_cnn):
    tiny_cnn.bn.eval()  # a frozen part of a model in training mode stays frozen
    before = {name: t.clone() for name, t in tiny_cnn.state_dict().items()}
    params = {name: p for name, p in tiny_cnn.named_parameters()}
    build_graph(tiny_cnn)
    after = tiny_cnn.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].device.type == "cpu"
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=0)
    assert all(p is params[name] for name, p in tiny_cnn.named_parameters())
    assert tiny_cnn.training and not tiny_cnn.bn.training and tiny_cnn.conv.training
    for module in tiny_cnn.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("training", [True, False])
def test_build_restores_each_module_training_flag(tiny_cnn, training):
    tiny_cnn.train(training)
    tiny_cnn.bn.train(not training)
    build_graph(tiny_cnn)
    assert {name: m.training for name, m in tiny_cnn.named_modules()} == {
        "": training, "stem": training, "bn": not training, "conv": training, "head": training,
    }  # fmt: skip


def test_tracing_on_the_model_device_gives_the_same_graph(tiny_cnn):
    graph = build_graph(tiny_cnn, device=None)
    assert graph == build_graph(tiny_cnn)
    assert tiny_cnn.bn.num_batches_tracked.item() == 0  # traced in eval mode: no running-stat updates


@pytest.mark.gpu
def test_tracing_a_cuda_model_on_its_device_matches_meta(tiny_cnn):
    model = tiny_cnn.cuda()
    graph = build_graph(model, torch.zeros(1, 3, 16, 16, device="cuda"), device=None)
    assert graph == build_graph(model)
    assert all(p.device.type == "cuda" for p in model.parameters())


def test_a_meta_model_cannot_be_traced_on_cpu(tiny_mlp):
    with pytest.raises(GraphError, match="on 'meta'.*device='meta'"):
        build_graph(tiny_mlp.to("meta"), device="cpu")


def test_a_meta_model_traces_on_meta(tiny_mlp):
    assert build_graph(tiny_mlp.to("meta")) == build_graph(tiny_mlp, device=None)


class DataDependent(nn.Module):
    """A forward that reads a value (meta tensors have none), as input checks and dynamic shapes do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = int(x.abs().sum().item() >= 0) + 1  # 2
        return self.fc(x[:, :keep].repeat(1, 2))


def test_a_forward_that_reads_values_asks_for_device_none_and_works_with_it():
    with pytest.raises(GraphError, match="pass device=None to trace with real values"):
        build_graph(DataDependent(), torch.randn(3, 4))
    graph = build_graph(DataDependent(), torch.randn(3, 4), device=None)
    assert [node.op for node in graph.nodes] == ["input", "linear", "output"]


# -- bad input ------------------------------------------------------------------------------------------------------
def test_a_non_module_is_a_type_error():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got 'function'"):
        build_graph(lambda x: x)


@pytest.mark.parametrize("model", [nn.ReLU(), nn.Linear(2, 2).requires_grad_(False)], ids=["none", "frozen"])
def test_a_model_without_trainable_parameters_is_a_graph_error(model):
    with pytest.raises(GraphError, match="has no trainable parameters"):
        build_graph(model, torch.randn(1, 2))


def test_a_lazy_module_is_a_graph_error_that_asks_for_one_forward():
    model = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(GraphError, match=r"Parameter '0\.weight' .* uninitialized .* Run one forward pass"):
        build_graph(model, torch.randn(2, 4))
    model(torch.randn(2, 4))
    assert build_graph(model, torch.randn(2, 4)).coverage().is_complete


def test_a_failing_forward_is_a_graph_error_that_asks_for_example_inputs():
    with pytest.raises(GraphError, match=r"forward of 'Linear' failed.*RuntimeError.*Pass example_inputs=") as info:
        build_graph(nn.Linear(4, 3), torch.randn(2, 5))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_an_underivable_input_asks_for_example_inputs():
    with pytest.raises(GraphError, match=r"Cannot derive example inputs for model 'Sequential'\. Pass example_inputs="):
        build_graph(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)))


def test_example_inputs_of_a_wrong_type_are_a_type_error(tiny_mlp):
    with pytest.raises(TypeError, match="example_inputs must be a tensor.*got 'str'"):
        build_graph(tiny_mlp, "x")


def test_an_output_without_data_flow_is_a_graph_error():
    class Constant(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(2, device=x.device)

    with pytest.raises(GraphError, match="not computed from its inputs or parameters"):
        build_graph(Constant(2, 2), torch.randn(1, 2))


class Mixer(nn.Module):
    """Mixes features with a weight through einsum, which the op vocabulary does not cover.

    Shapes:
        x: (B, T, 4)
        output: (B, T, 6)
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btd,de->bte", x, self.w)


class MixerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm, self.mix, self.head = nn.LayerNorm(4), Mixer(), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.norm(x)))


X_MIX = torch.randn(2, 3, 4)


def test_an_unsupported_op_on_a_parameter_names_the_module_and_the_fix():
    pattern = r"Module 'mix' \(Mixer\) passes parameter\(s\) 'mix\.w' to 'einsum'.*register_op"
    with pytest.raises(UnsupportedOpError, match=pattern):
        build_graph(MixerNet(), X_MIX)


def test_unsupported_op_error_is_a_graph_error_and_a_runtime_error():
    with pytest.raises(GraphError):
        build_graph(MixerNet(), X_MIX)
    with pytest.raises(RuntimeError):
        build_graph(MixerNet(), X_MIX)
    assert issubclass(UnsupportedOpError, GHNError)


def test_non_strict_build_lists_unsupported_parameters_in_coverage():
    graph = build_graph(MixerNet(), X_MIX, strict=False)
    coverage = graph.coverage()
    assert not coverage.is_complete
    assert list(coverage.missing) == ["mix.w"]
    assert "einsum" in coverage.missing["mix.w"] and "'mix'" in coverage.missing["mix.w"]
    assert coverage.num_total - coverage.num_owned == 24
    assert _parents(graph, _node_of(graph, "head")) == [_only(graph, "other")]  # data flow is kept


@pytest.fixture
def mixer_op():
    spec = register_op(
        name="test_mixer", kind="layer", module_types=(Mixer,), slots={"w": ParamSlot("weight", "in_out")}
    )
    try:
        yield spec
    finally:
        unregister_op("test_mixer")


def test_a_registered_op_covers_the_module(mixer_op):
    graph = build_graph(MixerNet(), X_MIX)
    assert graph.coverage().is_complete
    mix = _node_of(graph, "mix")
    assert graph.nodes[mix].op == "test_mixer" and graph.nodes[mix].op_id == mixer_op.id >= 1000
    assert _parents(graph, mix) == [_node_of(graph, "norm")]
    assert _parents(graph, _node_of(graph, "head")) == [mix]
    weight = graph.params["mix.w"]
    assert (weight.role, weight.layout, weight.fan_in) == ("weight", "in_out", 4)
    assert graph.to_pyg().op[mix].item() == mixer_op.id


def test_unregistering_the_op_makes_the_module_unsupported_again(mixer_op):
    build_graph(MixerNet(), X_MIX)
    unregister_op("test_mixer")
    try:
        with pytest.raises(UnsupportedOpError):
            build_graph(MixerNet(), X_MIX)
    finally:
        register_op(mixer_op)  # the fixture unregisters it
    assert "test_mixer" in OPS


# -- Hugging Face models ----------------------------------------------------------------------------------------------
def _hf(model_class: str, config_class: str, **config) -> nn.Module:
    """A `transformers` model of a config no 'hf:' preset of the zoo matches."""
    import transformers

    return getattr(transformers, model_class)(getattr(transformers, config_class)(**config))


@needs_transformers
def test_hf_gpt2():
    config = dict(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    model = _hf("GPT2LMHeadModel", "GPT2Config", **config)
    graph = build_graph(model)
    assert graph.coverage().is_complete
    assert graph.num_params == sum(p.numel() for p in model.parameters())
    wte = graph.params["transformer.wte.weight"]
    assert "lm_head.weight" not in graph.params and wte.aliases == ("lm_head.weight",)
    lm_head = _nodes(graph, "linear")[-1]
    assert graph.nodes[lm_head].module == "lm_head" and graph.nodes[lm_head].shared == ["transformer.wte.weight"]
    assert wte.uses == [wte.node, lm_head] and wte.role == "embedding"
    names = ("attn.c_attn", "mlp.c_fc", "mlp.c_proj")
    c_attn, c_fc, c_proj = (graph.params[f"transformer.h.0.{name}.weight"] for name in names)
    assert (c_attn.layout, c_attn.shape, c_attn.fan_in, c_attn.fan_out) == ("in_out", (32, 96), 32, 96)
    assert (c_fc.fan_in, c_proj.fan_in, c_proj.fan_out) == (32, 128, 32)
    assert c_fc.logical_shape == (128, 32, 0, 0)
    assert len(_nodes(graph, "attention")) == 2 and len(_nodes(graph, "layer_norm")) == 5
    assert [graph.nodes[i].activation for i in _nodes(graph, "linear")].count("gelu_approx") == 2


@needs_transformers
def test_hf_model_output_from_keyword_inputs():
    model = create("hf:bert-tiny")
    inputs = {"input_ids": torch.zeros(1, 7, dtype=torch.long), "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    graph = build_graph(model, inputs)
    assert graph.coverage().is_complete
    assert graph.params["classifier.weight"].role == "classifier"
    assert graph.nodes[_node_of(graph, "bert.pooler.dense")].activation == "tanh"
    assert graph.nodes[_node_of(graph, "bert.encoder.layer.0.intermediate.dense")].activation == "gelu"
    assert graph.nodes[_only(graph, "output") - 1].module == "classifier"
    assert graph.to_pyg().num_nodes == graph.num_nodes


@needs_transformers
def test_hf_llama():
    model = create("hf:llama-tiny")
    graph = build_graph(model)
    assert graph.coverage().is_complete
    assert len(_nodes(graph, "rms_norm")) == 5 and len(_nodes(graph, "attention")) == 2
    gate = _node_of(graph, "model.layers.0.mlp.gate_proj")
    assert graph.nodes[gate].activation == "silu"
    mul = [i for i in _nodes(graph, "mul") if graph.nodes[i].module == "model.layers.0.mlp"]
    assert [_parents(graph, i) for i in mul] == [sorted([gate, _node_of(graph, "model.layers.0.mlp.up_proj")])]
    assert graph.params["model.norm.weight"].role == "norm_scale"
    assert graph.params["lm_head.weight"].role == "classifier"


@needs_transformers
def test_hf_vit():
    model = create("hf:vit-tiny")
    graph = build_graph(model)
    assert graph.coverage().is_complete
    roles = {name: info.role for name, info in graph.params.items()}
    assert roles["vit.embeddings.cls_token"] == "embedding"
    assert roles["vit.embeddings.position_embeddings"] == "position_embedding"
    assert roles["classifier.weight"] == "classifier"
    assert graph.nodes[_only(graph, "token")].module == "vit.embeddings"


@needs_transformers
@pytest.mark.parametrize(
    ("spec", "overrides", "head"),
    [
        ("hf:resnet-tiny", {}, "classifier.1"),
        ("hf:resnet-tiny", {"layer_type": "bottleneck"}, "classifier.1"),
        ("hf:convnext-tiny", {}, "classifier"),
    ],
    ids=["resnet-basic", "resnet-bottleneck", "convnext"],
)
def test_hf_vision_cnns(spec, overrides, head):
    model = create(spec, **overrides)
    graph = build_graph(model)
    assert graph.coverage().is_complete, graph.coverage()
    assert graph.params[f"{head}.weight"].role == "classifier"
    assert [name for name, info in graph.params.items() if info.role == "classifier"] == [f"{head}.weight"]
    assert _nodes(graph, "conv") and _nodes(graph, "add")


@needs_transformers
def test_hf_swin_relative_position_bias_is_owned_by_attention():
    config = dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3)
    graph = build_graph(_hf("SwinForImageClassification", "SwinConfig", **config))
    assert graph.coverage().is_complete, graph.coverage()
    tables = [info for name, info in graph.params.items() if name.endswith("relative_position_bias_table")]
    assert len(tables) == 2
    assert all(graph.nodes[info.node].op == "attention" and info.role == "position_embedding" for info in tables)


@needs_transformers
def test_hf_encoder_decoder_inputs_are_derived_for_both_stacks():
    config = dict(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    graph = build_graph(_hf("T5ForConditionalGeneration", "T5Config", **config))
    assert graph.coverage().is_complete, graph.coverage()
    assert len(_nodes(graph, "input")) == 2
    modules = {node.module.split(".")[0] for node in graph.nodes if node.params or node.shared}
    assert {"encoder", "decoder", "lm_head"} <= modules
    shared = graph.params["shared.weight"]  # one tensor embeds for both stacks and is the (tied) head
    assert set(shared.aliases) == {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert len(shared.uses) == 3


# -- the zoo --------------------------------------------------------------------------------------------------------
FAST_PRESETS = ["zoo:resnet18", "zoo:vit-s/16", "zoo:gpt2"]
NUM_SAMPLED_CNNS = 30


def _check_zoo_graph(graph: ComputationGraph, model: nn.Module) -> None:
    assert graph.coverage().is_complete, graph.coverage()
    assert graph.num_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert len(_nodes(graph, "output")) == 1


@pytest.mark.parametrize("spec", FAST_PRESETS)
def test_zoo_presets_build_on_meta(spec):
    model = create(spec, device="meta")
    _check_zoo_graph(build_graph(model), model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec", [pytest.param(s, marks=needs_transformers) if s.startswith("hf:") else s for s in names()]
)
def test_every_zoo_spec_builds_on_meta(spec):
    model = create(spec, device="meta")
    _check_zoo_graph(build_graph(model), model)


def _sampled_cnn(seed: int) -> nn.Module:
    family = FAMILIES.get("cnn")
    config = family.sample(torch.Generator().manual_seed(seed))
    with torch.device("meta"):
        return family.build(config)


@pytest.mark.parametrize("seed", range(NUM_SAMPLED_CNNS))
def test_sampled_cnns_build_with_full_coverage(seed):
    model = _sampled_cnn(seed)
    _check_zoo_graph(build_graph(model), model)


# Golden node and edge counts of reference models: a change here changes what every trained GHN has seen.
GOLDEN_COUNTS = {"zoo:resnet18": (53, 60), "zoo:vit-s/16": (115, 138), "zoo:gpt2": (115, 138)}


@pytest.mark.parametrize("spec", sorted(GOLDEN_COUNTS))
def test_reference_graphs_keep_their_node_and_edge_counts(spec):
    graph = build_graph(create(spec, device="meta"))
    assert (graph.num_nodes, graph.num_edges) == GOLDEN_COUNTS[spec]


def test_graphs_of_the_same_preset_are_identical():
    first, second = (build_graph(create("zoo:resnet18", device="meta")) for _ in range(2))
    assert first == second
