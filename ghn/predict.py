"""`predict` and `predict_params`: a GHN fills every parameter of a PyTorch model, or returns them differentiably.

A model on the `meta` device is predicted straight into real tensors, one tensor at a time, so a 774M-parameter
GPT-2 Large needs little more memory than its own weights.
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
from ghn.nn import GHN, load_ghn
from ghn.nn.decoder import LowRank
from ghn.nn.normalize import ParamScale, param_scales, reference_std

__all__ = ["DEFAULT_GHN_RESOLVERS", "PredictionReport", "blend_with_init", "is_blended", "predict", "predict_params"]

logger = get_logger(__name__)

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
    uninitialized_buffers: list[str] = field(default_factory=list)
    init_blend: float = 0.0
    """Fraction of each weight's variance taken from the model's own init (the GHN's `config.init_blend`)."""

    @property
    def is_complete(self) -> bool:
        """Every trainable parameter was predicted and no buffer was left without its value."""
        return not self.not_predicted and not self.uninitialized_buffers

    def __str__(self) -> str:
        lines = [
            f"{self.model_type}: predicted {self.num_predicted_params:,}/{self.num_total_params:,} parameters "
            f"in {self.num_predicted_tensors}/{self.num_total_tensors} tensors"
            + (f", weights blended with the model's own init ({self.init_blend:.0%} of their variance)"
               if self.init_blend else "")
        ]
        lines += [f"  not predicted: {name!r} ({why})" for name, why in self.not_predicted.items()]
        if self.reset_buffers:
            lines.append(f"  running statistics reset (not predicted): {len(self.reset_buffers)} buffers")
        if self.uninitialized_buffers:
            lines.append(f"  buffers set to zeros (the model was on meta and a GHN does not predict buffers): {', '.join(self.uninitialized_buffers)}")
        return "\n".join(lines)


def _resolve_ghn(ghn: GHN | str | Path | None, graphs: list[ComputationGraph]) -> GHN:
    if ghn is None:
        for resolver in DEFAULT_GHN_RESOLVERS:
            found = resolver(graphs)
            if found is not None:
                return found
        raise ConfigError(
            "No GHN was given and no shipped pretrained GHN fits this model's task. Pass one, e.g. "
            "ghn=ghn.from_pretrained('<name or path>') (ghn.hub.PRETRAINED.names() lists the pretrained ones)."
        )
    if isinstance(ghn, GHN):
        return ghn
    if isinstance(ghn, (str, Path)):
        return load_ghn(ghn)
    raise TypeError(f"ghn must be a GHN or the path of a saved one, got {type(ghn).__name__!r}.")


def _graphs(models: Sequence[nn.Module | ComputationGraph], example_inputs: Any) -> list[ComputationGraph]:
    graphs = []
    for model in models:
        if isinstance(model, ComputationGraph):
            graphs.append(model)
        elif isinstance(model, nn.Module):
            graphs.append(build_graph(model, example_inputs))
        else:
            raise TypeError(f"Expected an nn.Module or a ComputationGraph, got {type(model).__name__!r}.")
    return graphs


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
    graphs = _graphs([model] if single else model, example_inputs)
    ghn = _resolve_ghn(ghn, graphs)
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

    Values are written under `torch.no_grad()`; BatchNorm running statistics are reset, not predicted. A GHN with
    `config.init_blend` > 0 mixes that fraction of the model's own init into every weight (`blend_with_init`: the
    model's values, or fresh draws of their init std on meta), as it was trained to expect. The report
    (`model.ghn_report`, or returned with `return_report=True`) lists what was and was not predicted.

    Args:
        model: a model, or a list of models predicted in one batched GHN forward. A model on the `meta` device gets
            real tensors on `device`, made one at a time (no random init first).
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
    graphs = _graphs(models, example_inputs)
    ghn = _resolve_ghn(ghn, graphs)
    if device is not None:
        for m in models:
            _move_real_tensors(m, torch.device(device))
    targets = [_target_device(m, device, ghn) for m in models]
    fraction = ghn.config.init_blend
    reports = [_start_report(m, g, fraction) for m, g in zip(models, graphs)]
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
    for m, g, report, target in zip(models, graphs, reports, targets):
        _finish(m, g, report, target)
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
            model.get_submodule(owner)._parameters[leaf] = new


def _record_init_stats(model: nn.Module, graph: ComputationGraph) -> None:
    """Keep the statistics of the init the prediction replaced, so predicting the model again (its values are now
    the prediction's) puts the tensors at the same scale (`ghn.graph.init_stats`)."""
    if getattr(model, INIT_STATS_ATTR, None) is None:
        stats = {n: (i.init_mean, i.init_std) for n, i in graph.params.items() if i.init_std is not None}
        object.__setattr__(model, INIT_STATS_ATTR, stats)


def _finish(model: nn.Module, graph: ComputationGraph, report: PredictionReport, device: torch.device) -> None:
    """Fill in the report; reset running statistics; materialize what is left on meta."""
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
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer.is_meta:
                    module._buffers[name] = torch.empty_like(buffer, device=device)
            module.reset_running_stats()
            report.reset_buffers += [prefix + n for n, _ in module.named_buffers(recurse=False)]
        else:
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer.is_meta:
                    module._buffers[name] = torch.zeros_like(buffer, device=device)
                    report.uninitialized_buffers.append(prefix + name)
    if report.not_predicted or report.uninitialized_buffers:
        logger.warning("Prediction of %s is incomplete:\n%s", report.model_type, report)
