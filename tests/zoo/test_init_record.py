"""`record_init`: the init calls a library makes on `meta` give each parameter the (mean, std) the same calls draw on
the CPU, and `create('torchvision:...'/'timm:...', device='meta')` hands them on as the model's `reference_init()`.
No torchvision or timm needed: the library inits are written out here (tests/zoo/test_vision.py runs the real ones).
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from torch import nn

from ghn.graph import build_graph
from ghn.zoo import create
from ghn.zoo._init_record import record_init


def _timm_trunc_normal_(tensor: torch.Tensor, mean: float, std: float, a: float, b: float) -> torch.Tensor:
    """timm.layers.trunc_normal_, written out: uniform on the CDF bounds, erfinv, scale, shift, clamp."""
    cdf = lambda x: (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0  # noqa: E731
    low, high = cdf((a - mean) / std), cdf((b - mean) / std)
    with torch.no_grad():
        tensor.uniform_(2 * low - 1, 2 * high - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
    return tensor


def _timm_trunc_normal_tf_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """timm.layers.trunc_normal_tf_: a standard normal truncated to [-2, 2], then scaled (std 0.88 * std)."""
    _timm_trunc_normal_(tensor, 0.0, 1.0, -2.0, 2.0)
    with torch.no_grad():
        return tensor.mul_(std).add_(0.0)


class LibraryNet(nn.Module):
    """A net that re-initializes its layers after construction, as torchvision and timm models do."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.mix = nn.Linear(64, 256)
        self.proj = nn.Linear(256, 128)
        self.tf = nn.Linear(128, 128)
        self.head = nn.Linear(128, 10)
        self.plain = nn.Linear(128, 96)  # PyTorch's default init, untouched
        nn.init.kaiming_normal_(self.stem.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.bn.weight, 1)
        nn.init.trunc_normal_(self.mix.weight, std=0.02)
        nn.init.zeros_(self.mix.bias)
        _timm_trunc_normal_(self.proj.weight, 0.0, 0.05, -2.0, 2.0)
        _timm_trunc_normal_tf_(self.tf.weight, std=0.1)
        self.head.weight.data.normal_(0, 0.01)
        nn.init.uniform_(self.head.bias, -0.3, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x))).mean((2, 3))  # (B, 64)
        x = self.tf(self.proj(torch.relu(self.mix(x))))
        return self.head(x) + self.plain(x).mean(-1, keepdim=True)


def _recorded_on_meta() -> dict[str, tuple[float, float]]:
    with torch.device("meta"), record_init() as recorder:
        model = LibraryNet()
    return recorder.stats(model)


def test_recorded_init_matches_the_values_the_same_calls_draw() -> None:
    recorded = _recorded_on_meta()
    torch.manual_seed(0)
    real = LibraryNet()
    assert set(recorded) == {name for name, _ in real.named_parameters()}
    for name, (mean, std) in recorded.items():
        values = real.get_parameter(name).detach()
        assert abs(values.mean().item() - mean) <= 4 * std / math.sqrt(values.numel()) + 1e-7, name
        assert values.std(unbiased=False).item() == pytest.approx(std, rel=0.06, abs=1e-7), name


def test_recorded_init_follows_each_rule() -> None:
    recorded = _recorded_on_meta()
    assert recorded["stem.weight"] == pytest.approx((0.0, math.sqrt(2.0 / (64 * 9))))  # Kaiming normal, fan-out
    assert recorded["bn.weight"] == (1.0, 0.0) and recorded["mix.bias"] == (0.0, 0.0)
    assert recorded["mix.weight"] == pytest.approx((0.0, 0.02), rel=1e-6)  # truncated at +-100 std: a normal
    assert recorded["proj.weight"] == pytest.approx((0.0, 0.05), abs=1e-9)
    assert recorded["tf.weight"][1] == pytest.approx(0.1 * 0.8796256610342398)  # a standard normal cut at +-2
    assert recorded["head.weight"] == (0.0, 0.01)  # written through .data
    assert recorded["head.bias"] == pytest.approx((-0.1, 0.4 / math.sqrt(12.0)))
    assert recorded["plain.weight"] == pytest.approx((0.0, 1.0 / math.sqrt(3.0 * 128)))  # kaiming_uniform(a=sqrt 5)


def test_an_unknown_in_place_write_forgets_the_tensor() -> None:
    with torch.device("meta"), record_init() as recorder:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
        model[0].weight.data.normal_(0, 0.5)
        model[0].weight.data.masked_fill_(torch.ones(4, 4, dtype=torch.bool), 1.0)
        model[1].weight.data.normal_(0, 0.5)
        with torch.no_grad():
            model[1].weight[0] = 3.0
        model[2].weight.data.normal_(0, 0.5).mul_(torch.ones(4, 4))  # scaled by a tensor, not a number
    stats = recorder.stats(model)
    assert not {"0.weight", "1.weight", "2.weight"} & set(stats)
    assert "0.bias" in stats


def test_only_meta_tensors_are_recorded_and_trunc_normal_is_restored() -> None:
    original = nn.init.trunc_normal_
    with record_init() as recorder:
        assert nn.init.trunc_normal_ is not original
        real = nn.Linear(4, 4)
        nn.init.trunc_normal_(real.weight, std=0.02)
    assert nn.init.trunc_normal_ is original
    assert recorder.stats(real) == {}
    assert real.weight.std() < 0.1  # the real init still ran


def _fake_torchvision() -> types.ModuleType:
    models = types.SimpleNamespace(list_models=lambda: ["librarynet"], get_model=lambda name, weights: LibraryNet())
    return types.SimpleNamespace(models=models)


def test_create_on_meta_gives_the_recorded_init_to_the_graph(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", _fake_torchvision())
    model = create("torchvision:librarynet", device="meta")
    assert all(p.is_meta for p in model.parameters())
    recorded = model.reference_init()
    assert recorded == _recorded_on_meta()
    graph = build_graph(model, torch.zeros(1, 3, 8, 8))
    for name, (mean, std) in recorded.items():
        assert (graph.params[name].init_mean, graph.params[name].init_std) == (mean, std), name
    assert not hasattr(create("torchvision:librarynet"), "reference_init")  # real values are measured instead
