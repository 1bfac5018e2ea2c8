"""The prediction benchmark runs end to end on a small model and writes rows whose ratios come from its own
measurements (each task in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_predict_benchmark_writes_every_column(tmp_path: Path) -> None:
    out = tmp_path / "predict.jsonl"
    command = [sys.executable, str(BENCHMARKS / "predict.py"), "--repeats", "1", "--cases", "zoo:vit-tiny/4"]
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| zoo:vit-tiny/4 |" in result.stdout and "write floor (s)" in result.stdout
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    seconds = {task: row[task]["total"]["median_s"] for task in ("predict", "init", "write", "resident")}
    assert all(value > 0 for value in seconds.values()), seconds
    assert row["time_ratio"] == pytest.approx(seconds["predict"] / seconds["init"])
    assert row["floor_ratio"] == pytest.approx(seconds["write"] / seconds["init"])
    assert row["predict"]["num_params"] == row["write"]["num_params"] == row["resident"]["num_params"] > 0


def test_quality_benchmark_draws_heldout_from_the_space_asked_for(tmp_path: Path) -> None:
    """`--space` makes two GHNs of different spaces comparable on the same held-out networks."""
    from ghn.nn import GHN

    path = tmp_path / "ghn"
    values = {"in_channels": 1, "image_size": 8, "num_classes": 10}
    torch.manual_seed(0)
    GHN.from_preset("logah-tiny").save_pretrained(
        path, task="digits", space="vits-tiny", task_kind="image", task_values=values, steps=0
    )
    command = [sys.executable, str(BENCHMARKS / "quality.py"), str(path), "--archs", "heldout:2", "--steps", "0",
               "--repeats", "1", "--inits", "ghn", "--workers", "1", "--dry-run"]  # fmt: skip
    own = subprocess.run(command, capture_output=True, text=True, timeout=300)
    other = subprocess.run([*command, "--space", "plain-tiny"], capture_output=True, text=True, timeout=300)
    assert own.returncode == 0 and other.returncode == 0, (own.stderr[-2000:], other.stderr[-2000:])
    assert "| heldout:1 | vit |" in own.stdout and "| heldout:1 | plain |" in other.stdout
