"""`create(spec)`: one entry point for every model ghn can take, named by a '<source>:<name>' spec string.

Sources: 'zoo:' (presets and families of `ghn.zoo`), 'hf:' (`transformers` models from a config, offline),
'torchvision:', 'timm:' (their model registries, random init; on meta their init calls are recorded, see
`ghn.zoo._init_record`) and 'module:' ('module:pkg.mod:factory').
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ghn._logging import get_logger
from ghn.errors import ConfigError, UnknownNameError
from ghn.meta import empty_weights
from ghn.registry import Registry, close_matches
from ghn.zoo._init_record import RecordedInit, record_init
from ghn.zoo._optional import require
from ghn.zoo.family import FAMILIES, lookup_config, preset_names, replace_config
from ghn.zoo.hf import HF_PRESETS, build_hf

__all__ = ["SOURCES", "create", "names"]

logger = get_logger(__name__)

# A source takes the name after '<source>:' and the overrides, and builds the model on the current default device.
SOURCES = Registry[Callable[[str, Mapping[str, Any]], nn.Module]]("model source")


def create(spec: str, *, device: str | torch.device | None = None, **overrides: Any) -> nn.Module:
    """The model named by `spec`, built on `device`.

    'meta' puts only the parameters there (no memory) and makes buffers on the CPU, as `ghn.empty_weights()` does,
    so what a constructor computes (rotary frequencies, position ids) keeps its value through `ghn.predict`.

    Examples: `create("zoo:resnet18", num_classes=10)`, `create("zoo:vit", depth=6)`,
    `create("zoo:gpt2-xl", device="meta")`, `create("hf:llama-tiny")`, `create("module:my_pkg.models:make_net")`.

    Args:
        spec: '<source>:<name>' with source 'zoo', 'hf', 'torchvision', 'timm' or 'module'. 'zoo:<preset>' and
            'zoo:<family>' (the family's default config) take config fields as overrides; 'hf:<preset>' takes
            fields of the `transformers` config; the others pass overrides to the library's or the user's factory.
        device: Where to build the model; default CPU. 'meta': parameters only (see above).
        **overrides: Replacements of config fields, or keyword arguments of the factory.

    Returns:
        The model, in training mode, randomly initialized.

    Raises:
        UnknownNameError: The source or the name is unknown; the message lists close matches.
        MissingDependencyError: The source needs an optional library that is not installed.
        ConfigError: An override is not a config field or has a value that is not allowed, or a 'module:' spec
            is malformed or its factory returns no `nn.Module`.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise UnknownNameError(
            f"Model spec {spec!r} has no source. Write '<source>:<name>' with source one of "
            f"{', '.join(map(repr, SOURCES.names()))}, e.g. 'zoo:resnet18'."
        )
    source_name, _, name = spec.partition(":")
    if source_name not in SOURCES:
        hint = close_matches(source_name, SOURCES.names())
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise UnknownNameError(
            f"Model spec {spec!r} has unknown source {source_name!r}.{suggestion} "
            f"Known sources: {', '.join(map(repr, SOURCES.names()))}."
        )
    with _building_on(device):
        model = SOURCES.get(source_name)(name, overrides)
    logger.info("Created %s (%s) on %s.", spec, type(model).__name__, device or "cpu")
    return model


@contextlib.contextmanager
def _building_on(device: str | torch.device | None) -> Iterator[None]:
    """Tensors are made on `device` (default CPU); for 'meta' only parameters go there, buffers are made on the CPU."""
    if device is not None and torch.device(device).type == "meta":
        with torch.device("cpu"), empty_weights():
            yield
    else:
        with torch.device(device if device is not None else "cpu"):
            yield


def names(pattern: str | None = None) -> list[str]:
    """Sorted spec strings of every named model: 'zoo:<preset>', 'zoo:<family>' and 'hf:<preset>'.

    Args:
        pattern: Keep only specs matching this shell-style pattern, such as 'zoo:vit-*' or 'hf:*'.
    """
    specs = {f"zoo:{name}" for name in preset_names() + FAMILIES.names()}
    specs |= {f"hf:{name}" for name in HF_PRESETS.names()}
    return sorted(s for s in specs if pattern is None or fnmatch.fnmatchcase(s, pattern))


def _create_zoo(name: str, overrides: Mapping[str, Any]) -> nn.Module:
    family, config = lookup_config(name)
    return family.build(replace_config(config, overrides))


def _create_torchvision(name: str, overrides: Mapping[str, Any]) -> nn.Module:
    torchvision = require("torchvision", extra="vision", purpose=f"Spec 'torchvision:{name}'")
    known = torchvision.models.list_models()
    if name not in known:
        raise UnknownNameError(_unknown_message("torchvision", name, known))
    return _with_recorded_init(lambda: torchvision.models.get_model(name, weights=None, **overrides))


def _create_timm(name: str, overrides: Mapping[str, Any]) -> nn.Module:
    timm = require("timm", extra="vision", purpose=f"Spec 'timm:{name}'")
    if not timm.is_model(name):
        raise UnknownNameError(_unknown_message("timm", name, timm.list_models()))
    return _with_recorded_init(lambda: timm.create_model(name, pretrained=False, **overrides))


def _with_recorded_init(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` under `record_init()`: a model built on meta gets the init its library applied (and meta did not
    compute) as its `reference_init()`, which `ghn.graph.init_stats` puts before its rules of PyTorch's defaults."""
    with record_init() as recorder:
        model = build()
    stats = recorder.stats(model)
    if stats and not hasattr(model, "reference_init"):
        model.reference_init = RecordedInit(stats)
    return model


def _create_module(name: str, overrides: Mapping[str, Any]) -> nn.Module:
    """'module:<pkg.mod>:<factory>': import the user's module and call the factory with the overrides."""
    module_path, _, factory_name = name.partition(":")
    if not module_path or not factory_name or ":" in factory_name:
        raise ConfigError(
            f"Model spec 'module:{name}' is malformed. Write 'module:<package.module>:<factory>', "
            "e.g. 'module:my_pkg.models:make_net'."
        )
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_path + ".").startswith(err.name + "."):
            raise  # the user's module exists but one of its own imports is missing
        raise UnknownNameError(
            f"Module {module_path!r} of spec 'module:{name}' cannot be found. "
            "Check the dotted path and that the package is on sys.path."
        ) from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UnknownNameError(_unknown_message(f"module {module_path!r}", factory_name, public, kind="factory"))
    model = factory(**overrides)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"Factory 'module:{name}' returned a {type(model).__name__!r}, not an nn.Module. Make it return the model."
        )
    return model


def _unknown_message(where: str, name: str, known: list[str], *, kind: str = "model") -> str:
    hint = close_matches(name, list(known))
    suggestion = f"Did you mean {', '.join(map(repr, hint))}?" if hint else f"It has {len(known)} entries."
    return f"Unknown {kind} {name!r} in {where}. {suggestion}"


SOURCES.register("zoo", _create_zoo)
SOURCES.register("hf", build_hf)
SOURCES.register("torchvision", _create_torchvision)
SOURCES.register("timm", _create_timm)
SOURCES.register("module", _create_module)
