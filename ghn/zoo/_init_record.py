"""`record_init()`: the init a library applies to the parameters of a model it builds on `meta`, where init calls
compute nothing.

torchvision and timm re-initialize most layers after construction (Kaiming normal fan-out convs, truncated normal
0.02 linears, normal 0.01 heads). On `meta` these calls are no-ops and the init rules of `ghn.graph.init_stats`
know only PyTorch's defaults, so a meta ResNet's convs would be predicted at 0.41x their real std. The recorder
watches the calls while the model is built: `Tensor.normal_`, `uniform_`, `zero_`, `fill_`, `copy_`, the `nn.init`
functions (`trunc_normal_` included) and timm's truncated normal (`uniform_ -> erfinv_ -> mul_ -> add_`), and gives
each parameter the (mean, std) of the values it would hold.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["InitRecorder", "RecordedInit", "record_init"]

_STANDARD_NORMAL = statistics.NormalDist()


@dataclass(frozen=True)
class _Values:
    """What a tensor holds after the init calls so far: the mean and std of its values, and while they are still
    uniform on (low, high) those bounds (timm turns them into a truncated normal with `erfinv_`)."""

    mean: float
    std: float
    uniform: tuple[float, float] | None = None


class RecordedInit:
    """A model's `reference_init()`: {parameter name: (mean, std)} of the init its library applied on `meta`, which
    `ghn.graph.init_stats` uses in place of its rules."""

    def __init__(self, stats: dict[str, tuple[float, float]]) -> None:
        self.stats = stats

    def __call__(self) -> dict[str, tuple[float, float]]:
        return dict(self.stats)

    def __repr__(self) -> str:
        return f"RecordedInit({len(self.stats)} parameters)"


class InitRecorder(TorchFunctionMode):
    """Follows the init calls made on `meta` tensors; `stats(model)` gives each recorded parameter's (mean, std).

    An in-place call it does not know on a recorded tensor forgets the tensor (its rule applies again), so what it
    reports is never a guess.
    """

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[int, _Values] = {}
        self._alive: dict[int, Tensor] = {}  # every tensor seen stays alive until the end, so ids stay unique
        self._roots: dict[int, Tensor] = {}  # id(t.data) -> t: writes through `.data` count for t

    def stats(self, model: nn.Module) -> dict[str, tuple[float, float]]:
        found = {}
        for name, param in model.named_parameters():
            values = self._values.get(id(param))
            if values is not None and self._alive.get(id(param)) is param:
                found[name] = (values.mean, values.std)
        return found

    def record(self, tensor: Tensor, values: _Values | None) -> None:
        tensor = self._roots.get(id(tensor), tensor)
        self._alive[id(tensor)] = tensor
        if values is None:
            self._values.pop(id(tensor), None)
        else:
            self._values[id(tensor)] = values

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if getattr(func, "__self__", None) is _DATA_DESCRIPTOR and isinstance(result, Tensor) and result.is_meta:
            self._roots[id(result)] = self._roots.get(id(args[0]), args[0])
            self._alive[id(result)] = result
            return result
        rule = _RULES.get(func)
        tensor = kwargs.get("tensor", args[0] if args else None)
        if not isinstance(tensor, Tensor) or not tensor.is_meta:
            return result
        if rule is not None:
            self.record(tensor, rule(self, tensor, args[1:] if "tensor" not in kwargs else (), kwargs))
        elif _is_inplace(func):
            self.record(tensor, None)  # an in-place write this recorder does not follow
        return result

    def current(self, tensor: Tensor) -> _Values | None:
        return self._values.get(id(self._roots.get(id(tensor), tensor)))


@contextmanager
def record_init() -> Iterator[InitRecorder]:
    """Record the init calls made on `meta` tensors while the block runs (see the module docstring).

    `torch.nn.init.trunc_normal_` returns at once on `meta` without a call the recorder can see, so for the block it
    is replaced by a wrapper that records it first (callers that look it up as `nn.init.trunc_normal_`, as
    torchvision and timm do, get the wrapper).
    """
    recorder = InitRecorder()
    original = nn.init.trunc_normal_

    def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, **kwargs):
        if isinstance(tensor, Tensor) and tensor.is_meta:
            z_mean, z_std = _truncated_normal((a - mean) / std, (b - mean) / std)
            recorder.record(tensor, _Values(mean + std * z_mean, std * z_std))
        return original(tensor, mean, std, a, b, **kwargs)

    nn.init.trunc_normal_ = trunc_normal_
    try:
        with recorder:
            yield recorder
    finally:
        nn.init.trunc_normal_ = original


def _is_inplace(func: Callable) -> bool:
    """`Tensor.index_fill_`, `torch.relu_`, `x[i] = v`; not dunders and property getters (`__get__`)."""
    name = getattr(func, "__name__", "")
    return func is Tensor.__setitem__ or (name.endswith("_") and not name.startswith("__"))


# -- what each call leaves in the tensor -------------------------------------------------------------------------------
def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _uniform(low: float, high: float) -> _Values:
    return _Values((low + high) / 2, (high - low) / math.sqrt(12.0), (low, high))


def _normal(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values:
    return _Values(float(_arg(args, kwargs, 0, "mean", 0.0)), float(_arg(args, kwargs, 1, "std", 1.0)))


def _tensor_uniform(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values:
    return _uniform(float(_arg(args, kwargs, 0, "from", 0.0)), float(_arg(args, kwargs, 1, "to", 1.0)))


def _init_uniform(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values:
    return _uniform(float(_arg(args, kwargs, 0, "a", 0.0)), float(_arg(args, kwargs, 1, "b", 1.0)))


def _fill(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
    value = _number(_arg(args, kwargs, 0, "val" if "val" in kwargs else "value", None))
    return None if value is None else _Values(value, 0.0)


def _zero(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values:
    return _Values(0.0, 0.0)


def _kaiming_uniform(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
    a = _arg(args, kwargs, 0, "a", 0.0)
    mode = _arg(args, kwargs, 1, "mode", "fan_in")
    nonlinearity = _arg(args, kwargs, 2, "nonlinearity", "leaky_relu")
    if 0 in tensor.shape or tensor.dim() < 2:
        return None
    fan = nn.init._calculate_correct_fan(tensor, mode)
    return _uniform(*(b * math.sqrt(3.0) * nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan) for b in (-1, 1)))


def _copy(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
    source = _arg(args, kwargs, 0, "src", None)
    return recorder.current(source) if isinstance(source, Tensor) else None


def _erfinv(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
    """erfinv(U) for U uniform on (low, high) in [-1, 1] is Z / sqrt(2), Z a standard normal truncated to
    [Phi^-1((low + 1) / 2), Phi^-1((high + 1) / 2)] (how timm's `trunc_normal_` draws)."""
    values = recorder.current(tensor)
    if values is None or values.uniform is None or not -1.0 <= values.uniform[0] < values.uniform[1] <= 1.0:
        return None
    alpha, beta = (_inverse_cdf((bound + 1.0) / 2.0) for bound in values.uniform)
    mean, std = _truncated_normal(alpha, beta)
    return _Values(mean / math.sqrt(2.0), std / math.sqrt(2.0))


def _affine(scale_sign: int | None, inverse: bool = False) -> Callable:
    """mul_/div_ (scale_sign None) or add_/sub_ (+1/-1) by a number: the mean and std follow."""

    def rule(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
        values, other = recorder.current(tensor), _number(_arg(args, kwargs, 0, "other", None))
        if values is None or other is None or (inverse and other == 0):
            return None
        if scale_sign is None:
            factor = 1.0 / other if inverse else other
            return _Values(values.mean * factor, values.std * abs(factor))
        return _Values(values.mean + scale_sign * other * float(kwargs.get("alpha", 1)), values.std)

    return rule


def _unchanged(recorder: InitRecorder, tensor: Tensor, args: tuple, kwargs: dict) -> _Values | None:
    """clamp_ after a truncated normal: the bounds it was truncated to already hold."""
    return recorder.current(tensor)


def _inverse_cdf(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return _STANDARD_NORMAL.inv_cdf(p)


def _truncated_normal(alpha: float, beta: float) -> tuple[float, float]:
    """Mean and std of a standard normal truncated to [alpha, beta]."""
    mass = _STANDARD_NORMAL.cdf(beta) - _STANDARD_NORMAL.cdf(alpha)
    if mass <= 0.0:
        return (alpha + beta) / 2.0, 0.0

    def pdf(x: float) -> float:
        return 0.0 if math.isinf(x) else _STANDARD_NORMAL.pdf(x)

    def x_pdf(x: float) -> float:
        return 0.0 if math.isinf(x) else x * _STANDARD_NORMAL.pdf(x)

    mean = (pdf(alpha) - pdf(beta)) / mass
    variance = 1.0 + (x_pdf(alpha) - x_pdf(beta)) / mass - mean**2
    return mean, math.sqrt(max(variance, 0.0))


_DATA_DESCRIPTOR = torch._C.TensorBase.__dict__["data"]
_RULES: dict[Callable, Callable[[InitRecorder, Tensor, tuple, dict], _Values | None]] = {
    Tensor.normal_: _normal,
    Tensor.uniform_: _tensor_uniform,
    Tensor.zero_: _zero,
    Tensor.fill_: _fill,
    Tensor.copy_: _copy,
    Tensor.erfinv_: _erfinv,
    Tensor.mul_: _affine(None),
    Tensor.div_: _affine(None, inverse=True),
    Tensor.add_: _affine(+1),
    Tensor.sub_: _affine(-1),
    Tensor.clamp_: _unchanged,
    # nn.init functions that dispatch to torch-function modes themselves (their inner calls are not seen):
    nn.init.normal_: _normal,
    nn.init.uniform_: _init_uniform,
    nn.init.constant_: _fill,
    nn.init.kaiming_uniform_: _kaiming_uniform,
}
