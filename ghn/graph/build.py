"""`build_graph`: any `nn.Module` to a `ComputationGraph`, traced on the `meta` device by default (no memory used)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ghn._logging import get_logger
from ghn.errors import GHNError, GraphError, UnsupportedOpError
from ghn.graph.graph import ComputationGraph, ParamInfo
from ghn.graph.init_stats import fill_init_stats
from ghn.graph.inputs import Inputs, candidate_inputs, describe_inputs, normalize_inputs
from ghn.graph.trace import Tracer

__all__ = ["build_graph"]

logger = get_logger(__name__)


def build_graph(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    device: str | torch.device | None = "meta",
    strict: bool = True,
    task_inputs: Sequence[tuple[str, Any]] = (),
) -> ComputationGraph:
    """Trace `model` into the computation graph a GHN reads.

    Args:
        model: any PyTorch module with trainable parameters; it is not changed.
        example_inputs: a tensor, a tuple of positional inputs, a dict of keyword inputs or an (args, kwargs) pair.
            Derived when None: what the model declares (`example_inputs()`, Hugging Face config, timm
            `pretrained_cfg`), then `task_inputs`, then a guess from its first layer; the first the forward runs on
            is used (`graph.inputs` says which).
        device: where the trace runs. 'meta' (the default) costs no memory and leaves the model's own tensors
            untouched; None runs on the model's own device, for forwards that need real values.
        strict: raise `UnsupportedOpError` when an operation on parameters is not in the op vocabulary. With False
            such parameters are left unowned and listed by `graph.coverage()`.
        task_inputs: (description, inputs) of the data the graph is for, such as a GHN's training task
            (`ghn.graph.inputs.task_inputs`); `ghn.predict` passes its GHN's.

    Returns:
        The graph; every trainable parameter is owned by exactly one node unless `strict=False` let some through.

    Raises:
        TypeError: `model` is not an `nn.Module`.
        GraphError: no trainable parameters, inputs cannot be derived, or the forward fails on the inputs (on
            every derived candidate: the message lists them).
        UnsupportedOpError: (strict) a parameter is used by an operation the vocabulary does not cover.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_graph expects a torch.nn.Module, got {type(model).__name__!r}.")
    if not any(p.trainable for p in _param_table(model).values()):
        raise GraphError(
            f"Model {type(model).__name__!r} has no trainable parameters, so there is nothing to predict. "
            "Pass a model with parameters that require grad."
        )
    own_device = next(model.parameters()).device
    device = own_device if device is None else torch.device(device)
    if example_inputs is not None:
        return _build(model, "the given example_inputs", normalize_inputs(example_inputs, device), device, strict)
    task = [(source, normalize_inputs(inputs, device)) for source, inputs in task_inputs]
    candidates = candidate_inputs(model, device, task)
    if not candidates:
        raise GraphError(
            f"Cannot derive example inputs for model {type(model).__name__!r}. "
            "Pass example_inputs=... (a tensor, a tuple of positional inputs or a dict of keyword inputs)."
        )
    failures: list[tuple[str, Inputs, GraphError]] = []
    for source, inputs in candidates:
        try:
            return _build(model, source, inputs, device, strict)
        except _ForwardError as err:
            failures.append((source, inputs, err))
    if len(failures) == 1:
        raise failures[0][2]
    tried = "; ".join(f"{source} {describe_inputs(inputs)} ({type(err.__cause__).__name__}: {err.__cause__})"
                      for source, inputs, err in failures)  # fmt: skip
    args, kwargs = candidates[0][1]
    shape = next((tuple(t.shape) for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor)), (1, 3, 32, 32))
    raise GraphError(
        f"The forward of {type(model).__name__!r} failed on every input ghn derived for it: {tried}. Pass the input "
        f"it takes, e.g. ghn.predict(model, example_inputs=torch.randn{shape})."
    ) from failures[-1][2].__cause__


class _ForwardError(GraphError):
    """The model's forward raised on one candidate input (its cause); another candidate may work."""


def _build(model: nn.Module, source: str, inputs: Inputs, device: torch.device, strict: bool) -> ComputationGraph:
    """Trace `model` on `inputs` (from `source`) into its graph."""
    args, kwargs = inputs
    params = _param_table(model)
    tensors = _tensors_on(model, params, device)
    tracer = Tracer(params, {name: tensors[name] for name in params})
    tracer.add_inputs((args, kwargs))
    output = _run(model, tracer, tensors, args, kwargs, device)

    if tracer.unsupported and strict:
        more = f" (and {len(tracer.unsupported) - 1} more)" if len(tracer.unsupported) > 1 else ""
        raise UnsupportedOpError(
            f"{tracer.unsupported[0]}{more}. Register an op for it with ghn.graph.register_op(...), or trace the "
            "module as one node with register_op(name=..., kind='layer', module_types=(TheModule,)); "
            "build_graph(..., strict=False) lists such parameters in graph.coverage() instead."
        )
    if not tracer.add_output(output):
        raise GraphError(
            f"The output of {type(model).__name__!r} is not computed from its inputs or parameters, so it has no "
            "graph. Check that forward returns tensors (or a dict/tuple of them)."
        )
    for info in params.values():
        if info.node is None and info.reason is None:
            info.reason = "not used in forward on the example inputs"
    fill_init_stats(model, params)
    described = f"{source}: {describe_inputs(inputs)}"
    shapes = tuple(tuple(t.shape) for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor))
    graph = ComputationGraph(tracer.nodes, tracer.edges, params, model_type=type(model).__name__, inputs=described,
                             input_shapes=shapes)  # fmt: skip
    graph = _prune(graph)
    _mark_classifier(graph)
    coverage = graph.coverage()
    logger.info("Built the graph of %s on %s: %d nodes, %d edges, %s.", graph.model_type, described,
                graph.num_nodes, graph.num_edges, coverage)  # fmt: skip
    if coverage.missing:
        logger.warning("Graph of %s does not own every parameter: %s", graph.model_type, coverage)
    return graph


def _param_table(model: nn.Module) -> dict[str, ParamInfo]:
    """One `ParamInfo` per distinct parameter tensor, named by its first name; tied names become aliases."""
    names: dict[int, list[str]] = {}
    tensors: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if nn.parameter.is_lazy(param):
            raise GraphError(
                f"Parameter {name!r} of model {type(model).__name__!r} is uninitialized (a lazy module), so it has "
                "no shape yet. Run one forward pass on real inputs before building the graph."
            )
        names.setdefault(id(param), []).append(name)
        tensors[id(param)] = param
    return {
        group[0]: ParamInfo(
            name=group[0],
            shape=tuple(tensors[key].shape),
            aliases=tuple(group[1:]),
            trainable=tensors[key].requires_grad,
        )
        for key, group in names.items()
    }


def _tensors_on(model: nn.Module, params: dict[str, ParamInfo], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors the forward sees: the model's own when already on `device`, else detached copies there
    (free on 'meta'). Buffers are included so the model runs as a whole on `device`."""
    state = dict(model.named_parameters())
    state.update(model.named_buffers())
    if all(t.device == device for t in state.values()):
        return state
    if device.type != "meta" and any(t.is_meta for t in state.values()):
        raise GraphError(
            f"Model {type(model).__name__!r} holds tensors on 'meta', which have no values to copy to {str(device)!r}. "
            "Trace it with device='meta' (the default)."
        )
    return {name: t.detach().to(device) for name, t in state.items()}


def _run(model: nn.Module, tracer: Tracer, tensors: dict, args: tuple, kwargs: dict, device: torch.device) -> Any:
    own = dict(model.named_parameters())
    substituted = any(tensors[name] is not own[name] for name in own)
    modes = [(module, module.training) for module in model.modules()]  # restored one by one: frozen parts stay eval
    handles = tracer.hook(model)
    model.eval()  # no running-statistics updates, deterministic graph
    try:
        with torch.no_grad(), tracer:
            if substituted:
                return functional_call(model, tensors, args, kwargs, tie_weights=True, strict=False)
            return model(*args, **kwargs)
    except GHNError:
        raise
    except Exception as err:  # the user's forward can raise anything; report it with the fix
        hint = " or pass device=None to trace with real values" if device.type == "meta" else ""
        raise _ForwardError(
            f"The forward of {type(model).__name__!r} failed on the example inputs ({type(err).__name__}: {err}). "
            f"Pass example_inputs=... that the model accepts{hint}."
        ) from err
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training


def _prune(graph: ComputationGraph) -> ComputationGraph:
    """Drop parameter-free nodes whose results never reach the output (mask and shape bookkeeping)."""
    parents: dict[int, list[int]] = {}
    for src, dst in graph.edges:
        parents.setdefault(dst, []).append(src)
    outputs = [i for i, node in enumerate(graph.nodes) if node.op == "output"]
    reach, stack = set(outputs), list(outputs)
    while stack:
        for parent in parents.get(stack.pop(), []):
            if parent not in reach:
                reach.add(parent)
                stack.append(parent)
    keep = [
        i for i, node in enumerate(graph.nodes) if i in reach or node.params or node.shared or node.op == "input"
    ]
    if len(keep) == graph.num_nodes:
        return graph
    new_index = {old: new for new, old in enumerate(keep)}
    for info in graph.params.values():
        info.uses = [new_index[u] for u in info.uses if u in new_index]
        info.node = new_index.get(info.node) if info.node is not None else None
    edges = [(new_index[s], new_index[d]) for s, d in graph.edges if s in new_index and d in new_index]
    return ComputationGraph(
        [graph.nodes[i] for i in keep], edges, graph.params, model_type=graph.model_type, inputs=graph.inputs,
        input_shapes=graph.input_shapes,
    )


def _mark_classifier(graph: ComputationGraph) -> None:
    """The weight of a linear layer whose result is a model output is the classifier head."""
    outputs = {i for i, node in enumerate(graph.nodes) if node.op == "output"}
    for src, dst in graph.edges:
        node = graph.nodes[src]
        if dst in outputs and node.op == "linear":
            for name in node.params:
                if graph.params[name].role == "weight":
                    graph.params[name].role = "classifier"
