"""Dependencies go one way (STYLE.md §3): every `ghn` import is parsed with `ast` and checked against the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ghn"
LAYERS = {
    "_version": 0, "_io": 0, "_checks": 0, "errors": 0, "registry": 0, "_config": 0, "_logging": 0, "meta": 0,
    "graph": 1, "zoo": 1,
    "nn": 2, "data": 2,
    "predict": 3, "download": 3,  # download is generic (layer-0 imports only); below hub so that hub may import it
    "train": 4, "export": 4, "hub": 4, "evaluate": 4,
    "cli": 5,
}  # fmt: skip
#: Pairs on the same layer or below that must not import each other.
FORBIDDEN = {("graph", "zoo"), ("zoo", "graph"), ("nn", "data")}
THIRD_PARTY = {"lightning": {"train"}}


def _unit(path: Path) -> str:
    """The top-level unit of ghn a file belongs to ('graph', 'predict', '__init__', ...)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    unit = _unit(path)
    for module, line in _imports(path):
        parts = module.split(".")
        if parts[0] in THIRD_PARTY:
            assert unit in THIRD_PARTY[parts[0]], f"{path.name}:{line} imports {module!r}; only {THIRD_PARTY[parts[0]]} may"
        if module == "ghn":
            assert unit in ("cli", "__init__", "__main__"), f"{path}:{line}: `from ghn import` reaches the top layer"
        if parts[0] != "ghn" or len(parts) < 2:
            continue
        target = parts[1]
        if target == unit or unit in ("__init__", "__main__"):
            assert not (unit == "__init__" and target == "train"), "ghn/__init__.py must not import ghn.train"
            continue
        assert target in LAYERS, f"{path}:{line} imports unknown unit {target!r}; add it to LAYERS"
        assert unit in LAYERS, f"{path} is in unknown unit {unit!r}; add it to LAYERS"
        assert LAYERS[target] < LAYERS[unit] or (LAYERS[target] == LAYERS[unit] == 0), (
            f"{path.relative_to(PACKAGE)}:{line} (layer {LAYERS[unit]}) imports {module!r} (layer {LAYERS[target]})"
        )
        assert (unit, target) not in FORBIDDEN, f"{path.relative_to(PACKAGE)}:{line}: {unit} must not import {target}"


def test_import_ghn_does_not_need_lightning() -> None:
    import subprocess
    import sys

    code = "import sys, ghn; assert 'lightning' not in sys.modules and 'ghn.train' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
