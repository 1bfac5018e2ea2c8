"""The on-disk format of a GHN: a directory with `config.json` ({format_version, config, metadata}) and
`model.safetensors` (weights, with the same JSON in its header so the file also loads alone).

Loading never unpickles arbitrary objects and never guesses the architecture from tensor names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ghn._io import atomic_write, atomic_write_text
from ghn._logging import get_logger
from ghn.errors import CheckpointError, ConfigError
from ghn.nn.config import GHNConfig

if TYPE_CHECKING:
    from ghn.nn.ghn import GHN

__all__ = [
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "TORCH_SUFFIXES",
    "Checkpoint",
    "save_ghn",
    "read_checkpoint",
    "read_torch_checkpoint",
    "read_header",
    "check_weights",
]

logger = get_logger(__name__)

FORMAT_VERSION = 2  # 2: predictions at the model's own init scale (ghn/nn/normalize.py)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _header(ghn: GHN, metadata: dict[str, Any]) -> dict[str, Any]:
    from ghn._version import __version__

    return {
        "format_version": FORMAT_VERSION,
        "ghn_version": __version__,
        "config": ghn.config.to_dict(),
        "metadata": metadata,
    }


def save_ghn(ghn: GHN, path: str | Path, **metadata: Any) -> Path:
    """Write `ghn` into directory `path`; `metadata` (JSON-serializable) is stored beside the config."""
    from safetensors.torch import save_file

    path = Path(path)
    header = _header(ghn, metadata)
    text = json.dumps(header, indent=2, sort_keys=True)
    weights = {name: t.detach().cpu().contiguous() for name, t in ghn.state_dict().items()}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(weights, str(tmp), metadata={"ghn": text}))
    atomic_write_text(path / CONFIG_NAME, text + "\n")
    logger.info("Saved GHN (%s parameters) to %s", f"{ghn.num_parameters():,}", path)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The {format_version, config, metadata} record of a saved GHN directory or safetensors file."""
    path = Path(path)
    if path.is_dir():
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(f"No {CONFIG_NAME!r} in {str(path)!r}. Save GHNs with GHN.save_pretrained(dir).")
        return _parse_header(config_file.read_bytes(), repr(str(config_file)))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                text = (f.metadata() or {}).get("ghn")
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"Cannot read {str(path)!r} as safetensors ({err}).") from err
        if text is None:
            raise CheckpointError(f"{str(path)!r} has no GHN header. Save GHNs with GHN.save_pretrained(dir).")
        return _parse_header(text, f"The GHN header of {str(path)!r}")
    raise CheckpointError(f"Cannot load a GHN from {str(path)!r}: expected a directory or a '.safetensors' file.")


def _parse_header(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{where} is not valid JSON ({err}). Re-save the GHN with GHN.save_pretrained.") from err
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{where} holds a JSON {type(header).__name__!r}, not a {{format_version, config, metadata}} object. "
            "Re-save the GHN with GHN.save_pretrained."
        )
    return header


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The config, weights and metadata of a GHN saved by `save_ghn` (a directory or its `.safetensors` file),
    checked: a known format version, a valid config and finite weights. `GHN.load` builds the GHN from it.

    Raises:
        CheckpointError: the path is missing, of another kind, or holds an unusable checkpoint.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No GHN checkpoint at {str(path)!r}. Pass a directory written by GHN.save_pretrained.")
    header = read_header(path)
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format_version {header.get('format_version')!r}; this ghn reads {FORMAT_VERSION}. "
            + (
                "It was saved by an older ghn whose predictions were scaled differently: retrain it with this ghn "
                "(python train_ghn.py --config ...)."
                if isinstance(header.get("format_version"), int) and header["format_version"] < FORMAT_VERSION
                else "Upgrade ghn to read it."
            )
        )
    try:
        config = GHNConfig.from_dict(header["config"])
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"The config in {str(path)!r} is not a valid GHN config ({err}).") from err
    weights_file = path / WEIGHTS_NAME if path.is_dir() else path
    try:
        weights = load_file(str(weights_file), device=str(map_location))
    except Exception as err:  # a truncated or corrupted file
        raise CheckpointError(f"Cannot read weights from {str(weights_file)!r} ({err}).") from err
    bad = [name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds NaN or infinite values in {', '.join(map(repr, bad[:5]))}; "
            "it cannot predict usable parameters. Use an earlier checkpoint."
        )
    return Checkpoint(path=path, config=config, weights=weights, metadata=header.get("metadata", {}))


def check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Raise `CheckpointError` unless `weights` has exactly the names and shapes of `expected`, the state dict that
    the checkpoint's config builds."""
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"Weights in {str(path)!r} do not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    wrong = [name for name, tensor in expected.items() if weights[name].shape != tensor.shape]
    if wrong:
        name = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(
            f"Weights in {str(path)!r} do not match its config: {name!r} has shape {tuple(weights[name].shape)} but "
            f"the config makes {tuple(expected[name].shape)}{more}. Save config and weights together with "
            "GHN.save_pretrained."
        )


# -- checkpoint records and weights-only torch files -------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """What a checkpoint file holds, read and checked but not yet built into a `GHN` (`GHN.from_checkpoint` does)."""

    path: Path
    """Where it was read from (named in error messages)."""
    config: GHNConfig
    weights: dict[str, torch.Tensor]
    """The state dict, by parameter name."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the checkpoint says about itself (name, training data)."""


#: File suffixes of weights-only torch checkpoints (`read_torch_checkpoint`).
TORCH_SUFFIXES = (".pt", ".pth")


def read_torch_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """A `.pt` file of {'config': GHNConfig dict, 'state_dict': {name: tensor}, 'metadata': {...}}, read with
    `torch.load(weights_only=True)` so no arbitrary object is unpickled.

    Raises:
        CheckpointError: the file is not a weights-only torch file of that form, or its config is invalid.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle and zip errors of many types; weights_only refuses arbitrary objects
        raise CheckpointError(f"Cannot read {str(path)!r} as a weights-only torch file ({err}).") from err
    if (
        not isinstance(data, dict)
        or not {"config", "state_dict"} <= data.keys()
        or not isinstance(data["state_dict"], dict)
    ):
        raise CheckpointError(
            f"{str(path)!r} is not a GHN torch file: expected a dict with 'config' and 'state_dict'. "
            "Save GHNs with GHN.save_pretrained(dir)."
        )
    try:
        config = GHNConfig.from_dict(data["config"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{str(path)!r} does not hold a valid GHN ({err}).") from err
    metadata = dict(data.get("metadata") or {})
    return Checkpoint(path=path, config=config, weights=dict(data["state_dict"]), metadata=metadata)
