"""`predict` and `predict_params`: a GHN fills every parameter of a PyTorch model, or returns them differentiably.

A model on the `meta` device is predicted straight into real tensors, one tensor at a time, so a 774M-parameter
GPT-2 Large needs little more memory than its own weights; its buffers are recomputed (`ghn.meta`), never zeros.
`stream_predictions` writes the same values into a safetensors file instead (`ghn.export`), one tensor at a time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import torch
from torch import Tensor, nn

from ghn._io import SafetensorsWriter
from ghn._logging import get_logger
from ghn.errors import ConfigError
from ghn.graph import ComputationGraph, ParamInfo, build_graph
from ghn.graph.init_stats import INIT_STATS_ATTR
from ghn.graph.inputs import task_inputs
from ghn.meta import recompute_buffers
from ghn.nn import GHN, load_ghn
from ghn.nn.decoder import LowRank
from ghn.nn.normalize import ParamScale, param_scales, reference_std
from ghn.nn.spectrum import at_own_spectrum_

__all__ = ["DEFAULT_GHN_INPUTS", "DEFAULT_GHN_RESOLVERS", "ghn_task_inputs", "graphs_and_ghn", "model_task_kind",
           "model_task_size", "untrained_head_note", "PredictionReport", "OwnInitMix", "blend_with_init",
           "is_blended", "predict", "predict_params", "stream_predictions", "factored_predictions",
           "write_predictions"]

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
    own_spectrum: bool = False
    """Weights were given the singular values of the model's own init (the GHN's `config.own_spectrum`)."""
    signal_gains: dict[str, float] = field(default_factory=dict)
    """{name: factor} of the weights put above their own init's std, at the fan-in rule's signal-keeping std (a
    network without norms and a GHN with `config.signal_scale`; ghn/nn/normalize.py)."""
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
            + (", weights at the spectrum of the model's own init" if self.own_spectrum else "")
            + (f", weights blended with the model's own init ({self.init_blend:.0%} of their variance)"
               if self.init_blend else "")
        ]
        if self.signal_gains:
            lines.append(
                f"  {len(self.signal_gains)} weights of this network without norms at the fan-in rule's signal-keeping "
                f"std, {min(self.signal_gains.values()):.2f}-{max(self.signal_gains.values()):.2f}x their own init's "
                "(signal_scale)"
            )
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
    networks. A GHN with `config.own_spectrum` takes the model's values as its own init (fresh draws for a graph
    or a model on meta), as `predict` does. Tied parameters appear under their first name (functional_call ties the
    others). A list of models or graphs is predicted in one batched GHN forward and gives a list of dicts.

    Args:
        model: an `nn.Module`, a `ComputationGraph` from `ghn.build_graph`, or a list of them.
        ghn: the hypernetwork (or the path of a saved one); None asks `DEFAULT_GHN_RESOLVERS` (see `predict`).
        example_inputs: inputs to trace the model(s) with, when they cannot be derived.
    """
    single = not isinstance(model, (list, tuple))
    models = [model] if single else list(model)
    graphs, ghn = graphs_and_ghn(models, ghn, example_inputs)
    own = [dict(m.named_parameters()) if isinstance(m, nn.Module) else {} for m in models]  # for own_spectrum
    params = ghn(graphs, own=own)
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
    `config.own_spectrum` puts every weight at the spectrum of the model's own init (`ghn.nn.spectrum`),
    and one with `config.init_blend` > 0 mixes that fraction of the own init into every weight (`blend_with_init`);
    the own init is the model's values, or fresh draws of their init std on meta (`OwnInitMix`). The report
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
    # raises before anything is written
    buffers = [recompute_buffers(m, t) for m, t in zip(models, targets, strict=True)]
    for m, target, values in zip(models, targets, buffers, strict=True):
        if device is not None or _has_meta_params(m):
            _move_real_tensors(m, target)
        _set_buffers(m, values)
    reports = _start_reports(models, graphs, ghn)
    with torch.no_grad(), closing(_placed_predictions(models, graphs, ghn, reports)) as placed:
        for index, name, value, mix in placed:
            _write(models[index], graphs[index], name, value, targets[index], mix)
    for m, g, report, values in zip(models, graphs, reports, buffers, strict=True):
        report.reset_buffers = _reset_running_stats(m)
        reset = set(report.reset_buffers)
        report.recomputed_buffers = [name for name in values if name not in reset]
        _record_init_stats(m, g)
        m.ghn_report = report
        _log_report(report)
    result = models[0] if single else models
    if return_report:
        return result, (reports[0] if single else reports)
    return result


def stream_predictions(
    model: nn.Module, graph: ComputationGraph, ghn: GHN, writer: SafetensorsWriter, *, buffers: dict[str, Tensor]
) -> PredictionReport:
    """Predict `model` into a safetensors file instead of into the model, which is never changed.

    The values are the ones `predict` writes (`_placed_predictions`): each is cast and written under every name of
    it the file stores (`writer.pending`) as soon as it is made, and freed before the next one. Then the keys the
    GHN does not predict: running statistics reset, real tensors as they are, meta buffers as `buffers` (from
    `ghn.meta.recompute_buffers`) gives them, other meta tensors as zeros.

    Args:
        graph: the graph of `model`, as `graphs_and_ghn` builds it.
        writer: the open file; every key it plans is written.
        buffers: the recomputed values of the model's meta buffers the file stores.
    """
    (report,) = _start_reports([model], [graph], ghn)
    with torch.no_grad(), closing(_placed_predictions([model], [graph], ghn, [report])) as placed:
        for _, name, value, mix in placed:
            info = graph.params[name]
            param = model.get_parameter(name)
            if mix is None and not isinstance(value, LowRank):
                tensor = value
            else:  # made as `_write` makes it, so the values match bit for bit
                tensor = (value.rows if isinstance(value, LowRank) else value).new_empty(tuple(info.shape))
                if mix is not None and not param.is_meta:
                    tensor.copy_(param.detach())
                _place(tensor, value, mix, has_own=not param.is_meta, info=info)
            for key in (name, *info.aliases):
                if key in writer.pending:
                    writer.write(key, tensor)
            del tensor, value  # free this tensor before the next one is made
    report.reset_buffers = _write_reset_buffers(model, writer)
    report.recomputed_buffers = _write_rest(model, writer, buffers)
    _log_report(report)
    return report


def _write_reset_buffers(model: nn.Module, writer: SafetensorsWriter) -> list[str]:
    """Write the reset running statistics (BatchNorm's) the file stores, reset on a copy of each module; their names."""
    written = []
    for path, module in model.named_modules():
        if not callable(getattr(module, "reset_running_stats", None)):
            continue
        prefix = f"{path}." if path else ""
        keys = [prefix + name for name, b in module.named_buffers(recurse=False) if b is not None]
        if not any(key in writer.pending for key in keys):
            continue
        fresh = copy.deepcopy(module)  # reset a copy: the caller's model is never changed
        if any(b.is_meta for b in fresh.buffers(recurse=False)):
            fresh.to_empty(device="cpu", recurse=False)
        fresh.reset_running_stats()
        for name, buffer in fresh.named_buffers(recurse=False):
            if prefix + name in writer.pending:
                writer.write(prefix + name, buffer)
                written.append(prefix + name)
    return written


def _write_rest(model: nn.Module, writer: SafetensorsWriter, buffers: dict[str, Tensor]) -> list[str]:
    """Write the keys still pending: real tensors as they are, meta buffers as `buffers` gives them, other meta
    tensors as zeros; the names of the recomputed buffers."""
    state = model.state_dict(keep_vars=True)
    recomputed = []
    for key in list(writer.pending):
        tensor = state[key]
        if key in buffers:
            recomputed.append(key)
            tensor = buffers[key]
        writer.write(key, torch.zeros(tensor.shape, dtype=tensor.dtype) if tensor.is_meta else tensor)
    return recomputed


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


def _start_reports(models: Sequence[nn.Module], graphs: Sequence[ComputationGraph], ghn: GHN) -> list[PredictionReport]:
    """One report per model: its totals to predict, and notes on what differs from the GHN's task (logged)."""
    reports = []
    for model, graph in zip(models, graphs, strict=True):
        trainable = [p for p in graph.params.values() if p.trainable]
        report = PredictionReport(
            model_type=type(model).__name__,
            example_inputs=graph.inputs,
            num_total_tensors=len(trainable),
            num_total_params=sum(p.numel for p in trainable),
            init_blend=ghn.config.init_blend,
            own_spectrum=ghn.config.own_spectrum,
            notes=_input_notes(graph, ghn),
        )
        for note in report.notes:
            logger.warning("%s", note)
        reports.append(report)
    return reports


def _placed_predictions(
    models: Sequence[nn.Module], graphs: Sequence[ComputationGraph], ghn: GHN, reports: Sequence[PredictionReport]
) -> Iterator[tuple[int, str, Tensor | LowRank, OwnInitMix | None]]:
    """Yield (model index, parameter name, value, mix) for every parameter the GHN gives a value, and fill
    `reports` (from `_start_reports`) with what was and was not predicted.

    First the GHN's predictions, one tensor at a time (the GHN in eval mode under `no_grad`, its mode restored
    after); `mix` says how the model's own init is mixed in (`OwnInitMix`), None for none. Then zeros (no mix) for
    the trainable parameters the GHN does not predict that are still on meta. A name is counted as predicted once
    the consumer has placed it and asks for the next one. Consume it in `contextlib.closing`, so that the GHN's mode
    is restored even when placing fails.
    """
    scales = [param_scales(g) for g in graphs] if OwnInitMix.wanted(ghn) else None
    was_training = ghn.training
    ghn.eval()
    try:
        with torch.no_grad():
            for index, name, prediction in ghn.iter_predictions(graphs):
                mix = OwnInitMix.of(ghn, graphs[index].params[name], scales[index][name]) if scales else None
                yield index, name, prediction, mix
                del prediction  # free this tensor before the next one is made
                reports[index].predicted.append(name)
                if mix is not None and mix.gain != 1.0:
                    reports[index].signal_gains[name] = mix.gain
    finally:
        ghn.train(was_training)
    for index, (model, graph, report) in enumerate(zip(models, graphs, reports, strict=True)):
        for name in _count_predicted(graph, report):
            param = model.get_parameter(name)
            if param.is_meta:
                report.not_predicted[name] += "; the model was on meta, so it was set to zeros"
                yield index, name, torch.zeros(param.shape), None


def _count_predicted(graph: ComputationGraph, report: PredictionReport) -> list[str]:
    """Fill the report's totals (trainable parameters only) and `not_predicted`; return the names not predicted."""
    predicted = set(report.predicted)
    for info in graph.params.values():
        if not info.trainable:
            continue
        if info.name in predicted:
            report.num_predicted_tensors += 1
            report.num_predicted_params += info.numel
        else:
            report.not_predicted[info.name] = info.reason or "no node owns it"
    return list(report.not_predicted)


def _log_report(report: PredictionReport) -> None:
    if report.not_predicted:
        logger.warning("Prediction of %s is incomplete:\n%s", report.model_type, report)
    logger.info("%s", report)


def is_blended(info: ParamInfo, scale: ParamScale) -> bool:
    """Whether a GHN with `init_blend` > 0 blends this parameter with the model's own init: weight-like tensors of
    2+ dims (the ones whose scale normalization sets; training perturbs the same ones)."""
    return len(info.shape) >= 2 and reference_std(info, scale) is not None


def blend_with_init(
    target: Tensor, own: Tensor | None, info: ParamInfo, fraction: float, *, gain: float = 1.0
) -> Tensor:
    """`target` (holding the GHN's prediction) <- sqrt(1 - f) * target + sqrt(f) * own init, in place.

    The own init is `own` centered and put at the init std (`info.init_std`) times `gain`, or, when `own` is None
    (a model on meta), fresh Gaussian draws of that std from the global RNG, as the model's own random init would
    be.
    """
    std = info.init_std * gain if info.init_std is not None else float(target.float().std())
    if own is None:
        noise = torch.randn(target.shape, device=target.device, dtype=torch.float32) * std
    else:
        own = own.detach().to(device=target.device, dtype=torch.float32)
        own_std = float(own.std()) if own.numel() > 1 else 0.0
        noise = (own - own.mean()) * (std / own_std) if own_std > 0 else torch.zeros_like(own)
    return target.mul_(math.sqrt(1.0 - fraction)).add_(noise.to(target.dtype), alpha=math.sqrt(fraction))


@dataclass(frozen=True)
class OwnInitMix:
    """How `ghn.predict` puts the model's own init into one weight-like prediction (`is_blended`), as the GHN's
    config asks: at the own init's spectrum (`ghn.nn.spectrum.at_own_spectrum_`) when `spectrum`, then `fraction`
    of its variance blended in (`blend_with_init`), then times `gain` (as if the own init were that much larger).
    `std` is the own init's std, which fresh draws get when the model has no values of its own (a model on
    meta)."""

    spectrum: bool = False
    fraction: float = 0.0
    std: float = 1.0
    free: float = 0.0  # share of the GHN's relative spectrum (`free_spectrum_roles`); 0: every direction at one value
    tables: bool = False  # a table held as one row at its matrix's spectrum (`GHNConfig.table_spectrum`)
    gain: float = 1.0  # the whole result times this (`ParamScale.signal_gain`, `GHNConfig.signal_scale`)

    @staticmethod
    def wanted(ghn: GHN) -> bool:
        """Whether `ghn` mixes the own init into its predictions or rescales them at all."""
        return bool(ghn.config.own_spectrum or ghn.config.init_blend or ghn.config.signal_scale)

    @classmethod
    def of(cls, ghn: GHN, info: ParamInfo, scale: ParamScale) -> OwnInitMix | None:
        """The mix for one parameter, or None when `ghn` writes it alone (not weight-like, or nothing asked)."""
        if not is_blended(info, scale):
            return None
        config = ghn.config
        std = float(reference_std(info, scale))
        gain = scale.signal_gain if config.signal_scale else 1.0
        if not (config.own_spectrum or config.init_blend or gain != 1.0):
            return None
        return cls(
            config.own_spectrum, config.init_blend, std, config.spectrum_share(info.role),
            config.spectrum_tables(info.role), gain,
        )

    def write(self, target: Tensor, value: Tensor | LowRank, *, has_own: bool, info: ParamInfo) -> Tensor:
        """Write `value` mixed with the own init into `target`, which holds the own init when `has_own` (else what
        it holds is ignored and fresh draws of `std` stand in)."""
        own = target.detach().clone() if self.fraction and has_own else None
        if self.spectrum and isinstance(value, LowRank):
            at_own_spectrum_(target, value, own_std=None if has_own else self.std, free=self.free, tables=self.tables)
        else:
            _place(target, value)
        if self.fraction:
            blend_with_init(target, own, info, self.fraction)
        return target.mul_(self.gain) if self.gain != 1.0 else target


def _place(
    target: Tensor, value: Tensor | LowRank, mix: OwnInitMix | None = None, *, has_own: bool = False,
    info: ParamInfo | None = None,
) -> Tensor:
    """Write a prediction into `target` (a low-rank one multiplied out straight into its storage when dtype and
    device allow); with `mix`, mixed with the own init as `OwnInitMix.write` does."""
    if mix is not None:
        return mix.write(target, value, has_own=has_own, info=info)
    if isinstance(value, LowRank):
        return value.materialize(out=target)
    return target.copy_(value.to(device=target.device, dtype=target.dtype))


def _write(
    model: nn.Module, graph: ComputationGraph, name: str, value: Tensor | LowRank, device: torch.device,
    mix: OwnInitMix | None = None,
) -> None:
    """Write `value` into parameter `name`, or replace a meta parameter by a real one under all its names; with
    `mix` the model's own init (its values, or fresh draws on meta) is mixed in (`OwnInitMix`).

    No second copy of a large tensor is ever made: low-rank predictions are multiplied out (or put at the own
    spectrum) straight into the destination, except the own values a blend needs.
    """
    info = graph.params[name]
    param = model.get_parameter(name)
    target = param.data if not param.is_meta else torch.empty(param.shape, dtype=param.dtype, device=device)
    _place(target, value, mix, has_own=not param.is_meta, info=info)
    if param.is_meta:
        new = nn.Parameter(target, requires_grad=param.requires_grad)
        for alias in (name, *info.aliases):
            owner, _, leaf = alias.rpartition(".")
            # setattr, not `_parameters[leaf] = new`: nn.RNN/GRU/LSTM keep a list of their weights (_flat_weights)
            # that only their __setattr__ refreshes.
            setattr(model.get_submodule(owner), leaf, new)


def factored_predictions(graph: ComputationGraph, ghn: GHN) -> dict[str, Tensor | LowRank]:
    """{name: prediction} of every parameter the GHN predicts for `graph`, before any own-init mix, low-rank weights
    still factored (small): made once, they can be written into many fresh copies of a model (`write_predictions`),
    each getting its own init mixed in as `predict` would."""
    was_training = ghn.training
    ghn.eval()
    try:
        with torch.no_grad():
            return {name: value for _, name, value in ghn.iter_predictions([graph])}
    finally:
        ghn.train(was_training)


def write_predictions(
    model: nn.Module, graph: ComputationGraph, predictions: dict[str, Tensor | LowRank], ghn: GHN
) -> nn.Module:
    """Write `factored_predictions` into `model` (real parameters) exactly as `predict` writes them, with the
    model's current values as its own init; buffers are left as they are. Returns `model`."""
    scales = param_scales(graph) if OwnInitMix.wanted(ghn) else None
    device = next(model.parameters()).device
    with torch.no_grad():
        for name, value in predictions.items():
            mix = OwnInitMix.of(ghn, graph.params[name], scales[name]) if scales else None
            _write(model, graph, name, value, device, mix)
    return model


def _record_init_stats(model: nn.Module, graph: ComputationGraph) -> None:
    """Keep the statistics of the init the prediction replaced, so predicting the model again (its values are now
    the prediction's) puts the tensors at the same scale (`ghn.graph.init_stats`)."""
    if getattr(model, INIT_STATS_ATTR, None) is None:
        stats = {n: (i.init_mean, i.init_std) for n, i in graph.params.items() if i.init_std is not None}
        object.__setattr__(model, INIT_STATS_ATTR, stats)


def _reset_running_stats(model: nn.Module) -> list[str]:
    """Reset the running statistics of every module that keeps them (BatchNorm); the names of their buffers."""
    reset = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if callable(getattr(module, "reset_running_stats", None)):
            module.reset_running_stats()
            reset += [prefix + n for n, _ in module.named_buffers(recurse=False)]
    return reset
