"""Pretrained GHNs: the manifest registry `PRETRAINED`, `from_pretrained(name | path | url)` with a sha256-verified
download cache in `$GHN_HOME`, and the default GHN that `ghn.predict(model)` uses when given none.

Downloads follow huggingface_hub `file_download.py::_download_to_tmp_and_move`: a unique temp file beside the
target, a sha256 check, then an atomic rename, under a file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ghn._config import from_dict, ghn_home, is_offline, manifest_override
from ghn._logging import get_logger
from ghn.errors import (
    CheckpointError,
    ConfigError,
    IntegrityError,
    MissingDependencyError,
    OfflineError,
    UnknownNameError,
)
from ghn.graph import ComputationGraph, build_graph
from ghn.graph.inputs import task_inputs
from ghn.nn import GHN, GHNConfig, load_ghn
from ghn.nn.checkpoint import CONFIG_NAME, WEIGHTS_NAME, atomic_write, read_header
from ghn.predict import (
    DEFAULT_GHN_INPUTS,
    DEFAULT_GHN_RESOLVERS,
    model_task_kind,
    model_task_size,
    untrained_head_note,
)
from ghn.registry import Registry, close_matches

__all__ = [
    "MANIFEST_NAME",
    "PRETRAINED",
    "URL_SCHEMES",
    "PretrainedSpec",
    "default_ghn_for",
    "default_ghn_name",
    "from_pretrained",
    "load_manifest",
    "manifest_entry",
    "manifest_path",
    "write_model_card",
]

logger = get_logger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_SHIPPED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_TIMEOUT_S = 60


# -- the manifest -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PretrainedSpec:
    """A pretrained GHN listed in the manifest, like timm's `PretrainedCfg`.

    Its files are a `GHN.save_pretrained` directory. They are loaded from `pretrained/<name>/` beside the manifest
    when shipped there, else downloaded from the first of `urls` that answers.
    """

    name: str
    """Registry key with a dotted tag for the training data: 'logah-tiny.digits'."""
    files: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)
    """File names of the checkpoint directory; the weights file 'model.safetensors' among them."""
    sha256: Mapping[str, str] = field(default_factory=dict)
    """Hex sha256 of every file, by name."""
    size: Mapping[str, int] = field(default_factory=dict)
    """Bytes of every file, by name (shown by progress bars; optional)."""
    urls: tuple[str, ...] = ()
    """Base URLs (mirrors, tried in order) that hold the files as '<url>/<file>': https, http or file."""
    task: str = ""
    """The task the GHN was trained on ('digits', 'pydoc', 'cifar10')."""
    task_kind: Literal["image", "text"] = "image"
    """'image' for classifiers of (B, C, H, W) images, 'text' for language models over (B, T) token ids."""
    input_shape: tuple[int, ...] | None = None
    """(C, H, W) of the training images (image tasks)."""
    num_classes: int | None = None
    """Classes of the training task (image tasks); a model with another count gets an untrained head."""
    vocab_size: int | None = None
    """Vocabulary of the training task (text tasks); a model with another one gets untrained embeddings."""
    license: str = ""
    paper: str = ""
    description: str = ""
    root: Path | None = field(default=None, compare=False)
    """Where shipped files would lie (set by the manifest loader: `<manifest dir>/<name>`)."""

    def __post_init__(self) -> None:
        for name in ("files", "urls", "input_shape"):  # JSON gives lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if WEIGHTS_NAME not in self.files:
            raise ConfigError(f"Pretrained GHN {self.name!r} lists files {list(self.files)}; add {WEIGHTS_NAME!r}.")
        bad = [f for f in self.files if not _SHA256.match(str(self.sha256.get(f, "")))]
        if bad:
            raise ConfigError(
                f"Pretrained GHN {self.name!r} has no valid sha256 for {', '.join(map(repr, bad))}. Give 64 lowercase "
                "hex digits per file (ghn.hub.manifest_entry computes them)."
            )
        if self.task_kind not in ("image", "text"):
            raise ConfigError(f"Pretrained GHN {self.name!r} has task_kind {self.task_kind!r}; use 'image' or 'text'.")
        schemes = {urllib.parse.urlsplit(url).scheme for url in self.urls}
        if not schemes <= set(URL_SCHEMES.names()):
            raise ConfigError(
                f"Pretrained GHN {self.name!r} has URLs with schemes {sorted(schemes)}; use {URL_SCHEMES.names()}."
            )

    @property
    def is_shipped(self) -> bool:
        """Every file lies in `root` (shipped with the repository or placed there by hand)."""
        return self.root is not None and all((self.root / f).is_file() for f in self.files)


class _ManifestRegistry(Registry[PretrainedSpec]):
    """`Registry` that reads the manifest on first use and again whenever its location changes
    (`$GHN_PRETRAINED_MANIFEST`), so importing ghn reads no file. Entries registered by hand are kept."""

    def __init__(self, kind: str) -> None:
        self._loaded_from: Path | None = None
        self._from_manifest: set[str] = set()
        super().__init__(kind)

    @property
    def _entries(self) -> dict[str, PretrainedSpec]:
        path = manifest_path()
        if path != self._loaded_from:
            for name in self._from_manifest:
                self._data.pop(name, None)
            specs = load_manifest(path)
            self._from_manifest = {spec.name for spec in specs}
            self._loaded_from = path  # set before registering: `register` reads `_entries` too
            for spec in specs:
                self.register(spec.name, spec, overwrite=True)
        return self._data

    @_entries.setter
    def _entries(self, value: dict[str, PretrainedSpec]) -> None:
        self._data = value


#: Pretrained GHNs by name, from the manifest (`manifest_path()`).
PRETRAINED = _ManifestRegistry("pretrained GHN")


def manifest_path() -> Path:
    """The manifest in use: `$GHN_PRETRAINED_MANIFEST`, else the one shipped in the repository's `pretrained/`."""
    return manifest_override() or _SHIPPED_DIR / MANIFEST_NAME


def load_manifest(path: str | os.PathLike) -> list[PretrainedSpec]:
    """The entries of a manifest file; a missing file has none.

    The format, one entry per checkpoint (`manifest_entry(dir, name=...)` writes an entry; files shipped in the
    repository lie in `pretrained/<name>/` beside the manifest):

        {"format_version": 1, "checkpoints": [{"name": "logah-tiny.digits",
          "files": ["config.json", "model.safetensors"], "sha256": {"config.json": "...", ...},
          "size": {...}, "urls": ["https://.../logah-tiny.digits"], "task": "digits", "task_kind": "image",
          "input_shape": [1, 8, 8], "num_classes": 10, "license": "MIT", "paper": "...", "description": "..."}]}

    Raises:
        ConfigError: the file is not a valid manifest; the message names the entry and field.
    """
    path = Path(path)
    if not path.is_file():
        logger.debug("No pretrained manifest at %s", path)
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"Manifest {str(path)!r} is not valid JSON ({err}). Fix or regenerate it.") from err
    if not isinstance(data, dict) or data.get("format_version") != MANIFEST_VERSION:
        raise ConfigError(
            f"Manifest {str(path)!r} must be an object with format_version {MANIFEST_VERSION} and a 'checkpoints' "
            "list. Fix or regenerate it."
        )
    specs = []
    for entry in data.get("checkpoints", []):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"Manifest {str(path)!r} has an entry without a 'name': {entry!r}.")
        specs.append(from_dict(PretrainedSpec, {**entry, "root": path.parent / entry["name"]}))
    return specs


def manifest_entry(
    directory: str | os.PathLike, *, name: str, urls: tuple[str, ...] = (), **fields: Any
) -> dict[str, Any]:
    """A manifest entry for the GHN saved in `directory`: sha256 and size of its files, and its task from the
    checkpoint's metadata (as the trainer saves it); `fields` add or replace entry fields (license, paper, ...)."""
    directory = Path(directory)
    files = tuple(f for f in (CONFIG_NAME, WEIGHTS_NAME, "README.md") if (directory / f).is_file())
    meta = read_header(directory).get("metadata", {})
    values = meta.get("task_values", {})
    kind = meta.get("task_kind", "image")
    entry: dict[str, Any] = {
        "name": name,
        "files": list(files),
        "sha256": {f: _sha256(directory / f) for f in files},
        "size": {f: (directory / f).stat().st_size for f in files},
        "urls": list(urls),
        "task": meta.get("task", ""),
        "task_kind": kind,
    }
    if kind == "image" and values:
        entry.update(input_shape=[values["in_channels"], values["image_size"], values["image_size"]])
        entry.update(num_classes=values["num_classes"])
    elif values:
        entry.update(vocab_size=values["vocab_size"])
    entry.update(fields)
    PretrainedSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})  # validate
    return entry


def write_model_card(directory: str | os.PathLike, text: str) -> Path:
    """Write `text` as the README.md model card of a saved GHN directory (atomically); returns its path."""
    path = Path(directory) / "README.md"
    atomic_write(path, lambda tmp: tmp.write_text(text if text.endswith("\n") else text + "\n"))
    return path


# -- from_pretrained --------------------------------------------------------------------------------------------------
def from_pretrained(
    source: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    map_location: str | torch.device = "cpu",
) -> GHN:
    """Load a pretrained GHN by manifest name, local path or URL.

    Examples: `from_pretrained("logah-tiny.digits")`, `from_pretrained("runs/ghn")`,
    `from_pretrained("https://example.org/ghn.tar.gz", sha256="...")`, `from_pretrained("hf://org/repo/subdir")`.

    Args:
        source: a name in `PRETRAINED`; a directory written by `GHN.save_pretrained`, its `.safetensors` file or a
            `.pt` file of {config, state_dict}; an https/http/file URL of a `.safetensors` file or of a
            `.tar.gz`/`.zip` archive of a GHN directory; or 'hf://org/repo[/subdir]' (needs `huggingface_hub`).
        sha256: the expected hex digest of a URL's file (or a local file); checked when given.
        progress: show a download progress bar (only when stderr is a terminal).
        map_location: where the GHN's weights are loaded.

    Returns:
        The GHN in eval mode; `ghn.metadata` also holds 'name' (the source) and 'sha256' (of its weights file).

    Raises:
        UnknownNameError: `source` is no manifest name, existing path or URL.
        IntegrityError: a file does not match its sha256 (a bad download or cache file is deleted).
        OfflineError: a download is needed but `GHN_OFFLINE=1` or the network fails; says where to put the file.
        CheckpointError: the files are not a valid GHN checkpoint.
        MissingDependencyError: an 'hf://' source without `huggingface_hub`.
    """
    text = os.fspath(source)
    if "://" in text:
        path = _fetch_url(text, sha256=sha256, progress=progress)
    elif text in PRETRAINED:
        path = _pretrained_files(PRETRAINED.get(text), progress=progress)
    elif Path(text).expanduser().exists():
        path = Path(text).expanduser()
        if sha256 is not None and path.is_file():
            _verify(path, sha256, source=text, is_cache=False)
    else:
        hint = close_matches(text, PRETRAINED.names())
        known = f"Did you mean {', '.join(map(repr, hint))}?" if hint else f"Known names: {PRETRAINED.names()}."
        raise UnknownNameError(
            f"Pretrained GHN {text!r} is no manifest name, existing path or URL. {known} Pass a name, a directory "
            "saved by GHN.save_pretrained, a .safetensors file or an https:// / file:// / hf:// URL."
        )
    ghn = _load(path, map_location=map_location)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    digest = PRETRAINED.get(text).sha256[WEIGHTS_NAME] if text in PRETRAINED else _sha256(weights)
    ghn.metadata = {**ghn.metadata, "name": text, "sha256": digest}
    logger.info("Loaded pretrained GHN %r (weights sha256 %s) from %s", text, digest[:12], path)
    return ghn


def _load(path: Path, *, map_location: str | torch.device) -> GHN:
    """A GHN from a checkpoint directory, a `.safetensors` file or a `.pt` file; never unpickles objects."""
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return _load_torch(path, map_location=map_location)
    return load_ghn(path, map_location=map_location)


def _load_torch(path: Path, *, map_location: str | torch.device) -> GHN:
    """A `.pt` file of {'config': GHNConfig dict, 'state_dict': {name: tensor}, 'metadata': {...}}, read with
    `torch.load(weights_only=True)` so no arbitrary object is unpickled."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle and zip errors of many types; weights_only refuses arbitrary objects
        raise CheckpointError(f"Cannot read {str(path)!r} as a weights-only torch file ({err}).") from err
    if not isinstance(data, dict) or not {"config", "state_dict"} <= data.keys():
        raise CheckpointError(
            f"{str(path)!r} is not a GHN torch file: expected a dict with 'config' and 'state_dict'. "
            "Save GHNs with GHN.save_pretrained(dir)."
        )
    try:
        ghn = GHN(GHNConfig.from_dict(data["config"]))
        ghn.load_state_dict(data["state_dict"], strict=True)
    except (ConfigError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{str(path)!r} does not hold a valid GHN ({err}).") from err
    ghn.metadata = dict(data.get("metadata") or {})
    return ghn.to(map_location).eval()


def _pretrained_files(spec: PretrainedSpec, *, progress: bool) -> Path:
    """The directory holding the verified files of `spec`: shipped in the repository, or downloaded to the cache."""
    if spec.is_shipped:
        for name in spec.files:
            _verify(spec.root / name, spec.sha256[name], source=spec.name, is_cache=False)
        logger.info("Using the shipped files of pretrained GHN %r in %s", spec.name, spec.root)
        return spec.root
    directory = ghn_home() / "pretrained" / spec.name / spec.sha256[WEIGHTS_NAME][:16]  # content-addressed
    for name in spec.files:
        urls = [f"{url.rstrip('/')}/{name}" for url in spec.urls]
        _fetch_any(urls, directory / name, sha256=spec.sha256[name], size=spec.size.get(name), progress=progress)
    return directory


# -- downloads --------------------------------------------------------------------------------------------------------
#: How each URL scheme is fetched: (url, destination, expected sha256, size, progress) -> None.
URL_SCHEMES = Registry[Callable[[str, Path, "str | None", "int | None", bool], None]]("URL scheme")


def _fetch_url(url: str, *, sha256: str | None, progress: bool) -> Path:
    """The local path of a URL's GHN: a cached `.safetensors` file or the extracted directory of an archive."""
    if url.startswith("hf://"):  # a Hugging Face repository (a directory with its own cache), not a file
        return _fetch_hf(url)
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name.endswith((".safetensors", ".pt", ".pth", ".tar.gz", ".tgz", ".zip")):
        raise ConfigError(
            f"Cannot tell what {url!r} holds. Use a URL of a '.safetensors' (or '.pt') file or of a '.tar.gz'/'.zip' "
            "archive of a GHN directory."
        )
    directory = ghn_home() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16]  # one folder per URL
    path = directory / name
    _fetch_any([url], path, sha256=sha256, size=None, progress=progress)
    if name.endswith((".tar.gz", ".tgz", ".zip")):
        return _extracted(path, directory / "extracted")
    return path


def _fetch_any(urls: list[str], dest: Path, *, sha256: str | None, size: int | None, progress: bool) -> None:
    """Make `dest` a verified copy of the file at one of `urls` (the first that answers), unless it already is."""
    if _is_cached(dest, sha256):
        return
    if not urls:
        raise OfflineError(f"No URL is known for {dest.name!r}. Put the file at {str(dest)!r} by hand.")
    errors: list[OfflineError] = []
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in URL_SCHEMES:
            raise ConfigError(f"URL {url!r} has scheme {scheme!r}; ghn fetches {', '.join(URL_SCHEMES.names())}.")
        try:
            URL_SCHEMES.get(scheme)(url, dest, sha256, size, progress)
            return
        except OfflineError as err:
            errors.append(err)
    raise errors[-1] if len(errors) == 1 else OfflineError(" ".join(str(e) for e in errors))


def _is_cached(path: Path, sha256: str | None) -> bool:
    """Whether `path` is cached; a cached file is re-verified before use, against `sha256` or the digest recorded
    when it was downloaded (`IntegrityError` on a mismatch, and the file is deleted)."""
    if not path.is_file():
        return False
    recorded = path.with_name(path.name + ".sha256")
    expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    if expected is None:  # placed by hand with no digest to check against: record it now
        recorded.write_text(_sha256(path) + "\n")
    else:
        _verify(path, expected, source=str(path), is_cache=True)
    logger.info("Cache hit: %s", path)
    return True


def _download(url: str, dest: Path, sha256: str | None, size: int | None, progress: bool) -> None:
    """Download `url` to `dest`: a unique temp file beside it, sha256 checked, renamed in place, under a lock."""
    is_local = urllib.parse.urlsplit(url).scheme == "file"
    if is_offline() and not is_local:
        raise OfflineError(
            f"GHN_OFFLINE=1, so {url!r} is not downloaded. Download it by hand and put it at {str(dest)!r}, "
            "or unset GHN_OFFLINE."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if _is_cached(dest, sha256):  # another process finished it while we waited
            return
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                digest = _copy_url(url, file, dest=dest, size=size, progress=progress)
            if sha256 is not None and digest != sha256:
                raise IntegrityError(
                    f"Download of {url!r} has sha256 {digest} but {sha256} was expected; it was not kept. "
                    "Retry, or check the URL and the expected digest."
                )
            dest.with_name(dest.name + ".sha256").write_text(digest + "\n")  # before the file: never one without it
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    logger.info("Downloaded %s to %s", url, dest)


def _copy_url(url: str, file, *, dest: Path, size: int | None, progress: bool) -> str:
    """Stream `url` into `file`; returns the sha256. Network failures become `OfflineError` saying where to put it."""
    from tqdm import tqdm

    hasher = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or size
            show = progress and sys.stderr.isatty()
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not show) as bar:
                while chunk := response.read(_CHUNK):
                    file.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(
            f"Cannot download {url!r} ({reason}). Check the connection and the URL, or download it by hand and put it "
            f"at {str(dest)!r}."
        ) from err
    return hasher.hexdigest()


URL_SCHEMES.register("https", _download)
URL_SCHEMES.register("http", _download)
URL_SCHEMES.register("file", _download)


def _fetch_hf(url: str) -> Path:
    """'hf://org/repo[/subdir]' through `huggingface_hub`, cached in `$GHN_HOME/hf`."""
    parts = url.removeprefix("hf://").strip("/").split("/")
    if len(parts) < 2:
        raise ConfigError(f"Hugging Face source {url!r} is malformed. Write 'hf://org/repo' or 'hf://org/repo/subdir'.")
    repo, subdir = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise MissingDependencyError(
            f"Loading {url!r} needs 'huggingface_hub'. Install it with pip install 'ghn[hf]'."
        ) from err
    cache = ghn_home() / "hf"
    try:
        root = snapshot_download(
            repo, allow_patterns=[f"{subdir}/*"] if subdir else None, cache_dir=cache, local_files_only=is_offline()
        )
    except Exception as err:  # huggingface_hub raises many error types (offline, HTTP, missing repo)
        raise OfflineError(
            f"Cannot fetch {url!r} from the Hugging Face Hub ({err}). Check the connection and the repository, or "
            f"download the checkpoint directory by hand and load it by path (the cache is {str(cache)!r})."
        ) from err
    return Path(root) / subdir


def _extracted(archive: Path, target: Path) -> Path:
    """The GHN directory inside `archive`, extracted once into `target` (atomically, refusing paths that leave it)."""
    if not target.is_dir():
        with _locked(archive.with_name(archive.name + ".lock")):
            if not target.is_dir():
                staging = Path(tempfile.mkdtemp(prefix=".extract.", dir=target.parent))
                try:
                    _extract(archive, staging)
                    os.replace(staging, target)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    candidates = [target] + sorted(p for p in target.iterdir() if p.is_dir())
    for candidate in candidates:
        if (candidate / CONFIG_NAME).is_file() or (candidate / WEIGHTS_NAME).is_file():
            return candidate
    raise CheckpointError(
        f"Archive {str(archive)!r} holds no GHN directory ({CONFIG_NAME} and {WEIGHTS_NAME}) at its top level or one "
        "folder down. Archive a directory written by GHN.save_pretrained."
    )


def _extract(archive: Path, into: Path) -> None:
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not (into / member).resolve().is_relative_to(into.resolve()):
                        raise CheckpointError(f"Archive {str(archive)!r} has a path outside it: {member!r}.")
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    tf.extractall(into, filter="data")  # refuses absolute paths, '..', links out and devices
                else:
                    for member in tf.getmembers():
                        inside = (into / member.name).resolve().is_relative_to(into.resolve())
                        if not inside or not (member.isfile() or member.isdir()):
                            raise CheckpointError(f"Archive {str(archive)!r} has an unsafe member {member.name!r}.")
                    tf.extractall(into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"Cannot extract {str(archive)!r} ({err}). Delete it and download it again.") from err


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` so one process downloads a file while others wait."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; temp file + os.replace still never expose a partial file
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _verify(path: Path, expected: str, *, source: str, is_cache: bool) -> None:
    """Raise `IntegrityError` unless `path` has sha256 `expected`; a bad cache file is deleted."""
    digest = _sha256(path)
    if digest == expected:
        return
    if is_cache:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        fix = "It was deleted; run again to download it afresh."
    else:
        fix = "Restore the file (e.g. git checkout pretrained/) or correct the expected digest."
    raise IntegrityError(f"{str(path)!r} (of {source!r}) has sha256 {digest} but {expected} was expected. {fix}")


# -- the default GHN for predict(model) ------------------------------------------------------------------------------
def default_ghn_for(model: torch.nn.Module | ComputationGraph) -> GHN:
    """The shipped pretrained GHN for the model's task, as `ghn.predict(model)` picks it when given no GHN.

    Language models (the first parameterized node owns an embedding, i.e. the inputs are token ids) get a GHN
    trained on text, the others one trained on images. Among those, a GHN whose training task has the model's
    number of classes (vocabulary) is preferred; otherwise the model's head (embeddings) is predicted but untrained
    for its task, which is logged as a warning. Only shipped checkpoints are considered, so this never downloads.

    Raises:
        ConfigError: no shipped pretrained GHN has the model's task kind.
    """
    graph = model if isinstance(model, ComputationGraph) else build_graph(model, task_inputs=shipped_task_inputs())
    spec = _default_spec([graph])
    if spec is None:
        raise ConfigError(
            f"No shipped pretrained GHN was trained on {model_task_kind(graph)} tasks (manifest {str(manifest_path())!r}). "
            "Pass a GHN to predict, e.g. ghn.from_pretrained('<name or path>')."
        )
    _warn_if_untrained_head(graph, spec, spec.task_kind)
    return from_pretrained(spec.name, progress=False)


def default_ghn_name(kind: str, task: str | None = None) -> str:
    """The shipped pretrained GHN that `ghn eval` uses for a task kind ('image', 'text') when given no GHN: the one
    trained on `task` when there is one, else the first by name.

    Raises:
        ConfigError: no shipped pretrained GHN has that task kind.
    """
    candidates = [spec for spec in PRETRAINED.values() if spec.task_kind == kind and spec.is_shipped]
    if not candidates:
        raise ConfigError(
            f"No shipped pretrained GHN was trained on {kind} tasks (manifest {str(manifest_path())!r}). "
            "Pass one with --ghn NAME_OR_PATH."
        )
    spec = min(candidates, key=lambda s: (s.task != task, s.name))
    logger.info("No GHN given: using the shipped pretrained GHN %r (trained on %s task %r).", spec.name, kind,
                spec.task)  # fmt: skip
    return spec.name


def _default_spec(graphs: list[ComputationGraph]) -> PretrainedSpec | None:
    """The shipped GHN for the graphs' task kind, preferring one trained with their class count (vocabulary)."""
    kinds = {model_task_kind(g) for g in graphs}
    if len(kinds) > 1:
        raise ConfigError("predict got image and text models together with no GHN. Predict them separately.")
    kind = kinds.pop()
    candidates = [spec for spec in PRETRAINED.values() if spec.task_kind == kind and spec.is_shipped]
    if not candidates:
        return None
    size = model_task_size(graphs[0], kind)
    spec = min(candidates, key=lambda s: (_spec_size(s, kind) != size, s.name))
    logger.info("No GHN given: using the shipped pretrained GHN %r (trained on %s task %r).", spec.name, kind,
                spec.task)  # fmt: skip
    return spec


def _resolve_default(graphs: list[ComputationGraph]) -> GHN | None:
    spec = _default_spec(graphs)
    return None if spec is None else from_pretrained(spec.name, progress=False)  # predict notes an untrained head


def shipped_task_inputs() -> list[tuple[str, Any]]:
    """[(description, inputs)] of every shipped GHN's training task, by name: what a model that declares no input
    is traced on when `ghn.predict` picks the GHN itself."""
    out = []
    for spec in sorted((s for s in PRETRAINED.values() if s.is_shipped), key=lambda s: s.name):
        if spec.task_kind == "image" and spec.input_shape:
            values = {"in_channels": spec.input_shape[0], "image_size": spec.input_shape[-1]}
        else:
            values = {"vocab_size": spec.vocab_size}
        inputs = task_inputs(spec.task_kind, values, torch.device("meta"))
        if inputs is not None:
            out.append((f"the task of GHN {spec.name!r} ({spec.task})", inputs))
    return out


DEFAULT_GHN_RESOLVERS.append(_resolve_default)
DEFAULT_GHN_INPUTS.append(shipped_task_inputs)


def _spec_size(spec: PretrainedSpec, kind: str) -> int | None:
    return spec.vocab_size if kind == "text" else spec.num_classes


def _warn_if_untrained_head(graph: ComputationGraph, spec: PretrainedSpec, kind: str) -> None:
    note = untrained_head_note(graph, spec.name, spec.task, kind, _spec_size(spec, kind))
    if note:
        logger.warning("%s", note)
