"""Pretrained GHNs: the manifest registry `PRETRAINED`, `from_pretrained(name | path | url)` resolving a source to
a checkpoint (downloads go through the sha256-verified cache of `ghn.download`), and the default GHN that
`ghn.predict(model)` uses when given none.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ghn._checks import TASK_KINDS, TaskKind
from ghn._config import from_dict, ghn_home, manifest_override
from ghn._io import atomic_write_text
from ghn._logging import get_logger
from ghn.download import URL_SCHEMES, cache_path, extract_once, fetch, fetch_hf, file_sha256, verify_sha256
from ghn.errors import CheckpointError, ConfigError, UnknownNameError
from ghn.graph import ComputationGraph, build_graph
from ghn.graph.inputs import task_inputs
from ghn.nn import GHN
from ghn.nn.checkpoint import CONFIG_NAME, TORCH_SUFFIXES, WEIGHTS_NAME, read_header, read_torch_checkpoint
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
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


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
    task_kind: TaskKind = "image"
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
        if self.task_kind not in TASK_KINDS:
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
        "sha256": {f: file_sha256(directory / f) for f in files},
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
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")


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
            verify_sha256(path, sha256, source=text)
    else:
        hint = close_matches(text, PRETRAINED.names())
        known = f"Did you mean {', '.join(map(repr, hint))}?" if hint else f"Known names: {PRETRAINED.names()}."
        raise UnknownNameError(
            f"Pretrained GHN {text!r} is no manifest name, existing path or URL. {known} Pass a name, a directory "
            "saved by GHN.save_pretrained, a .safetensors file or an https:// / file:// / hf:// URL."
        )
    ghn = _load(path, map_location=map_location)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    digest = PRETRAINED.get(text).sha256[WEIGHTS_NAME] if text in PRETRAINED else file_sha256(weights)
    ghn.metadata = {**ghn.metadata, "name": text, "sha256": digest}
    logger.info("Loaded pretrained GHN %r (weights sha256 %s) from %s", text, digest[:12], path)
    return ghn


def _load(path: Path, *, map_location: str | torch.device) -> GHN:
    """A GHN from a checkpoint directory, a `.safetensors` file or a `.pt` file; never unpickles objects."""
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        checkpoint = read_torch_checkpoint(path, map_location=map_location)
        return GHN.from_checkpoint(checkpoint, map_location=map_location)
    return GHN.load(path, map_location=map_location)


def _pretrained_files(spec: PretrainedSpec, *, progress: bool) -> Path:
    """The directory holding the verified files of `spec`: shipped in the repository, or downloaded to the cache."""
    if spec.is_shipped:
        for name in spec.files:
            verify_sha256(spec.root / name, spec.sha256[name], source=spec.name)
        logger.info("Using the shipped files of pretrained GHN %r in %s", spec.name, spec.root)
        return spec.root
    directory = ghn_home() / "pretrained" / spec.name / spec.sha256[WEIGHTS_NAME][:16]  # content-addressed
    for name in spec.files:
        urls = [f"{url.rstrip('/')}/{name}" for url in spec.urls]
        fetch(urls, directory / name, sha256=spec.sha256[name], size=spec.size.get(name), progress=progress)
    return directory


def _fetch_url(url: str, *, sha256: str | None, progress: bool) -> Path:
    """The local path of a URL's GHN: a cached `.safetensors` (or `.pt`) file or the GHN directory in an archive."""
    if url.startswith("hf://"):  # a Hugging Face repository (a directory with its own cache), not a file
        return fetch_hf(url)
    path = cache_path(url)
    if not path.name.endswith((".safetensors", *TORCH_SUFFIXES, *_ARCHIVE_SUFFIXES)):
        raise ConfigError(
            f"Cannot tell what {url!r} holds. Use a URL of a '.safetensors' (or '.pt') file or of a '.tar.gz'/'.zip' "
            "archive of a GHN directory."
        )
    fetch([url], path, sha256=sha256, progress=progress)
    if path.name.endswith(_ARCHIVE_SUFFIXES):
        return _ghn_directory(extract_once(path, path.parent / "extracted"), archive=path)
    return path


def _ghn_directory(root: Path, *, archive: Path) -> Path:
    """The GHN directory among `root` and its subfolders (an archive's contents): the first with a checkpoint file."""
    for candidate in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        if (candidate / CONFIG_NAME).is_file() or (candidate / WEIGHTS_NAME).is_file():
            return candidate
    raise CheckpointError(
        f"Archive {str(archive)!r} holds no GHN directory ({CONFIG_NAME} and {WEIGHTS_NAME}) at its top level or one "
        "folder down. Archive a directory written by GHN.save_pretrained."
    )


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
