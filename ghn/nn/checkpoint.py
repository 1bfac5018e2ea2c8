"""The on-disk format of a GHN: a directory with `config.json` ({format_version, config, metadata}) and
`model.safetensors` (weights, with the same JSON in its header so the file also loads alone).

Loading never unpickles arbitrary objects and never guesses the architecture from tensor names.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ghn._logging import get_logger
from ghn.errors import CheckpointError, ConfigError
from ghn.nn.config import GHNConfig

if TYPE_CHECKING:
    from ghn.nn.ghn import GHN

__all__ = ["FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "save_ghn", "load_ghn", "read_header", "atomic_write"]

logger = get_logger(__name__)

FORMAT_VERSION = 2  # 2: predictions at the model's own init scale (ghn/nn/normalize.py)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    atomic_write(path / CONFIG_NAME, lambda tmp: tmp.write_text(text + "\n"))
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


def load_ghn(path: str | Path, *, map_location: str | torch.device = "cpu") -> GHN:
    """Load a GHN saved by `save_ghn`; refuses unknown formats, mismatched weights and non-finite values."""
    from safetensors.torch import load_file

    from ghn.nn.ghn import GHN

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No GHN checkpoint at {str(path)!r}. Pass a directory written by GHN.save_pretrained.")
    header = read_header(path)
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format_version {header.get('format_version')!r}; this ghn reads {FORMAT_VERSION}. "
            + ("It was saved by an older ghn whose predictions were scaled differently: retrain it with this ghn "
               "(python train_ghn.py --config ...)." if isinstance(header.get("format_version"), int)
               and header["format_version"] < FORMAT_VERSION else "Upgrade ghn to read it.")
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
    ghn = GHN(config)
    _check_weights(weights, ghn.state_dict(), path)
    ghn.load_state_dict(weights)
    ghn.metadata = header.get("metadata", {})
    logger.info("Loaded GHN from %s", path)
    return ghn.to(map_location).eval()


def _check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Raise unless `weights` has exactly the names and shapes of the state dict the config builds."""
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
