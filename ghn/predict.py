"""`predict` and `predict_params`: a GHN fills every parameter of a PyTorch model, or returns them differentiably.

A model on the `meta` device is predicted straight into real tensors, one tensor at a time, so a 774M-parameter
GPT-2 Large needs little more memory than its own weights; its buffers are recomputed (`ghn.meta`), never zeros.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import torch
from torch import Tensor, nn

from ghn._logging import get_logger
from ghn.errors import ConfigError
from ghn.graph import ComputationGraph, ParamInfo, build_graph
from ghn.graph.init_stats import INIT_STATS_ATTR
from ghn.graph.inputs import task_inputs
from ghn.meta import recompute_buffers
from ghn.nn import GHN, load_ghn
from ghn.nn.decoder import LowRank
from ghn.nn.normalize import ParamScale, param_scales, reference_std

__all__ = ["DEFAULT_GHN_INPUTS", "DEFAULT_GHN_RESOLVERS", "ghn_task_inputs", "graphs_and_ghn", "model_task_kind", "model_task_size",
           "untrained_head_note", "PredictionReport", "blend_with_init", "is_blended", "predict", "predict_params"]

logger = get_logger(__name__)

#: Asked, when `predict`/`predict_params` get no GHN and no example inputs, for the training inputs of the GHNs the
#: resolvers below may pick: each returns [(description, (args, kwargs))], tried in order on a model that declares
#: no input of its own (`ghn.hub` adds the shipped GHNs' tasks).
DEFAULT_GHN_INPUTS: list[Callable[[], list[tuple[str, Any]]]] = []

#: Asked in order for a GHN when `predict`/`predict_params` get none: each takes the graphs and returns a GHN or None.
#: `ghn.hub` (imported by `import ghn`) adds one that picks the shipped pretrained GHN for the graphs' task; predict
#: cannot import hub itself (hub sits a layer above it).
DEFAULT_GHN_RESOLVERS: list[Callable[[list[ComputationGraph]], GHN | None]] = []


@dataclass
class PredictionReport:
    """What `predict` did to a model: which parameters the GHN predicted, which it did not and why, and what
    happened to buffers.

    The `num_*` counts cover trainable parameters (tied tensors once), like `ComputationGraph.coverage()`;
    `predicted` names every tensor that was written, frozen ones included.
    """

    model_type: str
    num_predicted_tensors: int = 0
    num_predicted_params: int = 0
    num_total_tensors: int = 0
    num_total_params: int = 0
    predicted: list[str] = field(default_factory=list)
    not_predicted: dict[str, str] = field(default_factory=dict)
    reset_buffers: list[str] = field(default_factory=list)
    recomputed_buffers: list[str] = field(default_factory=list)
    """Buffers the model held on `meta`, given their values by `ghn.meta.recompute_buffers` (BatchNorm's are in
    `reset_buffers`)."""
    init_blend: float = 0.0
    """Fraction of each weight's variance taken from the model's own init (the GHN's `config.init_blend`)."""
    example_inputs: str = ""
    """What the model was traced on: where the inputs came from (given, declared by the model, the GHN's task,
    guessed from the first layer) and their shapes."""
    notes: list[str] = field(default_factory=list)
    """Warnings about the prediction, e.g. inputs of another size than the GHN was trained on (also logged)."""

    @property
    def is_complete(self) -> bool:
        """Every trainable parameter was predicted (buffers always have their values: `predict` raises otherwise)."""
        return not self.not_predicted

    def __str__(self) -> str:
        lines = [
            f"{self.model_type}: predicted {self.num_predicted_params:,}/{self.num_total_params:,} parameters "
            f"in {self.num_predicted_tensors}/{self.num_total_tensors} tensors"
            + (f", weights blended with the model's own init ({self.init_blend:.0%} of their variance)"
               if self.init_blend else "")
        ]
        if self.example_inputs:
            lines.append(f"  traced on {self.example_inputs}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  not predicted: {name!r} ({why})" for name, why in self.not_predicted.items()]
        if self.reset_buffers:
            lines.append(f"  running statistics reset (not predicted): {len(self.reset_buffers)} buffers")
        if self.recomputed_buffers:
            lines.append(f"  buffers recomputed (they were on meta): {', '.join(self.recomputed_buffers)}")
        return "\n".join(lines)


def graphs_and_ghn(
    models: Sequence[nn.Module | ComputationGraph], ghn: GHN | str | Path | None = None, example_inputs: Any = None
) -> tuple[list[ComputationGraph], GHN]:
    """The graphs of `models` and the GHN that predicts them, as `predict` makes both: `ghn` (loaded when a path),
    or with None the default one for the graphs (`DEFAULT_GHN_RESOLVERS`); a model that declares no input and gets
    no `example_inputs` is traced on the inputs of that GHN's task (`ghn_task_inputs`, `DEFAULT_GHN_INPUTS`)."""
    if isinstance(ghn, (str, Path)):
        ghn = load_ghn(ghn)
    elif ghn is not None and not isinstance(ghn, GHN):
        raise TypeError(f"ghn must be a GHN or the path of a saved one, got {type(ghn).__name__!r}.")
    graphs = _graphs(models, example_inputs, ghn)
    if ghn is not None:
        return graphs, ghn
    for resolver in DEFAULT_GHN_RESOLVERS:
        found = resolver(graphs)
        if found is not None:
            return graphs, found
    raise ConfigError(
        "No GHN was given and no shipped pretrained GHN fits this model's task. Pass one, e.g. "
        "ghn=ghn.from_pretrained('<name or path>') (ghn.hub.PRETRAINED.names() lists the pretrained ones)."
    )


def ghn_task_inputs(ghn: GHN) -> list[tuple[str, Any]]:
    """[(description, inputs)] of the data `ghn` was trained on (its metadata's task), [] when it does not say."""
    meta = ghn.metadata or {}
    inputs = task_inputs(meta.get("task_kind", ""), meta.get("task_values") or {}, torch.device("meta"))
    if inputs is None:
        return []
    return [(f"the task of GHN {meta.get('name') or 'given'!r} ({meta.get('task', '?')})", inputs)]


def _graphs(
    models: Sequence[nn.Module | ComputationGraph], example_inputs: Any, ghn: GHN | None
) -> list[ComputationGraph]:
    """The graphs of `models`; with no `example_inputs`, a model that declares none is traced on the inputs of the
    GHN's task (of the default GHNs' tasks when `ghn` is None)."""
    if example_inputs is not None:
        task = []
    elif ghn is not None:
        task = ghn_task_inputs(ghn)
    else:
        task = [item for provider in DEFAULT_GHN_INPUTS for item in provider()]
    graphs = []
    for model in models:
        if isinstance(model, ComputationGraph):
            graphs.append(model)
        elif isinstance(model, nn.Module):
            graphs.append(build_graph(model, example_inputs, task_inputs=task))
        else:
            raise TypeError(f"Expected an nn.Module or a ComputationGraph, got {type(model).__name__!r}.")
    return graphs


def model_task_kind(graph: ComputationGraph) -> str:
    """'text' when the first parameterized node owns an embedding (the inputs are token ids), else 'image'."""
    first = next((node for node in graph.nodes if node.params), None)
    is_text = first is not None and any(graph.params[name].role == "embedding" for name in first.params)
    return "text" if is_text else "image"


def model_task_size(graph: ComputationGraph, kind: str) -> int | None:
    """Classes (the classifier's outputs) of an image model, vocabulary (first embedding's rows) of a text model."""
    if kind == "text":
        first = next(node for node in graph.nodes if node.params)
        return next(graph.params[n].shape[0] for n in first.params if graph.params[n].role == "embedding")
    heads = [info for info in graph.params.values() if info.role == "classifier"]
    return heads[-1].logical_shape[0] if heads else None


def untrained_head_note(graph: ComputationGraph, name: str | None, task: str | None, kind: str,
                        trained: int | None) -> str | None:  # fmt: skip
    """One line when the model's classes (vocabulary) differ from the `trained` count of the GHN's task."""
    size = model_task_size(graph, kind)
    if size is None or trained is None or size == trained:
        return None
    what, part = ("classes", "classifier head is") if kind == "image" else ("tokens in its vocabulary", "token embeddings are")
    return (f"Pretrained GHN {name!r} was trained on task {task!r} with {trained} {what}, but {graph.model_type} has "
            f"{size}: its {part} predicted but untrained for this task. Fine-tune the model, or pass a GHN trained "
            "on your task.")  # fmt: skip


def _input_notes(graph: ComputationGraph, ghn: GHN) -> list[str]:
    """Lines for what differs between the model and the GHN's training task: the image size and channels it was
    traced on, its classes or vocabulary."""
    meta = ghn.metadata or {}
    values, kind, name = meta.get("task_values") or {}, meta.get("task_kind"), meta.get("name") or "given"
    notes = []
    if kind == "image" and values.get("image_size"):
        expected = (values.get("in_channels"), values["image_size"], values["image_size"])
        traced = next((shape[1:] for shape in graph.input_shapes if len(shape) == 4), None)
        if traced is not None and tuple(traced) != expected:
            notes.append(
                f"{graph.model_type} was traced on {graph.inputs}, but GHN {name!r} was trained on "
                f"{'x'.join(map(str, expected))} images ({meta.get('task', '?')}): this model's inputs are not the "
                "ones it learned, so fine-tune the prediction or use a GHN trained on such images."
            )
    if kind in ("image", "text") and model_task_kind(graph) == kind:
        trained = values.get("num_classes") if kind == "image" else values.get("vocab_size")
        note = untrained_head_note(graph, name, meta.get("task"), kind, trained)
        if note:
            notes.append(note)
    return notes


@overload
def predict_params(model: nn.Module | ComputationGraph, ghn: GHN | None = None, *, example_inputs: Any = None) -> dict[str, Tensor]: ...
@overload
def predict_params(model: Sequence[nn.Module | ComputationGraph], ghn: GHN | None = None, *, example_inputs: Any = None) -> list[dict[str, Tensor]]: ...


def predict_params(model, ghn=None, *, example_inputs=None):
    """Predicted parameters as {name: tensor}, differentiable with respect to the GHN's parameters.

    Use with `torch.func.functional_call(model, params, x)` to train a GHN on the task loss of the predicted
    networks. Tied parameters appear under their first name (functional_call ties the others). A list of models or
    graphs is predicted in one batched GHN forward and gives a list of dicts.

    Args:
        model: an `nn.Module`, a `ComputationGraph` from `ghn.build_graph`, or a list of them.
        ghn: the hypernetwork (or the path of a saved one); None asks `DEFAULT_GHN_RESOLVERS` (see `predict`).
        example_inputs: inputs to trace the model(s) with, when they cannot be derived.
    """
    single = not isinstance(model, (list, tuple))
    graphs, ghn = graphs_and_ghn([model] if single else model, ghn, example_inputs)
    params = ghn(graphs)
    return params[0] if single else params


def predict(
    model: nn.Module | Sequence[nn.Module],
    ghn: GHN | str | Path | None = None,
    *,
    example_inputs: Any = None,
    device: str | torch.device | None = None,
    inplace: bool = True,
    return_report: bool = False,
):
    """Fill every parameter of `model` with the GHN's prediction.

    Values are written under `torch.no_grad()`; BatchNorm running statistics are reset, not predicted, and buffers
    on `meta` get their real values from the model's own init (`ghn.meta.recompute_buffers`: rotary frequencies,
    position ids; build large models with `ghn.empty_weights()` so no buffer needs recomputing). A GHN with
    `config.init_blend` > 0 mixes that fraction of the model's own init into every weight (`blend_with_init`: the
    model's values, or fresh draws of their init std on meta), as it was trained to expect. The report
    (`model.ghn_report`, or returned with `return_report=True`) lists what was and was not predicted.

    Args:
        model: a model, or a list of models predicted in one batched GHN forward. A model on the `meta` device gets
            real tensors on `device`, made one at a time (no random init first); its real buffers move there.
        ghn: the hypernetwork, or the path of a saved one. None picks the shipped pretrained GHN for the model's
            task through `DEFAULT_GHN_RESOLVERS` (with `import ghn`: `ghn.hub.default_ghn_for`).
        example_inputs: inputs to trace the model with, when they cannot be derived.
        device: where the predicted model lives (its buffers and any parameters not predicted move there too);
            default the model's own device (the GHN's for `meta` models). The GHN runs on its own device and each
            tensor is moved. Never 'meta'.
        inplace: write into `model`; with False a copy is predicted and `model` is left as it was.
        return_report: return `(model, report)` instead of `model`.

    Returns:
        The predicted model (or list of models), with `ghn_report` attached; `(model, report)` with return_report.

    Raises:
        TypeError: `model` is not an `nn.Module` or `ghn` is not a GHN or path.
        ValueError: `device` is 'meta'.
        GraphError: the model's graph cannot be built.
        CheckpointError: `ghn` names a checkpoint that cannot be loaded.
        ConfigError: `ghn` is None and no default GHN fits the model.
        MetaBufferError: a buffer on `meta` cannot be recomputed (before anything is written); the message says
            how to build the model instead.
    """
    single = not isinstance(model, (list, tuple))
    models = [model] if single else list(model)
    for item in models:
        if not isinstance(item, nn.Module):
            raise TypeError(f"predict expects an nn.Module (or a list of them), got {type(item).__name__!r}.")
    if device is not None and torch.device(device).type == "meta":
        raise ValueError("predict writes real values, so device cannot be 'meta'. Pass 'cpu', 'cuda' or None.")
    if not inplace:
        models = [copy.deepcopy(m) for m in models]
    graphs, ghn = graphs_and_ghn(models, ghn, example_inputs)
    targets = [_target_device(m, device, ghn) for m in models]
    buffers = [recompute_buffers(m, t) for m, t in zip(models, targets)]  # raises before anything is written
    for m, target, values in zip(models, targets, buffers):
        if device is not None or _has_meta_params(m):
            _move_real_tensors(m, target)
        _set_buffers(m, values)
    fraction = ghn.config.init_blend
    reports = [_start_report(m, g, fraction) for m, g in zip(models, graphs)]
    for graph, report in zip(graphs, reports):
        report.notes = _input_notes(graph, ghn)
        for note in report.notes:
            logger.warning("%s", note)
    scales = [param_scales(g) for g in graphs] if fraction else None
    was_training = ghn.training
    ghn.eval()
    try:
        with torch.no_grad():
            for index, name, prediction in ghn.iter_predictions(graphs):
                graph = graphs[index]
                blend = fraction if scales and is_blended(graph.params[name], scales[index][name]) else 0.0
                _write(models[index], graph, name, prediction, targets[index], blend)
                reports[index].predicted.append(name)
    finally:
        ghn.train(was_training)
    for m, g, report, target, values in zip(models, graphs, reports, targets, buffers):
        _finish(m, g, report, target)
        reset = set(report.reset_buffers)
        report.recomputed_buffers = [name for name in values if name not in reset]
        _record_init_stats(m, g)
        m.ghn_report = report
        logger.info("%s", report)
    result = models[0] if single else models
    if return_report:
        return result, (reports[0] if single else reports)
    return result


def _target_device(model: nn.Module, device: str | torch.device | None, ghn: GHN) -> torch.device:
    if device is not None:
        return torch.device(device)
    own = next(model.parameters()).device
    return ghn.device if own.type == "meta" else own


def _has_meta_params(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _set_buffers(model: nn.Module, values: dict[str, Tensor]) -> None:
    """Put the recomputed values in place of the meta buffers (their persistence is kept: only the tensor changes)."""
    for name, value in values.items():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = value


def _move_real_tensors(model: nn.Module, device: torch.device) -> None:
    """Move the model's non-meta parameters and buffers to `device` like `model.to(device)` (parameters keep their
    identity, so ties and optimizer references survive); meta tensors are made on `device` when they are filled."""
    for module in model.modules():
        for param in module._parameters.values():
            if param is not None and not param.is_meta and param.device != device:
                param.data = param.data.to(device)
        for name, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def _start_report(model: nn.Module, graph: ComputationGraph, init_blend: float) -> PredictionReport:
    trainable = [p for p in graph.params.values() if p.trainable]
    return PredictionReport(
        model_type=type(model).__name__,
        example_inputs=graph.inputs,
        num_total_tensors=len(trainable),
        num_total_params=sum(p.numel for p in trainable),
        init_blend=init_blend,
    )


def is_blended(info: ParamInfo, scale: ParamScale) -> bool:
    """Whether a GHN with `init_blend` > 0 blends this parameter with the model's own init: weight-like tensors of
    2+ dims (the ones whose scale normalization sets; training perturbs the same ones)."""
    return len(info.shape) >= 2 and reference_std(info, scale) is not None


def blend_with_init(target: Tensor, own: Tensor | None, info: ParamInfo, fraction: float) -> Tensor:
    """`target` (holding the GHN's prediction) <- sqrt(1 - f) * target + sqrt(f) * own init, in place.

    The own init is `own` centered and put at the init std (`info.init_std`), or, when `own` is None (a model on
    meta), fresh Gaussian draws of that std from the global RNG, as the model's own random init would be.
    """
    std = info.init_std if info.init_std is not None else float(target.float().std())
    if own is None:
        noise = torch.randn(target.shape, device=target.device, dtype=torch.float32) * std
    else:
        own = own.detach().to(device=target.device, dtype=torch.float32)
        own_std = float(own.std()) if own.numel() > 1 else 0.0
        noise = (own - own.mean()) * (std / own_std) if own_std > 0 else torch.zeros_like(own)
    return target.mul_(math.sqrt(1.0 - fraction)).add_(noise.to(target.dtype), alpha=math.sqrt(fraction))


def _write(
    model: nn.Module, graph: ComputationGraph, name: str, value: Tensor | LowRank, device: torch.device,
    blend: float = 0.0,
) -> None:
    """Write `value` into parameter `name`, or replace a meta parameter by a real one under all its names; with
    `blend` > 0 the model's own init is mixed in (`blend_with_init`).

    Low-rank predictions are multiplied out straight into the destination when dtype and device allow it, so no
    second copy of a large tensor is ever made (except the own values a blend needs).
    """
    info = graph.params[name]
    param = model.get_parameter(name)
    own = None if not blend or param.is_meta else param.detach().clone()
    target = param if not param.is_meta else torch.empty(param.shape, dtype=param.dtype, device=device)
    direct = (
        isinstance(value, LowRank) and target.dtype == value.rows.dtype and target.device == value.rows.device
    )
    if direct:
        value.materialize(out=target.data)
    else:
        tensor = value.materialize()[0] if isinstance(value, LowRank) else value
        target.data.copy_(tensor.to(device=target.device, dtype=target.dtype))
    if blend:
        blend_with_init(target.data, own, info, blend)
    if param.is_meta:
        new = nn.Parameter(target, requires_grad=param.requires_grad)
        for alias in (name, *info.aliases):
            owner, _, leaf = alias.rpartition(".")
            # setattr, not `_parameters[leaf] = new`: nn.RNN/GRU/LSTM keep a list of their weights (_flat_weights)
            # that only their __setattr__ refreshes.
            setattr(model.get_submodule(owner), leaf, new)


def _record_init_stats(model: nn.Module, graph: ComputationGraph) -> None:
    """Keep the statistics of the init the prediction replaced, so predicting the model again (its values are now
    the prediction's) puts the tensors at the same scale (`ghn.graph.init_stats`)."""
    if getattr(model, INIT_STATS_ATTR, None) is None:
        stats = {n: (i.init_mean, i.init_std) for n, i in graph.params.items() if i.init_std is not None}
        object.__setattr__(model, INIT_STATS_ATTR, stats)


def _finish(model: nn.Module, graph: ComputationGraph, report: PredictionReport, device: torch.device) -> None:
    """Fill in the report; reset running statistics; parameters the GHN did not predict are zeros on meta."""
    predicted = set(report.predicted)
    for info in graph.params.values():
        if info.name in predicted:
            if info.trainable:  # the totals count trainable parameters only
                report.num_predicted_tensors += 1
                report.num_predicted_params += info.numel
        elif info.trainable:
            report.not_predicted[info.name] = info.reason or "no node owns it"
            param = model.get_parameter(info.name)
            if param.is_meta:
                _write(model, graph, info.name, torch.zeros(param.shape), device)
                report.not_predicted[info.name] += "; the model was on meta, so it was set to zeros"
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if callable(getattr(module, "reset_running_stats", None)):
            module.reset_running_stats()
            report.reset_buffers += [prefix + n for n, _ in module.named_buffers(recurse=False)]
    if report.not_predicted:
        logger.warning("Prediction of %s is incomplete:\n%s", report.model_type, report)
