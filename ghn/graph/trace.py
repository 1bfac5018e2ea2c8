"""Record a model's forward pass as graph nodes by intercepting torch calls (`TorchFunctionMode`) and module calls.

Every tensor the forward makes is mapped to the node that produced it (or to the parameter it is a view of), so edges
come from real data flow: no positional heuristics and no per-architecture patches. Calls are resolved through the op
vocabulary in `ghn.graph.ops`; calls it does not list are pass-through (views, casts, dropout, scalar arithmetic).
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ghn.graph.graph import Node, ParamInfo
from ghn.graph.ops import OPS, ROLES, OpSpec, ParamList, ParamSlot, op_for_function, op_for_module

__all__ = ["Tracer"]

Ref = int | str  # a node index, or the name of the parameter a tensor is (a view of)
_OTHER_SLOT = ParamSlot("other", "vector")


@dataclass
class _OpaqueCall:
    module: nn.Module
    path: str
    spec: OpSpec
    refs: list[tuple[Any, Ref]]


class Tracer(TorchFunctionMode):
    """Builds `nodes`, `edges` and `params` while a forward pass runs under it (see `ghn.graph.build`).

    Args:
        params: every parameter of the model by canonical name, with `node` unset.
        tensors: the tensor standing for each canonical parameter name during the forward.
    """

    def __init__(self, params: dict[str, ParamInfo], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.params = params
        self.tensors = tensors
        self.nodes: list[Node] = []
        self.edges: list[tuple[int, int]] = []
        self.unsupported: list[str] = []
        self._table: dict[int, Ref] = {id(t): name for name, t in self.tensors.items()}
        self._flipped: set[int] = set()  # ids of views of parameters whose two leading dims are swapped (w.T)
        self._module_stack: list[tuple[str, str]] = []
        self._opaque: list[_OpaqueCall] = []

    # -- public steps -------------------------------------------------------------------------------------------
    def add_inputs(self, inputs: Any) -> None:
        """One 'input' node for every tensor in the example inputs."""
        for tensor in _tensors(inputs):
            index = self._add_node("input", [], [])
            self._bind(tensor, index)

    def add_output(self, output: Any) -> bool:
        """The 'output' node, fed by every traced tensor in the model's output; False when there is none."""
        refs = [self._table.get(id(t)) for t in _tensors(output)]
        sources = [r for r in dict.fromkeys(refs) if isinstance(r, int)]
        if sources:
            self._add_node("output", sources, [])
        return bool(sources)

    def hook(self, model: nn.Module) -> list[Any]:
        """Register module hooks that keep the module path and trace opaque modules; returns their handles."""
        handles = []
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            handles.append(module.register_forward_hook(self._post_hook(), with_kwargs=True, always_call=True))
        return handles

    # -- module hooks -------------------------------------------------------------------------------------------
    def _pre_hook(self, path: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._module_stack.append((path, type(module).__name__))
            spec = op_for_module(module) if path else None
            if spec is not None and not self._opaque:
                self._opaque.append(_OpaqueCall(module, path, spec, self._refs(args, kwargs)))
            elif self._opaque:
                self._opaque.append(_OpaqueCall(module, path, spec, []))  # nested inside an opaque module

        return hook

    def _post_hook(self):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self._module_stack:
                self._module_stack.pop()
            if not self._opaque or self._opaque[-1].module is not module:
                return
            call = self._opaque.pop()
            if not self._opaque:
                self._finish_opaque(call, output)

        return hook

    def _finish_opaque(self, call: _OpaqueCall, output: Any) -> None:
        sources = [r for _, r in call.refs if isinstance(r, int)]
        if call.spec.kind == "activation":
            ref = sources[0] if sources else None
            if ref is not None and self.nodes[ref].activation is None:
                self.nodes[ref].activation = call.spec.name
        else:
            prefix = call.path + "."
            params = []
            for name, tensor in call.module.named_parameters(prefix=call.path):
                canonical = self._table.get(id(tensor), name)
                suffix = name[len(prefix):] if name.startswith(prefix) else name
                params.append((canonical, call.spec.slots.get(suffix.rsplit(".", 1)[-1], _OTHER_SLOT)))
            self._module_stack.append((call.path, type(call.module).__name__))
            ref = self._add_node(call.spec.op, sources, params)
            self._module_stack.pop()
        for tensor in _tensors(output):
            if ref is not None:
                self._bind(tensor, ref)

    # -- torch calls --------------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TRUTH_TESTS and _is_meta_flag(args[0]):
            # A meta tensor has no values. Libraries test flags such as "the mask is all ones" or "the sequence is
            # not packed" before choosing a path; the graph follows the common path, where the answer is True.
            return True
        out = func(*args, **kwargs)
        if self._opaque or func in _FRESH:
            return out
        if func is _SETITEM:
            # `x[index] = value` returns None and writes value's data into x: record the write as a call on
            # (x, value) whose result is x. The index is addressing, not data.
            args, kwargs, out = (args[0], args[2]), {}, args[0]
        if not _has_tensor(out):
            return out
        refs = self._refs(args, kwargs)
        if refs:
            self._record(func, refs, args, kwargs, out)
        return out

    def _record(self, func, refs: list[tuple[Any, Ref]], args: tuple, kwargs: dict, out: Any) -> None:
        spec = op_for_function(func)
        sources = list(dict.fromkeys(r for _, r in refs if isinstance(r, int)))
        params = [(key, r) for key, r in refs if isinstance(r, str)]
        distinct = set(r for _, r in refs)
        # A merge of one traced tensor with constants (x + 1, w * scale) and a parameter-free op applied to a
        # parameter alone (F.normalize(w)) transform that tensor: the result stands for it.
        if spec is None or spec.kind == "merge" and len(distinct) == 1 or spec.kind == "node" and not sources:
            if len(distinct) == 1:
                self._pass_through(refs[0][1], args, out)
            elif not params:
                self._bind_all(out, self._add_node("other", sources, []))
            else:
                self._unsupported(func, params, sources, out)
        elif spec.kind == "activation":
            ref = refs[0][1]
            if isinstance(ref, int) and self.nodes[ref].activation is None:
                self.nodes[ref].activation = spec.name
            self._bind_all(out, ref)
        elif spec.kind == "layer" or spec.kind == "node" and params:
            self._layer(func, spec, sources, self._slotted(spec, params, args, kwargs), out)
        elif spec.kind == "merge":
            self._merge_with_param(func, spec, sources, self._slotted(spec, params, args, kwargs), out)
        else:
            self._bind_all(out, self._add_node(spec.op, sources, []))

    def _slotted(self, spec: OpSpec, params, args: tuple, kwargs: dict) -> list[tuple[Any, str, ParamSlot | None]]:
        """(key, name, slot) of each parameter argument; the slot's layout is flipped for a transposed view (w.T).
        A parameter inside a list argument gets its slot by its name (`ParamList`)."""
        slotted = []
        for key, name in params:
            slot = spec.slots.get(key)
            if isinstance(slot, ParamList):
                slot = slot.slot_for(name)
            value = args[key] if isinstance(key, int) and key < len(args) else kwargs.get(key)
            if slot is not None and isinstance(value, torch.Tensor) and id(value) in self._flipped:
                slot = dataclasses.replace(slot, layout=_FLIPPED_LAYOUT[slot.layout])
            slotted.append((key, name, slot))
        return slotted

    def _layer(self, func, spec: OpSpec, sources: list[int], params, out: Any) -> None:
        owned = [(name, slot) for _, name, slot in params if slot is not None]
        stray = [(key, name) for key, name, slot in params if slot is None]
        if stray:
            self._unsupported(func, stray, sources, out)
            return
        lists = [spec.slots[key] for key, _, _ in params if isinstance(spec.slots.get(key), ParamList)]
        if lists and lists[0].stages:
            self._bind_all(out, self._add_stages(spec.op, sources, owned, lists[0].stages))
            return
        # A parameter-free call of a layer function (F.linear(x, w) with a computed w) is a data-flow merge.
        op = spec.op if owned else ("matmul" if len(sources) > 1 else spec.op)
        self._bind_all(out, self._add_node(op, sources, owned))

    def _add_stages(self, op: str, sources: list[int], params: list[tuple[str, ParamSlot]], stages: str) -> int:
        """One node per (stage, branch) of a fused call's parameters (see `ParamList.stages`): each stage is fed by
        every node of the stage before, and the branches of the last stage join in a 'concat'. Returns the node
        the call's results stand for."""
        cells: dict[tuple[int, str], list[tuple[str, ParamSlot]]] = {}
        for name, slot in params:
            match = re.search(stages, name.rsplit(".", 1)[-1])
            key = (int(match["stage"]), match.groupdict().get("branch") or "") if match else (0, "")
            cells.setdefault(key, []).append((name, slot))
        previous = sources
        for stage in sorted({stage for stage, _ in cells}):
            previous = [self._add_node(op, previous, cells[key]) for key in sorted(k for k in cells if k[0] == stage)]
        return previous[0] if len(previous) == 1 else self._add_node("concat", previous, [])

    def _merge_with_param(self, func, spec: OpSpec, sources: list[int], params, out: Any) -> None:
        if not params:
            self._bind_all(out, self._add_node(spec.op, sources, []))
            return
        target = OPS.get(spec.with_param) if spec.with_param else None
        # Two operands hold one parameter (x + b, x @ W); only a concat may join several (cat(cls, dist, x)).
        several = target is not None and target.name != "token" and len(params) > 1
        unslotted = target is not None and target.name == "linear" and params[0][2] is None
        if target is None or several or unslotted:
            self._unsupported(func, [(key, name) for key, name, _ in params], sources, out)
            return
        if target.name == "linear":
            owned = [(params[0][1], params[0][2])]
        else:
            roles = [(name, _role_for(target.name, self.params[name].shape)) for _, name, _ in params]
            owned = [(name, ParamSlot(role, "vector")) for name, role in roles]
        self._bind_all(out, self._add_node(target.op, sources, owned))

    def _pass_through(self, ref: Ref, args: tuple, out: Any) -> None:
        """Views, casts and scalar arithmetic keep the producer; integer results of float math are not data flow.

        A view of a parameter that swaps its two leading dims (w.t(), w.T, w.transpose(0, 1)) is remembered, so the
        op it reaches reads the parameter in the other layout.
        """
        source = next((a for a in _tensors(args) if self._table.get(id(a)) == ref), None)
        flipped = source is not None and isinstance(ref, str) and id(source) in self._flipped
        for tensor in _tensors(out):
            if tensor.is_floating_point() or (source is not None and tensor.dtype == source.dtype):
                swapped = isinstance(ref, str) and source is not None and _swaps_leading_dims(source, tensor)
                self._bind(tensor, ref, flipped=flipped != swapped)

    def _unsupported(self, func, params, sources: list[int], out: Any) -> None:
        path, module_type = self._module_stack[-1] if self._module_stack else ("", "")
        fname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        names = [name for _, name in params]
        self.unsupported.append(
            f"Module {path or '<model>'!r} ({module_type}) passes parameter(s) {', '.join(map(repr, names))} to "
            f"{fname!r}, which the op vocabulary does not cover"
        )
        for name in names:
            info = self.params[name]
            if info.node is None and info.reason is None:
                info.reason = f"used by unsupported call {fname!r} in {path or '<model>'!r}"
        self._bind_all(out, self._add_node("other", sources, []))

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _add_node(self, op: str, sources: list[int], params: list[tuple[str, ParamSlot]]) -> int:
        path, module_type = self._module_stack[-1] if self._module_stack else ("", "")
        index = len(self.nodes)
        node = Node(op=op, module=path, module_type=module_type)
        self.nodes.append(node)
        self.edges.extend((source, index) for source in dict.fromkeys(sources))
        for name, slot in sorted(params, key=lambda item: ROLES.index(item[1].role)):
            info = self.params[name]
            info.uses.append(index)
            if info.node is None:
                info.node, info.role, info.layout, info.reason = index, slot.role, slot.layout, None
                info.num_blocks = slot.num_blocks
                node.params.append(name)
            elif name not in node.shared:
                node.shared.append(name)
        return index

    def _refs(self, args: tuple, kwargs: dict) -> list[tuple[Any, Ref]]:
        refs = []
        for key, value in list(enumerate(args)) + list(kwargs.items()):
            for tensor in _tensors(value, depth=1):
                ref = self._table.get(id(tensor))
                if ref is not None:
                    refs.append((key, ref))
        return refs

    def _bind(self, tensor: torch.Tensor, ref: Ref, *, flipped: bool = False) -> None:
        key = id(tensor)
        if flipped and key not in self._flipped:
            self._flipped.add(key)
            weakref.finalize(tensor, self._flipped.discard, key)
        elif not flipped:
            self._flipped.discard(key)
        if self._table.get(key) == ref:
            return
        if key not in self._table:
            weakref.finalize(tensor, self._table.pop, key, None)
        self._table[key] = ref

    def _bind_all(self, out: Any, ref: Ref) -> None:
        for tensor in _tensors(out):
            self._bind(tensor, ref)


_TRUTH_TESTS = (torch.Tensor.__bool__, torch.Tensor.item)
_SETITEM = torch.Tensor.__setitem__
# Calls whose result takes only the shape, dtype or device of their tensor argument, not its data.
_FRESH = frozenset(
    getattr(owner, name)
    for owner, names in (
        (torch.Tensor, ("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor")),
        (torch, ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like")),
    )
    for name in names
    if hasattr(owner, name)
)
_FLIPPED_LAYOUT = {"out_in": "in_out", "in_out": "out_in", "vector": "vector"}


def _swaps_leading_dims(source: torch.Tensor, view: torch.Tensor) -> bool:
    """Whether `view` is `source` with its first two dims swapped (a transpose or permute, not a reshape)."""
    if source.dim() < 2 or view.dim() < 2 or not view._is_view():
        return False
    (rows, cols), (row_stride, col_stride) = source.shape[:2], source.stride()[:2]
    return (
        tuple(view.shape[:2]) == (cols, rows)
        and tuple(view.stride()[:2]) == (col_stride, row_stride)
        and row_stride != col_stride
    )


def _is_meta_flag(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_meta and value.dtype == torch.bool and value.numel() == 1


def _role_for(op: str, shape: tuple[int, ...]) -> str:
    """Role of a parameter that joins a merge: x + p is a bias, or a position embedding when p spans 2+ dims."""
    if op == "shift":
        return "position_embedding" if sum(size > 1 for size in shape) >= 2 else "bias"
    if op == "token":
        return "embedding"
    return "other"


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in value)
    return False


def _tensors(value: Any, depth: int = 8) -> Iterator[torch.Tensor]:
    """Tensors in a (nested) output: tensors, tuples, lists, dicts (HF ModelOutput) and dataclasses."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth <= 0:
        return
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, depth - 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth - 1)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _tensors(getattr(value, name, None), depth - 1)
