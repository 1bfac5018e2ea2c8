"""`ghn.hub`: the manifest registry, `from_pretrained` from names, paths and URLs (a local HTTP server on 127.0.0.1),
sha256 checks of shipped, downloaded and cached files, `$GHN_HOME`, offline errors, archives, and the default GHN
that `predict(model)` picks; plus `ghn predict` on the command line."""

from __future__ import annotations

import functools
import http.server
import io
import json
import logging
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ghn
import ghn.download
from ghn.cli import main
from ghn.errors import CheckpointError, ConfigError, IntegrityError, OfflineError, UnknownNameError
from ghn.hub import (
    PRETRAINED,
    default_ghn_for,
    default_ghn_name,
    from_pretrained,
    load_manifest,
    manifest_entry,
    manifest_path,
    write_model_card,
)
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig

NAME = "logah-test.digits"
REPO_MANIFEST = Path(ghn.__file__).resolve().parents[1] / "pretrained" / "manifest.json"


# -- fixtures ----------------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """Conv, ReLU, pooling and a linear head.

    Shapes:
        input: (B, 1, 8, 8)
        output: (B, num_classes)
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))

    def example_inputs(self) -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8)


def _small_ghn() -> GHN:
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=16, num_heads=2, num_layers=1),
        decoder=DecoderConfig(rank=4, num_index_features=16),
    )
    return GHN(config).eval()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test has its own cache and an empty manifest, and is online (only 127.0.0.1 is ever reached)."""
    monkeypatch.setenv("GHN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GHN_OFFLINE", raising=False)
    empty = tmp_path / "empty" / "manifest.json"
    empty.parent.mkdir()
    empty.write_text(json.dumps({"format_version": 1, "checkpoints": []}))
    monkeypatch.setenv("GHN_PRETRAINED_MANIFEST", str(empty))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[GHN, Path]:
    """A small GHN saved as the trainer saves one (task metadata included) in `repo/pretrained/<NAME>`."""
    hypernet = _small_ghn()
    directory = tmp_path / "repo" / "pretrained" / NAME
    hypernet.save_pretrained(
        directory,
        task="digits",
        task_kind="image",
        task_values={"in_channels": 1, "image_size": 8, "num_classes": 10},
    )
    return hypernet, directory


def _write_manifest(path: Path, entries: list[dict], monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(json.dumps({"format_version": 1, "checkpoints": entries}, indent=2))
    monkeypatch.setenv("GHN_PRETRAINED_MANIFEST", str(path))
    return path


@pytest.fixture
def shipped(saved, monkeypatch: pytest.MonkeyPatch) -> tuple[GHN, Path]:
    """`saved` listed in a manifest beside it, so its files count as shipped."""
    hypernet, directory = saved
    entry = manifest_entry(directory, name=NAME, license="MIT")
    _write_manifest(directory.parent / "manifest.json", [entry], monkeypatch)
    return hypernet, directory


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `tmp_path/www`, stopped when the test ends; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _same_predictions(a: GHN, b: GHN) -> None:
    model = TinyCNN()
    first = ghn.predict_params(model, a)
    for name, tensor in ghn.predict_params(model, b).items():
        torch.testing.assert_close(tensor, first[name])


# -- the manifest ------------------------------------------------------------------------------------------------------
def test_shipped_manifest_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GHN_PRETRAINED_MANIFEST")
    path = manifest_path()
    assert path == REPO_MANIFEST
    assert json.loads(path.read_text())["format_version"] == 1
    specs = load_manifest(path)
    assert sorted(PRETRAINED.names()) == sorted(s.name for s in specs)


@pytest.mark.parametrize("name", [spec.name for spec in load_manifest(REPO_MANIFEST)])
def test_every_shipped_entry_loads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GHN_PRETRAINED_MANIFEST")
    spec = PRETRAINED.get(name)
    if not spec.is_shipped:
        pytest.skip(f"{name!r} is not shipped in the repository (download only)")
    hypernet = from_pretrained(name)
    assert hypernet.metadata["sha256"] == spec.sha256["model.safetensors"]
    params = ghn.predict_params(TinyCNN(), hypernet)
    assert all(torch.isfinite(t).all() for t in params.values())


def test_malformed_manifests_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_manifest(path)
    _write_manifest(path, [{"name": NAME, "files": ["model.safetensors"], "sha256": {}}], monkeypatch)
    with pytest.raises(ConfigError, match="no valid sha256 for 'model.safetensors'"):
        PRETRAINED.names()
    _write_manifest(path, [{"name": NAME, "sha256": {}, "colour": "red"}], monkeypatch)
    with pytest.raises(ConfigError, match="Unknown field.*'colour'"):
        load_manifest(path)


def test_registry_follows_the_manifest_location(shipped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PRETRAINED.names() == [NAME] and NAME in PRETRAINED
    spec = PRETRAINED.get(NAME)
    assert spec.task == "digits" and spec.num_classes == 10 and spec.input_shape == (1, 8, 8) and spec.is_shipped
    monkeypatch.setenv("GHN_PRETRAINED_MANIFEST", str(tmp_path / "empty" / "manifest.json"))
    assert NAME not in PRETRAINED


# -- loading -----------------------------------------------------------------------------------------------------------
def test_shipped_entry_loads_verified(shipped, caplog) -> None:
    hypernet, directory = shipped
    with caplog.at_level(logging.INFO, logger="ghn.hub"):
        loaded = from_pretrained(NAME)
    assert "shipped files" in caplog.text
    assert loaded.metadata["name"] == NAME and loaded.metadata["task"] == "digits"
    assert loaded.metadata["sha256"] == PRETRAINED.get(NAME).sha256["model.safetensors"]
    _same_predictions(loaded, hypernet)


def test_corrupted_shipped_file_is_refused(shipped) -> None:
    _, directory = shipped
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        from_pretrained(NAME)
    assert weights.exists()  # repository files are never deleted


def test_wrong_sha256_in_the_manifest_is_refused(saved, monkeypatch: pytest.MonkeyPatch) -> None:
    _, directory = saved
    entry = manifest_entry(directory, name=NAME)
    entry["sha256"]["model.safetensors"] = "0" * 64
    _write_manifest(directory.parent / "manifest.json", [entry], monkeypatch)
    with pytest.raises(IntegrityError, match="0{64} was expected"):
        from_pretrained(NAME)


def test_local_directory_safetensors_and_pt_files(saved, tmp_path: Path) -> None:
    hypernet, directory = saved
    for source in (directory, str(directory / "model.safetensors")):
        loaded = from_pretrained(source)
        assert loaded.metadata["name"] == str(source) and len(loaded.metadata["sha256"]) == 64
        _same_predictions(loaded, hypernet)
    pt = tmp_path / "ghn.pt"
    torch.save({"config": hypernet.config.to_dict(), "state_dict": hypernet.state_dict(), "metadata": {"a": 1}}, pt)
    loaded = from_pretrained(pt)
    assert loaded.metadata["a"] == 1
    _same_predictions(loaded, hypernet)
    torch.save({"weights": 1}, pt)
    with pytest.raises(CheckpointError, match="'config' and 'state_dict'"):
        from_pretrained(pt)


def test_unknown_name_suggests_close_ones(shipped) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'logah-test.digits'"):
        from_pretrained("logah-test.digit")


# -- downloads ---------------------------------------------------------------------------------------------------------
def _serve_entry(saved, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes) -> Path:
    """Move the checkpoint's files to the web root (so they are not shipped) and list them under its URL."""
    _, directory = saved
    entry = manifest_entry(directory, name=NAME, urls=(f"{server}/{NAME}",)) | changes
    directory.rename(tmp_path / "www" / NAME)
    _write_manifest(tmp_path / "repo" / "pretrained" / "manifest.json", [entry], monkeypatch)
    return tmp_path / "home" / "pretrained" / NAME / entry["sha256"]["model.safetensors"][:16]


def test_download_to_ghn_home_then_cache_hit(saved, server, tmp_path: Path, monkeypatch, caplog) -> None:
    cache = _serve_entry(saved, server, tmp_path, monkeypatch)
    loaded = from_pretrained(NAME)
    assert (cache / "model.safetensors").is_file() and (cache / "config.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]
    _same_predictions(loaded, saved[0])
    (tmp_path / "www" / NAME / "model.safetensors").unlink()  # a cache hit needs no server
    with caplog.at_level(logging.INFO, logger="ghn.download"):
        from_pretrained(NAME)
    assert "Cache hit" in caplog.text
    data = bytearray((cache / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (cache / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="deleted"):
        from_pretrained(NAME)
    assert not (cache / "model.safetensors").exists()  # the bad file is not kept


def test_download_with_a_wrong_digest_is_not_kept(saved, server, tmp_path: Path, monkeypatch) -> None:
    _, directory = saved
    sha256 = dict(manifest_entry(directory, name=NAME)["sha256"], **{"model.safetensors": "1" * 64})
    cache = _serve_entry(saved, server, tmp_path, monkeypatch, sha256=sha256)
    with pytest.raises(IntegrityError, match="not kept"):
        from_pretrained(NAME)
    assert not (cache / "model.safetensors").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_offline_names_the_path_to_put_the_file_at(saved, server, tmp_path: Path, monkeypatch) -> None:
    cache = _serve_entry(saved, server, tmp_path, monkeypatch)
    monkeypatch.setenv("GHN_OFFLINE", "1")
    with pytest.raises(OfflineError, match="GHN_OFFLINE=1") as info:
        from_pretrained(NAME)
    assert str(cache / "config.json") in str(info.value)


def test_network_error_is_an_offline_error_with_the_path(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/ghn/model.safetensors"  # the discard port: nothing listens
    with pytest.raises(OfflineError, match="put it at") as info:
        from_pretrained(url)
    assert str(tmp_path / "home" / "url") in str(info.value)


def test_url_of_a_safetensors_file(saved, server, tmp_path: Path) -> None:
    hypernet, directory = saved
    (tmp_path / "www" / "ghn.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    digest = manifest_entry(directory, name=NAME)["sha256"]["model.safetensors"]
    loaded = from_pretrained(f"{server}/ghn.safetensors", sha256=digest)
    assert loaded.metadata["sha256"] == digest
    assert list((tmp_path / "home" / "url").glob("*/ghn.safetensors"))  # under $GHN_HOME
    _same_predictions(loaded, hypernet)
    with pytest.raises(IntegrityError):
        from_pretrained(f"{server}/ghn.safetensors?again", sha256="2" * 64)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_url_of_an_archive(saved, server, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hypernet, directory = saved
    extractions = []
    extract = ghn.download.extract
    monkeypatch.setattr(ghn.download, "extract", lambda *args: extractions.append(args) or extract(*args))
    archive = tmp_path / "www" / f"ghn{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for file in directory.iterdir():
                zf.write(file, f"ghn/{file.name}")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(directory, arcname="ghn")
    loaded = from_pretrained(f"{server}/ghn{suffix}")
    _same_predictions(loaded, hypernet)
    (tmp_path / "www" / f"ghn{suffix}").unlink()  # reusing the cache needs no server
    again = from_pretrained(f"{server}/ghn{suffix}")
    assert len(extractions) == 1  # extracted once, then reused
    _same_predictions(again, hypernet)


def test_archive_members_outside_it_are_refused(server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.txt", "x")
    (tmp_path / "www" / "evil.zip").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="outside"):
        from_pretrained(f"{server}/evil.zip")
    assert not (tmp_path / "home" / "url" / "evil.txt").exists()


# -- predict(model) with no GHN ----------------------------------------------------------------------------------------
def test_predict_without_a_ghn_uses_the_shipped_one(shipped, caplog) -> None:
    hypernet, _ = shipped
    model = TinyCNN(num_classes=10)
    with caplog.at_level(logging.INFO, logger="ghn"):
        ghn.predict(model)
    assert f"using the shipped pretrained GHN {NAME!r}" in caplog.text and "untrained" not in caplog.text
    expected = ghn.predict(TinyCNN(num_classes=10), hypernet)
    for (name, got), want in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_class_count_mismatch_warns_that_the_head_is_untrained(shipped, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ghn.hub"):
        model = ghn.predict(TinyCNN(num_classes=3))
    assert "10 classes" in caplog.text and "has 3" in caplog.text and "untrained" in caplog.text
    assert model.ghn_report.is_complete


def test_no_fitting_ghn_is_a_clear_error(shipped) -> None:
    language_model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
    with pytest.raises(ConfigError, match="ghn.from_pretrained"):
        ghn.predict(language_model)
    with pytest.raises(ConfigError, match="text tasks"):
        default_ghn_for(language_model)
    assert default_ghn_for(TinyCNN()).metadata["name"] == NAME


def test_write_model_card(tmp_path: Path) -> None:
    path = write_model_card(tmp_path, "# logah-tiny.digits\nTrained on digits.")
    assert path == tmp_path / "README.md" and path.read_text().endswith("digits.\n")


def test_ghn_predict_command(shipped, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for the 'module:test_hub:TinyCNN' spec
    spec = "module:test_hub:TinyCNN"
    assert main(["predict", spec]) == 0
    assert "TinyCNN: predicted 170/170 parameters" in capsys.readouterr().out
    out = tmp_path / "cnn.safetensors"
    assert main(["predict", spec, "--ghn", NAME, "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert f"GHN {NAME!r}" in capsys.readouterr().out
    TinyCNN().load_state_dict(load_file(out), strict=True)
    assert main(["predict", spec, "--ghn", "no-such.ghn"]) == 2
    assert "no-such.ghn" in capsys.readouterr().err


def test_ghn_export_and_eval_default_to_the_shipped_ghn(shipped, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for the 'module:test_hub:TinyCNN' spec
    out = tmp_path / "cnn.safetensors"
    assert main(["export", "module:test_hub:TinyCNN", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"No --ghn given: using the shipped pretrained GHN {NAME!r}" in captured.err
    assert f"GHN {NAME!r}" in captured.out
    TinyCNN().load_state_dict(load_file(out), strict=True)
    argv = ["eval", "--archs", "module:test_hub:TinyCNN", "--steps", "0", "--seeds", "1", "--inits", "ghn,random"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"evaluating the shipped pretrained GHN {NAME!r}" in captured.err and "| ghn |" in captured.out


def test_default_ghn_name_prefers_the_task_and_names_the_kind_it_lacks(shipped) -> None:
    assert default_ghn_name("image") == NAME == default_ghn_name("image", "cifar10")
    with pytest.raises(ConfigError, match="text tasks.*--ghn"):
        default_ghn_name("text", "pydoc")


def test_the_repo_manifest_defaults_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHN_PRETRAINED_MANIFEST", str(REPO_MANIFEST))
    assert default_ghn_name("image") == "logah-tiny.digits"
    assert default_ghn_name("text", "pydoc") == "logah-tiny.pydoc"
