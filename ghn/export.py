"""Ready-to-train weights: a predicted model as a safetensors state dict, or as a Hugging Face `save_pretrained`
directory (`config.json` + `model.safetensors`), with a record of what predicted it. Written atomically.

`export_predicted` streams: it predicts a model built on `meta` one tensor at a time straight into the file, so a
GPT-2 Large export never holds the model in memory at all (peak: one tensor, the GHN and the graph).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

import torch
from torch import Tensor, nn

from ghn._logging import get_logger
from ghn.errors import CheckpointError, ConfigError, MissingDependencyError
from ghn.graph import ComputationGraph
from ghn.meta import recompute_buffers
from ghn.nn import GHN
from ghn.nn.checkpoint import CONFIG_NAME, WEIGHTS_NAME, atomic_write
from ghn.nn.decoder import LowRank
from ghn.predict import PredictionReport, graphs_and_ghn
from ghn.registry import Registry
from ghn.zoo import GPT2, create

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

# safetensors' dtype codes (https://github.com/huggingface/safetensors, `Dtype` in safetensors/src/tensor.rs).
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


# -- Hugging Face equivalents of zoo models ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HFEquivalentSpec:
    """A zoo model class whose state dict loads unchanged into a `transformers` class.

    Attributes:
        name: registry key ('gpt2').
        module_type: the zoo class (`ghn.zoo.GPT2`).
        model_class: the `transformers` class it loads into ('GPT2LMHeadModel').
        config_class: that class's config class ('GPT2Config').
        config: the config class's keyword arguments for one model.
        tied_keys: state-dict keys that `from_pretrained` re-ties, so the file stores them once (under the other name).
    """

    name: str
    module_type: type[nn.Module]
    model_class: str
    config_class: str
    config: Callable[[nn.Module], dict[str, Any]]
    tied_keys: tuple[str, ...] = ()


HF_EQUIVALENTS = Registry[HFEquivalentSpec]("Hugging Face equivalent")


def _gpt2_config(model: nn.Module) -> dict[str, Any]:
    config = model.config
    # GPT-2's special token 50256 only exists in the full vocabulary; smaller (byte-level) vocabularies have none.
    special = 50256 if config.vocab_size > 50256 else None
    return {
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd, like the zoo's MLP
        "activation_function": "gelu_new",  # tanh-approximated GELU, like the zoo's MLP
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": config.initializer_range,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "bos_token_id": special,
        "eos_token_id": special,
        "tie_word_embeddings": True,
    }


HF_EQUIVALENTS.register(
    "gpt2", HFEquivalentSpec("gpt2", GPT2, "GPT2LMHeadModel", "GPT2Config", _gpt2_config, ("lm_head.weight",))
)


@dataclass(frozen=True)
class _HFForm:
    """What a Hugging Face directory needs besides the weights: the config object, the class, the re-tied keys."""

    config: Any
    model_class: str
    tied_keys: tuple[str, ...]


def _hf_form(model: nn.Module) -> _HFForm | None:
    """The Hugging Face form of `model`: itself for a `PreTrainedModel`, its registered equivalent for a zoo model."""
    transformers = sys.modules.get("transformers")  # a model cannot be a PreTrainedModel unless it was imported
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return _HFForm(model.config, type(model).__name__, _hf_tied_keys(model))
    spec = next((s for s in HF_EQUIVALENTS.values() if type(model) is s.module_type), None)
    if spec is None:
        return None
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            f"Exporting a {type(model).__name__!r} as a Hugging Face directory needs 'transformers'. Install it with "
            "pip install 'ghn[hf]', or export a plain state dict with format='safetensors'."
        ) from err
    config = getattr(transformers, spec.config_class)(**spec.config(model))
    return _HFForm(config, spec.model_class, spec.tied_keys)


def _hf_tied_keys(model: nn.Module) -> tuple[str, ...]:
    """Patterns of the keys `from_pretrained` re-ties (transformers 5: a {tied: source} map; 4: a list)."""
    expand = getattr(model, "get_expanded_tied_weights_keys", None)
    keys = expand(all_submodels=True) if callable(expand) else getattr(model, "_tied_weights_keys", None)
    return tuple(keys or ())


def _hf_config_json(form: _HFForm, dtype: torch.dtype) -> str:
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
            zoo models with a Hugging Face equivalent (`HF_EQUIVALENTS`, e.g. zoo GPT-2).
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

    def fill(writer: _SafetensorsWriter) -> None:
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

    def fill(writer: _SafetensorsWriter) -> None:
        report = _stream_predictions(model, graph, ghn, writer, state, buffers)
        logger.info("%s", report)
        if report.not_predicted:
            logger.warning("Prediction of %s is incomplete:\n%s", report.model_type, report)

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
    if _hf_form(model) is not None:
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

Fill = Callable[["_SafetensorsWriter"], None]


def _write_safetensors(
    model: nn.Module, out: Path, state: dict[str, Tensor], fill: Fill, record: dict, *, dtype, force: bool
) -> Path:
    """Every state-dict key (tied ones too, so strict loading works) in one file, written atomically."""
    _check_output(out, "safetensors", force=force)
    entries = _entries(state, list(state), dtype)
    atomic_write(out, lambda tmp: _write_file(tmp, entries, record, fill))
    logger.info("Exported %s (%d tensors) to %s", type(model).__name__, len(entries), out)
    return out


def _write_hf(
    model: nn.Module, out: Path, state: dict[str, Tensor], fill: Fill, record: dict, *, dtype, force: bool
) -> Path:
    """A `save_pretrained` directory: config.json, model.safetensors (tied keys once) and the export record.

    The files are made in a temporary directory beside `out` and renamed into it only when all are complete.
    """
    _check_output(out, "hf", force=force)
    form = _hf_form(model)
    if form is None:
        raise ConfigError(
            f"Model {type(model).__name__!r} is not a Hugging Face model and has no registered equivalent in "
            "ghn.export.HF_EQUIVALENTS. Export it with format='safetensors'."
        )
    keys = _untied_keys(state, form.tied_keys, getattr(model, "_keys_to_ignore_on_save", None) or ())
    entries = _entries(state, keys, dtype)
    model_dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_file(staging / WEIGHTS_NAME, entries, record, fill)
        (staging / CONFIG_NAME).write_text(_hf_config_json(form, dtype or model_dtype))
        (staging / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        out.mkdir(exist_ok=True)
        for name in _HF_FILES:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Exported %s as a Hugging Face %s directory (%d tensors) to %s", type(model).__name__,
                form.model_class, len(entries), out)  # fmt: skip
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


# -- streaming predictions ------------------------------------------------------------------------------------------
def _stream_predictions(
    model: nn.Module,
    graph: ComputationGraph,
    ghn: GHN,
    writer: _SafetensorsWriter,
    state: dict[str, Tensor],
    buffers: dict[str, Tensor],
) -> PredictionReport:
    """Write every predicted tensor (under all its names) as it is made, then what the GHN does not predict."""
    trainable = [info for info in graph.params.values() if info.trainable]
    report = PredictionReport(
        model_type=type(model).__name__,
        num_total_tensors=len(trainable),
        num_total_params=sum(info.numel for info in trainable),
    )
    done: set[str] = set()
    was_training = ghn.training
    ghn.eval()
    try:
        with torch.no_grad():
            for _, name, prediction in ghn.iter_predictions([graph]):
                tensor = prediction
                if isinstance(prediction, LowRank):  # multiplied out as predict does, so the values match bit for bit
                    tensor = prediction.rows.new_empty(prediction.shape)
                    prediction.materialize(out=tensor)
                for key in (name, *graph.params[name].aliases):
                    if key in writer.pending:
                        writer.write(key, tensor)
                    done.add(key)
                report.predicted.append(name)
                del tensor, prediction  # free this tensor before the next one is made
    finally:
        ghn.train(was_training)
    for info in graph.params.values():
        if info.name in done and info.trainable:
            report.num_predicted_tensors += 1
            report.num_predicted_params += info.numel
        elif info.trainable:
            report.not_predicted[info.name] = info.reason or "no node owns it"
            if state[info.name].is_meta:
                report.not_predicted[info.name] += "; the model was on meta, so it was set to zeros"
    _write_rest(model, writer, state, buffers, report)
    return report


def _write_rest(
    model: nn.Module,
    writer: _SafetensorsWriter,
    state: dict[str, Tensor],
    buffers: dict[str, Tensor],
    report: PredictionReport,
) -> None:
    """Keys the GHN did not predict: running statistics reset, real tensors as they are, meta buffers as
    `recompute_buffers` gave them, meta parameters as zeros."""
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
                report.reset_buffers.append(prefix + name)
    for key in list(writer.pending):
        tensor = state[key]
        if key in buffers:
            report.recomputed_buffers.append(key)
            tensor = buffers[key]
        writer.write(key, torch.zeros(tensor.shape, dtype=tensor.dtype) if tensor.is_meta else tensor)


# -- the safetensors writer -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    begin: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _entries(state: dict[str, Tensor], keys: list[str], dtype: torch.dtype | None) -> list[_Entry]:
    """Where each key goes in the file, in `keys` order, with floating tensors cast to `dtype`."""
    entries, begin = [], 0
    for key in keys:
        tensor = state[key]
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        if target not in _SAFETENSORS_DTYPES:
            raise ConfigError(f"Tensor {key!r} has dtype {target} that safetensors cannot store. Cast it first.")
        entries.append(_Entry(key, tuple(tensor.shape), target, begin))
        begin += entries[-1].nbytes
    return entries


def _write_file(path: Path, entries: list[_Entry], record: dict, fill: Fill) -> None:
    metadata = {"format": "pt", _RECORD_KEY: json.dumps(record, sort_keys=True)}
    with open(path, "wb") as file:
        writer = _SafetensorsWriter(file, entries, metadata)
        fill(writer)
        writer.close()


class _SafetensorsWriter:
    """Writes a safetensors file whose tensors arrive in any order, one at a time.

    The header is known up front (keys, shapes, dtypes), so it is written first and each tensor is then written at
    its own offset as it comes: no tensor is kept after its write and none is copied beyond its cast. The format:
    an 8-byte little-endian header length, a JSON header (space-padded to 8 bytes), then the raw little-endian data
    (the native byte order of every platform torch ships for).
    """

    def __init__(self, file: BinaryIO, entries: list[_Entry], metadata: dict[str, str]) -> None:
        header: dict[str, Any] = {"__metadata__": metadata}
        for entry in entries:
            header[entry.key] = {
                "dtype": _SAFETENSORS_DTYPES[entry.dtype],
                "shape": list(entry.shape),
                "data_offsets": [entry.begin, entry.begin + entry.nbytes],
            }
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._file = file
        self._start = 8 + len(text)
        self._entries = {entry.key: entry for entry in entries}
        self.keys = [entry.key for entry in entries]
        self.pending = set(self.keys)
        file.write(struct.pack("<Q", len(text)) + text)
        file.truncate(self._start + sum(entry.nbytes for entry in entries))

    def write(self, key: str, tensor: Tensor) -> None:
        """Cast `tensor` to the key's dtype and write it at the key's offset."""
        entry = self._entries[key]
        assert key in self.pending, f"{key!r} written twice"  # internal: each key is filled exactly once
        if tuple(tensor.shape) != entry.shape:
            raise CheckpointError(f"Tensor {key!r} has shape {tuple(tensor.shape)}, but {entry.shape} was planned.")
        data = tensor.detach().to(device="cpu", dtype=entry.dtype).contiguous().reshape(-1)
        if data.numel():
            self._file.seek(self._start + entry.begin)
            self._file.write(memoryview(data.view(torch.uint8).numpy()))
        self.pending.discard(key)

    def close(self) -> None:
        assert not self.pending, f"unwritten tensors {sorted(self.pending)[:5]}"  # internal: every key is filled
        self._file.flush()
        os.fsync(self._file.fileno())
