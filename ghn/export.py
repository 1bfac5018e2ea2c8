"""Ready-to-train weights: a predicted model as a safetensors state dict, or as a Hugging Face `save_pretrained`
directory (`config.json` + `model.safetensors`), with a record of what predicted it. Written atomically.

`export_predicted` streams: it predicts a model built on `meta` one tensor at a time straight into the file, so a
GPT-2 Large export never holds the model in memory at all (peak: one tensor, the GHN and the graph).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ghn._io import SAFETENSORS_DTYPES, SafetensorsWriter, TensorSlot, atomic_directory, atomic_write, write_safetensors
from ghn._logging import get_logger
from ghn.errors import CheckpointError, ConfigError
from ghn.meta import recompute_buffers
from ghn.nn import GHN
from ghn.nn.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from ghn.predict import PredictionReport, graphs_and_ghn, stream_predictions
from ghn.zoo import HF_EQUIVALENTS, HFEquivalentSpec, create
from ghn.zoo.hf_formats import HFForm, hf_form

__all__ = [
    "EXPORT_DTYPES",
    "HF_EQUIVALENTS",
    "RECORD_NAME",
    "HFEquivalentSpec",
    "export",
    "export_predicted",
    "read_export_record",
]

logger = get_logger(__name__)

ExportFormat = Literal["auto", "hf", "safetensors"]

#: File beside `config.json` in an exported Hugging Face directory: what predicted the weights.
RECORD_NAME = "ghn_export.json"
_RECORD_KEY = "ghn_export"  # the same record in the safetensors header metadata

#: The dtypes a floating tensor may be cast to on export, by name (the CLI's `--dtype`).
EXPORT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _hf_config_json(form: HFForm, dtype: torch.dtype) -> str:
    config = copy.deepcopy(form.config)
    config.architectures = [form.model_class]
    data = json.loads(config.to_json_string(use_diff=True))
    full = config.to_dict()
    key = "torch_dtype" if "torch_dtype" in full and "dtype" not in full else "dtype"  # older transformers
    data[key] = str(dtype).removeprefix("torch.")
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# -- public API -------------------------------------------------------------------------------------------------------
def export(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    format: ExportFormat = "auto",
    dtype: str | torch.dtype | None = None,
    spec: str | None = None,
    ghn: GHN | None = None,
    metadata: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a (predicted) model's weights as a file or directory that trains and loads without ghn.

    'hf' writes a directory that `transformers.<Class>.from_pretrained(out)` loads with no missing or unexpected
    keys (tied weights stored once, like `save_pretrained`); 'safetensors' writes a state-dict file that
    `model.load_state_dict(safetensors.torch.load_file(out), strict=True)` loads (every key, tied ones included).
    Each carries a record of what predicted it (see `read_export_record`). Tensors are cast and written one at a
    time, so no second copy of the model is made.

    Args:
        model: the model, with real (not `meta`) tensors; use `export_predicted` for a model not yet predicted.
        out: the directory ('hf') or file ('safetensors') to write.
        format: 'auto' picks 'safetensors' when `out` ends in '.safetensors', else 'hf' for Hugging Face models and
            zoo models with a Hugging Face equivalent (`ghn.zoo.HF_EQUIVALENTS`, e.g. zoo GPT-2).
        dtype: cast floating tensors to 'float32', 'bfloat16' or 'float16'; default as they are.
        spec: the model's spec string ('zoo:gpt2'), recorded with the weights.
        ghn: the GHN that predicted the weights, recorded by name and weights sha256 when its `metadata` has them.
        metadata: more JSON-serializable values to record.
        force: overwrite an existing output.

    Returns:
        The path written.

    Raises:
        ConfigError: `out` exists (and not `force`), the format or dtype is unknown, or the model has `meta` tensors.
        MissingDependencyError: format 'hf' for a zoo model needs `transformers`.
    """
    dtype = _parse_dtype(dtype)
    out = Path(out)
    name = _resolve_format(model, out, format)
    state = model.state_dict(keep_vars=True)
    on_meta = [key for key, tensor in state.items() if tensor.is_meta]
    if on_meta:
        raise ConfigError(
            f"Model {type(model).__name__!r} has tensors on 'meta' ({', '.join(map(repr, on_meta[:3]))}), which hold "
            "no values. Predict it first with ghn.predict(model, ghn), or use ghn.export_predicted(model, ghn, out)."
        )
    report = getattr(model, "ghn_report", None)
    summary = _report_summary(report) if isinstance(report, PredictionReport) else None
    record = _record(model, name, dtype, spec=spec, ghn=ghn, prediction=summary, metadata=metadata)

    def fill(writer: SafetensorsWriter) -> None:
        for key in writer.keys:
            writer.write(key, state[key])

    return _FORMATS[name](model, out, state, fill, record, dtype=dtype, force=force)


def export_predicted(
    model: str | nn.Module,
    ghn: GHN | None,
    out: str | os.PathLike,
    *,
    format: ExportFormat = "auto",
    dtype: str | torch.dtype | None = None,
    example_inputs: Any = None,
    metadata: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Predict a model with `ghn` and stream its weights into an export, never holding the model in memory.

    The model is built on `meta` (a spec) or taken as given, its graph is built, and each tensor the GHN predicts is
    cast to `dtype` and written at its place in the file before the next one is made. Peak memory is the GHN, the
    graph and about one predicted tensor in float32 plus its cast copy: far below the model's own size. Parameters
    the GHN does not own keep the model's values, or are zeros on `meta` (logged); BatchNorm running statistics are
    reset and other `meta` buffers the file stores get their real values from the model's own init
    (`ghn.meta.recompute_buffers`), exactly as `ghn.predict` does. The file equals `export(predict(model))`.
    A spec is built with `ghn.empty_weights()` (parameters on meta, buffers real). Non-persistent buffers (rotary
    frequencies, position ids) are in neither format: the model they are loaded into makes its own.

    Args:
        model: a spec for `ghn.zoo.create` ('zoo:gpt2-large', 'hf:llama-tiny'), built on `meta`; or a model.
        ghn: the hypernetwork; it runs on its own device and each tensor is moved to the CPU to be written. None
            picks the shipped GHN for the model's task, as `ghn.predict` does.
        out: the directory ('hf') or file ('safetensors') to write.
        format: as in `export`.
        dtype: cast floating tensors to 'float32', 'bfloat16' or 'float16'; default as the model's.
        example_inputs: inputs to trace the model with, when they cannot be derived.
        metadata: more JSON-serializable values to record.
        force: overwrite an existing output.

    Returns:
        The path written.

    Raises:
        ConfigError: `out` exists (and not `force`), or the format or dtype is unknown.
        UnknownNameError: the spec names no model.
        GraphError: the model's graph cannot be built.
        MetaBufferError: a buffer the file stores is on `meta` and cannot be recomputed.
    """
    dtype = _parse_dtype(dtype)
    out = Path(out)
    spec = model if isinstance(model, str) else None
    if spec is not None:
        model = create(spec, device="meta")
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_predicted expects a spec string or an nn.Module, got {type(model).__name__!r}.")
    name = _resolve_format(model, out, format)
    _check_output(out, name, force=force)  # before the slow part
    (graph,), ghn = graphs_and_ghn([model], ghn, example_inputs)  # traced as predict traces it
    state = model.state_dict(keep_vars=True)
    on_meta = {name for name, buffer in model.named_buffers(remove_duplicate=False) if buffer.is_meta}
    buffers = recompute_buffers(model, "cpu", names=on_meta & state.keys())  # only those the file stores
    coverage = graph.coverage()
    summary = {
        "num_predicted_params": coverage.num_owned,
        "num_total_params": coverage.num_total,
        "not_predicted": coverage.missing,
    }
    record = _record(model, name, dtype, spec=spec, ghn=ghn, prediction=summary, metadata=metadata)

    def fill(writer: SafetensorsWriter) -> None:
        stream_predictions(model, graph, ghn, writer, buffers=buffers)

    return _FORMATS[name](model, out, state, fill, record, dtype=dtype, force=force)


def read_export_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record `export` wrote with the weights at `path` (an exported directory or safetensors file): which GHN,
    the model's spec and config, the ghn version, the date, the dtype and what was predicted.

    Raises:
        CheckpointError: `path` holds no export record.
    """
    path = Path(path)
    if path.is_dir():
        record_file = path / RECORD_NAME
        if record_file.is_file():
            return json.loads(record_file.read_text())
        path = path / WEIGHTS_NAME
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            text = (file.metadata() or {}).get(_RECORD_KEY)
    except Exception as err:  # safetensors raises its own error types for missing or corrupt files
        raise CheckpointError(f"Cannot read {str(path)!r} as safetensors ({err}).") from err
    if text is None:
        raise CheckpointError(f"{str(path)!r} has no ghn export record. It was not written by ghn.export.")
    return json.loads(text)


# -- formats ----------------------------------------------------------------------------------------------------------
def _resolve_format(model: nn.Module, out: Path, format: str) -> str:
    if format not in ("auto", *_FORMATS):
        raise ConfigError(f"Unknown export format {format!r}. Use 'auto', {', '.join(map(repr, _FORMATS))}.")
    if format != "auto":
        return format
    if out.suffix == ".safetensors":
        return "safetensors"
    if hf_form(model) is not None:
        return "hf"
    raise ConfigError(
        f"Model {type(model).__name__!r} has no Hugging Face form, so it is exported as a safetensors state dict, but "
        f"{str(out)!r} does not end in '.safetensors'. Pass a path ending in '.safetensors' or format='safetensors'."
    )


def _check_output(out: Path, format: str, *, force: bool) -> None:
    if format == "safetensors":
        if out.is_dir():
            raise ConfigError(f"Output {str(out)!r} is a directory. Pass the path of the '.safetensors' file to write.")
        existing = [out] if out.exists() else []
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError(
                f"Output {str(out)!r} is a file, but a Hugging Face export is a directory. Pick another path."
            )
        existing = [out / name for name in _HF_FILES if (out / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"Output {str(existing[0])!r} already exists. Pass force=True (ghn export --force) to overwrite it, or "
            "pick another path."
        )


_HF_FILES = (WEIGHTS_NAME, CONFIG_NAME, RECORD_NAME)

Fill = Callable[[SafetensorsWriter], None]


def _write_safetensors(
    model: nn.Module, out: Path, state: dict[str, Tensor], fill: Fill, record: dict, *, dtype, force: bool
) -> Path:
    """Every state-dict key (tied ones too, so strict loading works) in one file, written atomically."""
    _check_output(out, "safetensors", force=force)
    slots = _slots(state, list(state), dtype)
    atomic_write(out, lambda tmp: write_safetensors(tmp, slots, fill, metadata=_header_metadata(record)))
    logger.info("Exported %s (%d tensors) to %s", type(model).__name__, len(slots), out)
    return out


def _write_hf(
    model: nn.Module, out: Path, state: dict[str, Tensor], fill: Fill, record: dict, *, dtype, force: bool
) -> Path:
    """A `save_pretrained` directory: config.json, model.safetensors (tied keys once) and the export record.

    The files are made in a staging directory beside `out` and renamed into it only when all are complete.
    """
    _check_output(out, "hf", force=force)
    form = hf_form(model)
    if form is None:
        raise ConfigError(
            f"Model {type(model).__name__!r} is not a Hugging Face model and has no registered equivalent in "
            "ghn.zoo.HF_EQUIVALENTS (ghn/zoo/hf_formats.py). Export it with format='safetensors'."
        )
    keys = _untied_keys(state, form.tied_keys, getattr(model, "_keys_to_ignore_on_save", None) or ())
    slots = _slots(state, keys, dtype)
    model_dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    with atomic_directory(out, names=_HF_FILES) as staging:
        write_safetensors(staging / WEIGHTS_NAME, slots, fill, metadata=_header_metadata(record))
        (staging / CONFIG_NAME).write_text(_hf_config_json(form, dtype or model_dtype))
        (staging / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("Exported %s as a Hugging Face %s directory (%d tensors) to %s", type(model).__name__,
                form.model_class, len(slots), out)  # fmt: skip
    return out


_FORMATS = {"hf": _write_hf, "safetensors": _write_safetensors}


def _untied_keys(state: dict[str, Tensor], tied: Iterable[str], ignored: Iterable[str]) -> list[str]:
    """State-dict keys without those `from_pretrained` re-ties from another key holding the same tensor."""
    patterns = [re.compile(p) for p in tied]
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    dropped = set(ignored)
    for names in groups.values():
        retied = [n for n in names if any(p.search(n) for p in patterns)]  # matched as transformers does
        if len(names) > 1 and retied:
            dropped.update(retied if len(retied) < len(names) else retied[1:])
    return [key for key in state if key not in dropped]


# -- records ----------------------------------------------------------------------------------------------------------
def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in EXPORT_DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in EXPORT_DTYPES:
        return EXPORT_DTYPES[dtype]
    raise ConfigError(f"Unknown export dtype {dtype!r}. Use one of {', '.join(map(repr, EXPORT_DTYPES))}.")


def _record(
    model: nn.Module,
    format: str,
    dtype: torch.dtype | None,
    *,
    spec: str | None,
    ghn: GHN | None,
    prediction: dict[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    from ghn._version import __version__

    config = getattr(model, "config", None)
    record: dict[str, Any] = {
        "ghn_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": format,
        "model_type": type(model).__name__,
        "spec": spec,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "ghn": _ghn_summary(ghn) if ghn is not None else None,
        "prediction": prediction,
        "metadata": dict(metadata or {}),
    }
    try:
        json.dumps(record)
    except TypeError as err:
        raise ConfigError(f"Export metadata must be JSON-serializable ({err}). Pass plain values.") from err
    return record


def _ghn_summary(ghn: GHN) -> dict[str, Any]:
    """Which GHN: the name and weights sha256 `ghn.from_pretrained` records, the task it was trained on, its size."""
    meta = getattr(ghn, "metadata", None) or {}
    return {
        "name": meta.get("name"),
        "sha256": meta.get("sha256"),
        "task": meta.get("task"),
        "num_parameters": ghn.num_parameters(),
    }


def _report_summary(report: PredictionReport) -> dict[str, Any]:
    return {
        "num_predicted_params": report.num_predicted_params,
        "num_total_params": report.num_total_params,
        "not_predicted": dict(report.not_predicted),
    }


# -- the safetensors file ---------------------------------------------------------------------------------------------
def _slots(state: dict[str, Tensor], keys: list[str], dtype: torch.dtype | None) -> list[TensorSlot]:
    """What the file holds, in `keys` order, with floating tensors cast to `dtype`."""
    slots = []
    for key in keys:
        tensor = state[key]
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        if target not in SAFETENSORS_DTYPES:
            raise ConfigError(f"Tensor {key!r} has dtype {target} that safetensors cannot store. Cast it first.")
        slots.append(TensorSlot(key, tuple(tensor.shape), target))
    return slots


def _header_metadata(record: dict[str, Any]) -> dict[str, str]:
    """The safetensors header's metadata: 'format' (which transformers checks) and the export record."""
    return {"format": "pt", _RECORD_KEY: json.dumps(record, sort_keys=True)}
