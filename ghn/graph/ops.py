"""The op vocabulary: every graph node's op, the traced functions and module classes it covers, and parameter roles.

Ids are explicit, only ever appended and never reused (`tests/graph/test_ops.py` pins them), because a trained GHN
stores one embedding row per id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ghn.errors import RegistryError
from ghn.registry import Registry

__all__ = [
    "OPS",
    "ROLES",
    "OpSpec",
    "ParamList",
    "ParamSlot",
    "register_op",
    "unregister_op",
    "op_for_function",
    "op_for_module",
    "role_id",
]

OpKind = Literal["input", "output", "layer", "merge", "node", "activation"]
Layout = Literal["out_in", "in_out", "vector"]

#: Parameter roles, in id order (ids are positions; only ever appended).
ROLES: tuple[str, ...] = (
    "weight",
    "bias",
    "norm_scale",
    "norm_shift",
    "embedding",
    "position_embedding",
    "classifier",
    "other",
)


def role_id(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True)
class ParamSlot:
    """How an op uses a parameter passed at one argument position.

    `layout` says where fan-in sits: 'out_in' (nn.Linear, convs: (out, in, *kernel)), 'in_out' (HF Conv1D and
    `x @ W`: (in, out)), or 'vector' (1-D and other parameters whose fan-in is their last dimension).
    `num_blocks` counts the equal blocks stacked along dim 0 that are separate output groups: the gates of a GRU (3)
    or LSTM (4), the q, k and v of a fused attention projection (3).
    """

    role: str
    layout: Layout = "out_in"
    num_blocks: int = 1


@dataclass(frozen=True)
class ParamList:
    """How an op uses the parameters passed together in one list argument (the flat weights that nn.RNN, nn.GRU
    and nn.LSTM pass to torch.rnn_tanh, torch.gru, torch.lstm), told apart by their names.

    Attributes:
        slots: (regex, slot) pairs; a parameter gets the slot of the first regex its leaf name fully matches (one
            that matches none is unsupported).
        stages: a regex searched in each leaf name with a `stage` group (an integer) and optionally a `branch`
            group. The call becomes one node per (stage, branch), each stage fed by all nodes of the stage before
            (the first by the call's inputs), and a 'concat' of the last stage's branches when there are several:
            the layers and directions of a stacked bidirectional LSTM. None keeps the call one node.
    """

    slots: tuple[tuple[str, ParamSlot], ...]
    stages: str | None = None

    def slot_for(self, name: str) -> ParamSlot | None:
        leaf = name.rsplit(".", 1)[-1]
        return next((slot for pattern, slot in self.slots if re.fullmatch(pattern, leaf)), None)


@dataclass(frozen=True)
class OpSpec:
    """One entry of the op vocabulary.

    Attributes:
        name: registry key, also the node's `op` attribute.
        id: the integer a GHN embeds; explicit and stable.
        kind: 'layer' (owns parameters), 'merge' (joins two or more inputs), 'node' (op kept as a node that owns
            parameters only through its `slots`), 'activation' (folded into the node it follows), 'input'/'output'.
        functions: traced torch functions and Tensor methods that map to this op.
        module_types: module classes traced as one opaque node of this op (their insides are not traced).
        module_name_patterns: regexes on module class names (`re.search`) with the same effect, for classes of
            libraries that are optional (for example a model's own RMSNorm).
        slots: argument position or keyword -> how a parameter passed there is used (a `ParamList` for a list of
            parameters). For opaque modules the keys are parameter-name suffixes ('weight', 'bias') and everything
            else gets role 'other'.
        node_op: the op recorded on the node when it differs from `name` (torch.addmm is a 'linear' node).
        with_param: for merges, the op a call becomes when a parameter is one of its operands
            (x + p is a 'shift', x * p a 'scale', cat(p, x) a 'token', x @ W a 'linear').
    """

    name: str
    id: int
    kind: OpKind
    functions: tuple[Callable, ...] = ()
    module_types: tuple[type, ...] = ()
    module_name_patterns: tuple[str, ...] = ()
    slots: dict[int | str, ParamSlot | ParamList] = field(default_factory=dict)
    node_op: str | None = None
    with_param: str | None = None

    def __post_init__(self) -> None:
        for value in self.slots.values():
            for slot in [s for _, s in value.slots] if isinstance(value, ParamList) else [value]:
                if slot.role not in ROLES:
                    raise RegistryError(f"Op {self.name!r} uses unknown role {slot.role!r}. Use one of {ROLES}.")

    @property
    def op(self) -> str:
        return self.node_op or self.name

    @property
    def is_opaque_module(self) -> bool:
        return bool(self.module_types or self.module_name_patterns)


OPS: Registry[OpSpec] = Registry("op")
_function_index: dict[Callable, OpSpec] = {}
_module_cache: dict[type, OpSpec | None] = {}


def register_op(spec: OpSpec | None = None, /, **fields) -> OpSpec:
    """Add an op to the vocabulary, as an `OpSpec` or its fields; `id` defaults to the next free one (>= 1000).

    Example:
        >>> register_op(name="my_mixer", kind="layer", module_types=(MyMixer,),
        ...             slots={"weight": ParamSlot("weight"), "bias": ParamSlot("bias", "vector")})
    """
    if spec is None:
        if "id" not in fields:
            fields["id"] = max([1000] + [s.id + 1 for s in OPS.values() if s.id >= 1000])
        spec = OpSpec(**fields)
    taken = {s.id: s.name for s in OPS.values()}
    if spec.id in taken:
        raise RegistryError(f"Op id {spec.id} is already used by {taken[spec.id]!r}. Pick another id.")
    for fn in spec.functions:
        if fn in _function_index:
            raise RegistryError(f"Function {fn!r} already maps to op {_function_index[fn].name!r}.")
    OPS.register(spec.name, spec)
    _function_index.update(dict.fromkeys(spec.functions, spec))
    _module_cache.clear()
    return spec


def unregister_op(name: str) -> OpSpec:
    """Remove the op `name` from the vocabulary (its functions and module classes included) and return it.

    Meant for ops a user registered for one model, and for tests. Built-in ids stay reserved by the golden table:
    re-registering a built-in op must reuse its id.

    Raises:
        UnknownNameError: no op is registered under `name`.
    """
    spec = OPS.unregister(name)
    for fn in spec.functions:
        if _function_index.get(fn) is spec:
            del _function_index[fn]
    _module_cache.clear()
    return spec


def op_for_function(func: Callable) -> OpSpec | None:
    """The op a traced function call maps to, or None for pass-through calls (views, dtype casts, dropout)."""
    return _function_index.get(func)


def op_for_module(module: nn.Module) -> OpSpec | None:
    """The op that traces `module` as one opaque node, or None when its forward is traced inside."""
    cls = type(module)
    if cls not in _module_cache:
        _module_cache[cls] = next((spec for spec in OPS.values() if _matches(spec, cls)), None)
    return _module_cache[cls]


def _matches(spec: OpSpec, cls: type) -> bool:
    if spec.module_types and issubclass(cls, spec.module_types):
        return True
    return any(re.search(p, cls.__name__) for p in spec.module_name_patterns)


def _methods(*names: str) -> tuple[Callable, ...]:
    """Tensor methods and torch functions by name, skipping names this torch build lacks."""
    found = []
    for name in names:
        owner, _, attr = name.rpartition(".")
        obj = {"Tensor": torch.Tensor, "torch": torch, "F": F, "nn": torch._C._nn}[owner]
        if hasattr(obj, attr):
            found.append(getattr(obj, attr))
    return tuple(dict.fromkeys(found))


_W, _B = ParamSlot("weight"), ParamSlot("bias", "vector")
_SCALE, _SHIFT = ParamSlot("norm_scale", "vector"), ParamSlot("norm_shift", "vector")


def _layer(name: str, id: int, functions: tuple, slots: dict, **extra) -> None:
    register_op(OpSpec(name=name, id=id, kind="layer", functions=functions, slots=slots, **extra))


def _simple(name: str, id: int, kind: OpKind, functions: tuple = (), **extra) -> None:
    register_op(OpSpec(name=name, id=id, kind=kind, functions=functions, **extra))


# Ids 0-99: graph structure and parameterized layers.
_simple("input", 0, "input")
_simple("output", 1, "output")
_layer("linear", 2, _methods("F.linear", "nn.linear"), {1: _W, "weight": _W, 2: _B, "bias": _B})
_layer(
    "conv",
    3,
    _methods("torch.conv1d", "torch.conv2d", "torch.conv3d", "F.conv1d", "F.conv2d", "F.conv3d"),
    {1: _W, "weight": _W, 2: _B, "bias": _B},
)
_layer(
    "conv_transpose",
    4,
    _methods("torch.conv_transpose1d", "torch.conv_transpose2d", "torch.conv_transpose3d", "F.conv_transpose2d"),
    # (in, out / groups, *kernel): the input channels lead, as in x @ W.
    {1: ParamSlot("weight", "in_out"), "weight": ParamSlot("weight", "in_out"), 2: _B, "bias": _B},
)
_layer("embedding", 5, _methods("F.embedding"), {1: ParamSlot("embedding", "vector"), "weight": ParamSlot("embedding", "vector")})
_layer("layer_norm", 6, _methods("F.layer_norm", "torch.layer_norm"), {2: _SCALE, "weight": _SCALE, 3: _SHIFT, "bias": _SHIFT})
_layer("batch_norm", 7, _methods("F.batch_norm", "torch.batch_norm"), {3: _SCALE, "weight": _SCALE, 4: _SHIFT, "bias": _SHIFT})
_layer("group_norm", 8, _methods("F.group_norm", "torch.group_norm"), {2: _SCALE, "weight": _SCALE, 3: _SHIFT, "bias": _SHIFT})
_layer("instance_norm", 9, _methods("F.instance_norm", "torch.instance_norm"), {3: _SCALE, "weight": _SCALE, 4: _SHIFT, "bias": _SHIFT})
_layer(
    "rms_norm",
    10,
    _methods("F.rms_norm", "torch.rms_norm"),
    {2: _SCALE, "weight": _SCALE},
    # Norm modules that libraries write by hand (Llama, T5, Mistral, ...) are traced as one node.
    module_name_patterns=(r"RMSNorm$", r"^T5LayerNorm$"),
)
_layer(
    "addmm",
    11,
    _methods("torch.addmm", "Tensor.addmm"),
    # torch.addmm(bias, x, W) with W stored (in, out): the layout of HF Conv1D.
    {0: _B, "input": _B, 2: ParamSlot("weight", "in_out"), "mat2": ParamSlot("weight", "in_out")},
    node_op="linear",
)
_QKV_W, _QKV_B = ParamSlot("weight", num_blocks=3), ParamSlot("bias", "vector", num_blocks=3)  # fused q, k, v
_layer(
    "multihead_attention",
    12,
    _methods("F.multi_head_attention_forward"),
    {
        5: _QKV_W, "in_proj_weight": _QKV_W, 6: _QKV_B, "in_proj_bias": _QKV_B,
        7: ParamSlot("other", "vector"), "bias_k": ParamSlot("other", "vector"),
        8: ParamSlot("other", "vector"), "bias_v": ParamSlot("other", "vector"),
        11: _W, "out_proj_weight": _W, 12: _B, "out_proj_bias": _B,
        "q_proj_weight": _W, "k_proj_weight": _W, "v_proj_weight": _W,
    },
)
_layer("prelu", 13, _methods("F.prelu", "torch.prelu"), {1: ParamSlot("other", "vector"), "weight": ParamSlot("other", "vector")})
# Layers made by merges with a parameter operand; the parameter's slot is decided in build.py by its shape.
_layer("shift", 14, (), {})
_layer("scale", 15, (), {})
_layer("token", 16, (), {})


def _recurrent(name: str, id: int, function: Callable, num_gates: int) -> None:
    """A recurrent op: nn.RNN/GRU/LSTM pass every layer's weights to one torch call, as a list at position 2 (at 3
    for a PackedSequence). weight_ih (gates * hidden, in) and weight_hh (gates * hidden, hidden or proj_size) hold
    one block per gate; weight_hr (proj_size, hidden) is an LSTM's output projection. Each layer and direction
    (`_l1_reverse`) becomes one node."""
    suffix = r"_l\d+(_reverse)?"
    weights = ParamList(
        slots=(
            (rf"weight_(ih|hh){suffix}", ParamSlot("weight", num_blocks=num_gates)),
            (rf"weight_hr{suffix}", ParamSlot("weight")),
            (rf"bias_(ih|hh){suffix}", ParamSlot("bias", "vector", num_blocks=num_gates)),
        ),
        stages=r"_l(?P<stage>\d+)(?P<branch>_reverse)?$",
    )
    _layer(name, id, (function,), {2: weights, 3: weights})


_recurrent("rnn_tanh", 17, torch.rnn_tanh, 1)
_recurrent("rnn_relu", 18, torch.rnn_relu, 1)
_recurrent("gru", 19, torch.gru, 3)
_recurrent("lstm", 20, torch.lstm, 4)

# Ids 100-199: merges. A merge with one traced input and one parameter becomes a layer (see build.py):
# x + p is a bias or position embedding, x * p a learned scale, cat(p, x) a learned token, x @ W a linear map.
_simple("add", 100, "merge", _methods("torch.add", "Tensor.add", "Tensor.add_", "Tensor.__add__", "Tensor.__radd__", "Tensor.__iadd__"), with_param="shift")
_simple("sub", 101, "merge", _methods("torch.sub", "Tensor.sub", "Tensor.sub_", "Tensor.__sub__", "Tensor.__rsub__", "Tensor.__isub__"), with_param="shift")
_simple("mul", 102, "merge", _methods("torch.mul", "Tensor.mul", "Tensor.mul_", "Tensor.__mul__", "Tensor.__rmul__", "Tensor.__imul__"), with_param="scale")
_simple("div", 103, "merge", _methods("torch.div", "Tensor.div", "Tensor.div_", "Tensor.__truediv__", "Tensor.__rtruediv__", "Tensor.__itruediv__"), with_param="scale")
# Writing a tensor into slices of another (`x[:, :k] = y`, traced as a call on (x, y)) joins them like a concat.
_simple("concat", 104, "merge", _methods("torch.cat", "torch.concat", "torch.concatenate", "torch.stack", "torch.hstack", "torch.vstack", "Tensor.__setitem__"), with_param="token")
_simple(
    "matmul",
    105,
    "merge",
    _methods("torch.matmul", "Tensor.matmul", "Tensor.__matmul__", "Tensor.__rmatmul__", "torch.mm", "Tensor.mm", "torch.bmm", "Tensor.bmm"),
    slots={0: ParamSlot("weight", "out_in"), 1: ParamSlot("weight", "in_out")},
    with_param="linear",
)
_simple("other", 106, "merge")  # any other parameter-free call that joins several traced tensors

# Ids 200-299: parameter-free nodes that shape the data flow.
# A parameter passed as the mask is a learned additive bias of the attention logits: a (relative) position embedding.
_ATTENTION_BIAS = ParamSlot("position_embedding", "vector")
_simple("attention", 200, "node", _methods("F.scaled_dot_product_attention"), slots={3: _ATTENTION_BIAS, "attn_mask": _ATTENTION_BIAS})
_simple("softmax", 201, "node", _methods("F.softmax", "torch.softmax", "Tensor.softmax", "F.log_softmax", "torch.log_softmax", "Tensor.log_softmax"))
_simple("max_pool", 202, "node", _methods("F.max_pool1d", "F.max_pool2d", "F.max_pool3d", "torch.max_pool1d", "torch.max_pool2d", "torch.max_pool3d", "F.max_pool2d_with_indices", "F.max_pool1d_with_indices"))
_simple("avg_pool", 203, "node", _methods("F.avg_pool1d", "F.avg_pool2d", "F.avg_pool3d", "torch.avg_pool1d", "nn.avg_pool2d", "nn.avg_pool3d"))
_simple("global_avg_pool", 204, "node", _methods("F.adaptive_avg_pool1d", "F.adaptive_avg_pool2d", "F.adaptive_avg_pool3d", "torch.adaptive_avg_pool1d", "nn.adaptive_avg_pool2d", "nn.adaptive_avg_pool3d"))
_simple("global_max_pool", 205, "node", _methods("F.adaptive_max_pool1d", "F.adaptive_max_pool2d", "F.adaptive_max_pool3d", "F.adaptive_max_pool2d_with_indices"))
_simple("mean", 206, "node", _methods("torch.mean", "Tensor.mean", "torch.sum", "Tensor.sum", "torch.amax", "Tensor.amax"))
_simple("normalize", 207, "node", _methods("F.normalize"))

# Ids 300-399: activations, folded into the node they follow.
_ACTIVATIONS = {
    "relu": ("F.relu", "F.relu_", "torch.relu", "torch.relu_", "Tensor.relu", "Tensor.relu_"),
    "gelu": ("F.gelu", "nn.gelu"),
    "silu": ("F.silu", "Tensor.silu"),
    "sigmoid": ("F.sigmoid", "torch.sigmoid", "Tensor.sigmoid", "Tensor.sigmoid_"),
    "tanh": ("F.tanh", "torch.tanh", "Tensor.tanh", "Tensor.tanh_"),
    "hardswish": ("F.hardswish", "nn.hardswish"),
    "hardsigmoid": ("F.hardsigmoid", "nn.hardsigmoid"),
    "relu6": ("F.relu6", "nn.relu6"),
    "leaky_relu": ("F.leaky_relu", "nn.leaky_relu"),
    "elu": ("F.elu", "nn.elu", "F.selu", "torch.selu", "F.celu"),
    "mish": ("F.mish", "nn.mish"),
    "softplus": ("F.softplus", "nn.softplus"),
}
# nn.ReLU6 runs F.hardtanh(x, 0, 6), which is not ReLU6 in general, so the module class is matched instead.
_ACTIVATION_MODULES = {"relu6": (nn.ReLU6,)}
for _offset, (_name, _fns) in enumerate(_ACTIVATIONS.items()):
    _simple(_name, 300 + _offset, "activation", _methods(*_fns), module_types=_ACTIVATION_MODULES.get(_name, ()))
# Activation modules that libraries write as formulas (HF NewGELUActivation, QuickGELU, ...) fold as one op.
_simple(
    "gelu_approx",
    300 + len(_ACTIVATIONS),
    "activation",
    # A prefix or 'Tanh' is required: torch's nn.GELU and HF's GELUActivation call F.gelu and trace as 'gelu'.
    module_name_patterns=(r"^(New|Fast|Quick|Accurate)GELU(Activation)?$", r"^(Pytorch)?GELUTanh$"),
)
