"""The on-disk format: save/load round trips (directory and lone safetensors file) and every way a checkpoint can be
unusable, each refused with a `CheckpointError`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ghn.errors import CheckpointError
from ghn.graph import build_graph
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig, load_ghn, save_ghn
from ghn.nn.checkpoint import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, read_header


def _config(kind: str = "low_rank", hidden_dim: int = 8) -> GHNConfig:
    return GHNConfig(
        encoder=EncoderConfig(hidden_dim=hidden_dim, num_heads=2, num_layers=1),
        decoder=DecoderConfig(kind=kind, rank=4, num_index_features=16, block_channels=4),
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return GHN(_config()).save_pretrained(tmp_path / "ghn")


@pytest.fixture(scope="module")
def graph():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    return build_graph(model, torch.zeros(1, 3, 6, 6))


def _assert_same_predictions(a: GHN, b: GHN, graph) -> None:
    with torch.no_grad():
        first, second = a.eval()([graph])[0], b.eval()([graph])[0]
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["low_rank", "block"])
def test_directory_round_trip(tmp_path: Path, graph, kind: str) -> None:
    ghn = GHN(_config(kind))
    path = ghn.save_pretrained(tmp_path / "ghn", name="tiny", trained_on=["digits"])
    assert path == tmp_path / "ghn"
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary files left
    loaded = GHN.load(path)
    assert loaded.config == ghn.config
    assert loaded.metadata == {"name": "tiny", "trained_on": ["digits"]}
    assert not loaded.training
    for (name, a), (_, b) in zip(ghn.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    _assert_same_predictions(ghn, loaded, graph)


def test_lone_safetensors_file_round_trip(saved: Path, graph) -> None:
    original = load_ghn(saved)
    alone = load_ghn(saved / WEIGHTS_NAME)
    assert alone.config == original.config
    _assert_same_predictions(original, alone, graph)


def test_header_is_readable_without_loading(saved: Path) -> None:
    for path in (saved, saved / WEIGHTS_NAME):
        header = read_header(path)
        assert header["format_version"] == FORMAT_VERSION
        assert GHNConfig.from_dict(header["config"]) == _config()


def test_resave_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ghn"
    save_ghn(GHN(_config(hidden_dim=8)), path)
    save_ghn(GHN(_config(hidden_dim=16)), path)
    assert load_ghn(path).config.hidden_dim == 16
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def _rewrite_weights(path: Path, change) -> None:
    """Apply `change` to the weights of saved directory `path`, keeping its header."""
    file = path / WEIGHTS_NAME
    weights = load_file(str(file))
    change(weights)
    save_file(weights, str(file), metadata={"ghn": json.dumps(read_header(path))})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("target", ["directory", "file"])
def test_non_finite_weights_are_refused(saved: Path, value: float, target: str) -> None:
    def poison(weights: dict) -> None:
        weights["decoder.to_out.weight"][0, 0] = value

    _rewrite_weights(saved, poison)
    path = saved if target == "directory" else saved / WEIGHTS_NAME
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in 'decoder.to_out.weight'"):
        load_ghn(path)


@pytest.mark.parametrize("target", ["directory", "file"])
def test_truncated_weights_are_refused(saved: Path, target: str) -> None:
    file = saved / WEIGHTS_NAME
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_ghn(saved if target == "directory" else file)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"not a safetensors file at all" * 10, bytes(range(256)) * 4])
def test_corrupted_weights_are_refused(saved: Path, content: bytes) -> None:
    (saved / WEIGHTS_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_ghn(saved)
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_ghn(saved / WEIGHTS_NAME)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe\x00garbage", "is not valid JSON"),
        (b"[1, 2]", "holds a JSON 'list'"),
        (b'"text"', "holds a JSON 'str'"),
    ],
)
def test_corrupted_config_is_refused(saved: Path, content: bytes, match: str) -> None:
    """Regression: a config.json holding valid JSON that is not an object raised AttributeError."""
    (saved / CONFIG_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_ghn(saved)


@pytest.mark.parametrize(("text", "match"), [("{not json", "is not valid JSON"), ("[1]", "holds a JSON 'list'")])
def test_corrupted_header_of_a_lone_file_is_refused(tmp_path: Path, text: str, match: str) -> None:
    """Regression: a bad JSON header inside model.safetensors raised JSONDecodeError/AttributeError."""
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in GHN(_config()).state_dict().items()}, str(file), metadata={"ghn": text})
    with pytest.raises(CheckpointError, match=match):
        load_ghn(file)


def test_file_without_ghn_header_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(file))
    with pytest.raises(CheckpointError, match="has no GHN header"):
        load_ghn(file)


@pytest.mark.parametrize("version", [0, 1, 3, 999, "2", None])
def test_wrong_format_version_is_refused(saved: Path, version) -> None:
    header = json.loads((saved / CONFIG_NAME).read_text())
    header["format_version"] = version
    (saved / CONFIG_NAME).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=rf"has format_version {version!r}; this ghn reads {FORMAT_VERSION}"):
        load_ghn(saved)


def test_wrong_format_version_in_a_lone_file_is_refused(saved: Path) -> None:
    header = read_header(saved)
    header["format_version"] = FORMAT_VERSION + 1
    file = saved / WEIGHTS_NAME
    save_file(load_file(str(file)), str(file), metadata={"ghn": json.dumps(header)})
    with pytest.raises(CheckpointError, match="format_version"):
        load_ghn(file)


def test_weights_of_another_size_are_refused(tmp_path: Path) -> None:
    """Regression: shape mismatches escaped as torch's RuntimeError from load_state_dict."""
    small, large = tmp_path / "small", tmp_path / "large"
    save_ghn(GHN(_config(hidden_dim=8)), small)
    save_ghn(GHN(_config(hidden_dim=16)), large)
    (large / CONFIG_NAME).write_bytes((small / CONFIG_NAME).read_bytes())  # config says 8, weights are 16 wide
    match = r"do not match its config: 'embed.op.weight' has shape \(512, 16\) but the config makes \(512, 8\) \(and"
    with pytest.raises(CheckpointError, match=match):
        load_ghn(large)


def test_missing_weights_are_refused(saved: Path) -> None:
    _rewrite_weights(saved, lambda weights: weights.pop("decoder.to_in.bias"))
    with pytest.raises(CheckpointError, match=r"do not match its config: missing \['decoder.to_in.bias'\]"):
        load_ghn(saved)


def test_unexpected_weights_are_refused(saved: Path) -> None:
    _rewrite_weights(saved, lambda weights: weights.update({"decoder.extra": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected \['decoder.extra'\]"):
        load_ghn(saved)


def test_weights_of_another_decoder_are_refused(tmp_path: Path) -> None:
    low_rank, block = tmp_path / "low_rank", tmp_path / "block"
    save_ghn(GHN(_config("low_rank")), low_rank)
    save_ghn(GHN(_config("block")), block)
    (block / CONFIG_NAME).write_bytes((low_rank / CONFIG_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="do not match its config"):
        load_ghn(block)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda header: header["config"].update(hidden=8), r"not a valid GHN config.*'hidden'"),
        (lambda header: header["config"]["encoder"].update(num_heads=3), "not a valid GHN config.*num_heads"),
        (lambda header: header.pop("config"), "not a valid GHN config"),
    ],
)
def test_invalid_config_is_refused(saved: Path, change, match: str) -> None:
    header = json.loads((saved / CONFIG_NAME).read_text())
    change(header)
    (saved / CONFIG_NAME).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=match):
        load_ghn(saved)


def test_missing_paths_are_refused(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(CheckpointError, match="No GHN checkpoint at"):
        load_ghn(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="No GHN checkpoint at"):
        GHN.load(tmp_path / "nowhere" / "model.safetensors")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="Cannot read weights"):
        load_ghn(saved)
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"No '{CONFIG_NAME}'"):
        load_ghn(saved)


def test_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "model.pt"
    file.write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="expected a directory or a '.safetensors' file"):
        load_ghn(file)


def test_checkpoint_error_is_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        load_ghn(tmp_path / "nowhere")
