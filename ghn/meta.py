"""Models whose parameters live on `meta`: `empty_weights()` builds them with real buffers, and `recompute_buffers`
gives real values to the buffers of a model built wholly on meta (rotary frequencies, position ids, causal masks).

A GHN predicts parameters, never buffers, so every buffer must come from the model's own construction or init.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ghn._logging import get_logger
from ghn.errors import MetaBufferError

__all__ = ["BUFFER_SOURCES", "BufferSource", "empty_weights", "recompute_buffers"]

logger = get_logger(__name__)

#: (model, path of the module in it, the module, device) -> {buffer name in the module: real value}. A source may
#: return only some of the module's buffers (or none); it raises `MetaBufferError` to say why it cannot help.
BufferSource = Callable[[nn.Module, str, nn.Module, torch.device], dict[str, Tensor]]


@contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules with their parameters on `meta` (no memory, no init cost) and their buffers real.

    Like `accelerate.init_empty_weights(include_buffers=False)`: each parameter is sent to `meta` as it is
    registered, while buffers are made where tensors are made by default (the CPU, or the device of an enclosing
    `with torch.device(...)`), so what a constructor computes (rotary frequencies, causal masks, position ids)
    keeps its value. Use it instead of `with torch.device("meta")` to build a large model for `ghn.predict`.

        >>> with ghn.empty_weights():
        ...     model = transformers.LlamaForCausalLM(config)
        >>> ghn.predict(model)  # parameters predicted, model.model.rotary_emb.inv_freq as the constructor made it

    Parameters are still allocated (uninitialized) for a moment before they move to `meta`, one at a time. The hook
    is global, so modules built by other threads meanwhile get meta parameters too.
    """
    handle = nn.modules.module.register_module_parameter_registration_hook(_to_meta)
    try:
        yield
    finally:
        handle.remove()


def _to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> nn.Parameter | None:
    if param is None or param.is_meta or nn.parameter.is_lazy(param):
        return None
    new = type(param)(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    new.__dict__.update(param.__dict__)  # flags libraries set on their parameters (e.g. transformers' init marks)
    return new


def recompute_buffers(
    model: nn.Module, device: str | torch.device = "cpu", *, names: Collection[str] | None = None
) -> dict[str, Tensor]:
    """Real values, on `device`, of the buffers `model` holds on `meta`; the model is not changed.

    For each module holding such buffers, `BUFFER_SOURCES` are asked in order: by default the module's own
    `reset_running_stats` (BatchNorm), the `_init_weights` of the enclosing `transformers` model (which sets every
    buffer `from_pretrained` does not load: rotary frequencies, position ids), and the module's constructor run
    again under `empty_weights()` with the arguments it keeps as attributes of the same name (`config`, ...).

    Args:
        model: a model with buffers on `meta` (its parameters may be anywhere).
        device: where the values are made.
        names: only these buffers (state-dict style names); default every meta buffer.

    Returns:
        {buffer name: value}, every value with the meta buffer's shape and dtype.

    Raises:
        MetaBufferError: a buffer cannot be recomputed; the message names it and how to build the model instead.
    """
    device = torch.device(device)
    values: dict[str, Tensor] = {}
    unknown: dict[str, list[str]] = {}
    done: dict[int, tuple[dict[str, Tensor], list[str]]] = {}  # a module shared under several names: once
    for path, module in model.named_modules(remove_duplicate=False):
        prefix = f"{path}." if path else ""
        wanted = [name for name in _meta_buffers(module) if names is None or prefix + name in names]
        if not wanted:
            continue
        if id(module) not in done:
            done[id(module)] = _recompute(model, path, module, device, _meta_buffers(module))
        found, reasons = done[id(module)]
        for name in wanted:
            if name in found:
                values[prefix + name] = found[name]
            else:
                unknown[prefix + name] = reasons
    if unknown:
        raise MetaBufferError(_unknown_message(model, unknown))
    if values:
        logger.info("Recomputed %d buffers of %s that were on meta.", len(values), type(model).__name__)
    return values


def _recompute(
    model: nn.Module, path: str, module: nn.Module, device: torch.device, wanted: list[str]
) -> tuple[dict[str, Tensor], list[str]]:
    """The values of `wanted` that the sources give (first source first), and why the others could not."""
    found: dict[str, Tensor] = {}
    reasons: list[str] = []
    for source in BUFFER_SOURCES:
        try:
            with torch.no_grad(), _fixed_rng():
                given = source(model, path, module, device)
        except MetaBufferError as err:
            reasons.append(str(err))
            continue
        for name in wanted:
            if name not in found and name in given:
                value = _fitted(given[name], module._buffers[name], device)
                if value is not None:
                    found[name] = value
        if len(found) == len(wanted):
            break
    return found, reasons


def _fitted(value: Tensor, buffer: Tensor, device: torch.device) -> Tensor | None:
    """`value` as the buffer's dtype on `device`, or None when it cannot stand for it (shape, kind or meta)."""
    if value.is_meta or value.shape != buffer.shape:
        return None
    if value.dtype != buffer.dtype and not (value.is_floating_point() and buffer.is_floating_point()):
        return None
    return value.detach().to(device=device, dtype=buffer.dtype)


@contextmanager
def _fixed_rng() -> Iterator[None]:
    """A source that draws random buffers draws the same ones each time, and the caller's CPU RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        yield


def _unknown_message(model: nn.Module, unknown: dict[str, list[str]]) -> str:
    names = list(unknown)
    listed = ", ".join(map(repr, names[:3])) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")
    owner = type(model.get_submodule(names[0].rpartition(".")[0])).__name__
    why = "; ".join(unknown[names[0]]) or "no buffer source gives it"
    return (
        f"Model {type(model).__name__!r} holds buffer(s) {listed} on 'meta', with no values, and ghn cannot recompute "
        f"{names[0]!r} (of {owner!r}): {why}. Build the model under `with ghn.empty_weights():` (parameters on "
        "meta, buffers real) instead of `with torch.device('meta'):`, or assign the buffer a real tensor first."
    )


# -- buffer sources ---------------------------------------------------------------------------------------------------
def _from_running_stats(model: nn.Module, path: str, module: nn.Module, device: torch.device) -> dict[str, Tensor]:
    """BatchNorm-style modules: what their own `reset_running_stats` sets."""
    reset = getattr(module, "reset_running_stats", None)
    if not callable(reset):
        return {}
    return _set_by(module, device, lambda stand_in: stand_in.reset_running_stats())


def _from_transformers_init(model: nn.Module, path: str, module: nn.Module, device: torch.device) -> dict[str, Tensor]:
    """Modules inside a `transformers` model: what its `_init_weights` sets (transformers 5 builds every model on
    meta for `from_pretrained` and sets the buffers it does not load this way)."""
    transformers = sys.modules.get("transformers")  # no model can be a PreTrainedModel unless it was imported
    if transformers is None:
        return {}
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        owner = model.get_submodule(".".join(parts[:depth]))
        if isinstance(owner, transformers.PreTrainedModel):
            return _set_by(module, device, owner._init_weights)
    return {}


def _from_constructor(model: nn.Module, path: str, module: nn.Module, device: torch.device) -> dict[str, Tensor]:
    """The buffers of a fresh `type(module)(...)` on `device`, built under `empty_weights()` (no parameter memory),
    with every constructor argument taken from the module's attribute of the same name (`config`, `dim`, ...).

    An argument the module does not keep, or keeps as a tensor or module, makes this source give up: guessing it
    (say, from its default) could give wrong values silently.
    """
    cls = type(module)
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as err:
        raise MetaBufferError(f"the signature of {cls.__name__}.__init__ cannot be read ({err})") from err
    kwargs = {}
    for param in list(signature.parameters.values())[1:]:  # after self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name == "device":
            kwargs["device"] = device
            continue
        value = getattr(module, param.name, _MISSING)
        if value is _MISSING or isinstance(value, (Tensor, nn.Module)):
            if param.name == "dtype" and param.default is not param.empty:
                continue  # a factory argument: the value is cast to the buffer's dtype
            raise MetaBufferError(
                f"re-running {cls.__name__}(...) needs its argument {param.name!r}, which the module does not keep "
                "as a plain attribute"
            )
        kwargs[param.name] = copy.deepcopy(value)  # a constructor may change its config; the model's stays as it is
    try:
        with torch.device(device), empty_weights():
            fresh = cls(**kwargs)
    except Exception as err:  # the module's own constructor can raise anything; say which and why
        raise MetaBufferError(f"re-running {cls.__name__}(...) raised {type(err).__name__}: {err}") from err
    return {name: buffer for name, buffer in fresh._buffers.items() if buffer is not None}


_MISSING = object()


def _set_by(module: nn.Module, device: torch.device, hook: Callable[[nn.Module], object]) -> dict[str, Tensor]:
    """The meta buffers of `module` that `hook` sets, run on a stand-in of it.

    The stand-in is a copy with every tensor on meta (free) except the module's own meta buffers, made real on
    `device`. It is run twice, those buffers filled first with 0 and then with 1: a buffer the hook gives the same
    value both times is one it computes; one it leaves (or only partly sets) differs and is not returned.
    """
    runs = []
    for fill in (0, 1):
        stand_in = _stand_in(module, device, fill)
        try:
            hook(stand_in)
        except Exception as err:  # library and user init hooks can raise anything; say which and why
            raise MetaBufferError(
                f"{getattr(hook, '__qualname__', 'the init hook')} raised {type(err).__name__}: {err}"
            ) from err
        runs.append(stand_in._buffers)
    first, second = runs
    return {
        name: value for name, value in first.items() if name in _meta_buffers(module) and _same(value, second[name])
    }


def _stand_in(module: nn.Module, device: torch.device, fill: int) -> nn.Module:
    memo: dict[int, object] = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
        )
    try:
        stand_in = copy.deepcopy(module, memo)
    except Exception as err:  # a module may hold attributes that cannot be copied (locks, handles)
        raise MetaBufferError(f"{type(module).__name__!r} cannot be copied ({type(err).__name__}: {err})") from err
    for name in _meta_buffers(module):
        buffer = module._buffers[name]
        stand_in._buffers[name] = torch.full(buffer.shape, fill, dtype=buffer.dtype, device=device)
    return stand_in


def _meta_buffers(module: nn.Module) -> list[str]:
    return [name for name, buffer in module._buffers.items() if buffer is not None and buffer.is_meta]


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """Bit for bit (so NaN equals NaN, and -0.0 does not equal 0.0)."""
    if a is None or b is None or a.is_meta or b.is_meta or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


#: Asked in order for the buffers of each module a model holds on `meta` (see `recompute_buffers`). Put a source for
#: your own module first: `ghn.meta.BUFFER_SOURCES.insert(0, my_source)`.
BUFFER_SOURCES: list[BufferSource] = [_from_running_stats, _from_transformers_init, _from_constructor]
