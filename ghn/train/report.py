"""Held-out summaries at the end of training: metrics with no training, GHN-predicted vs random init."""

from __future__ import annotations

from statistics import mean
from typing import Any

__all__ = ["heldout_rows", "markdown_table"]


def heldout_rows(module, datamodule, *, split: str = "test") -> list[dict[str, Any]]:
    """One row per held-out architecture: family, hash, parameter count, GHN and random-init metrics."""
    data = datamodule.eval_batches(split)
    module.eval()
    rows = []
    for arch in datamodule.heldout:
        metrics = module.heldout_metrics([arch], data)
        rows.append(
            {
                "family": arch.family,
                "hash": arch.hash,
                "num_params": arch.graph.num_params,
                **{key: values[0] for key, values in metrics.items()},
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], *, kind: str) -> str:
    """A Markdown table of `heldout_rows`, with the mean over architectures as its last line."""
    metric, label = ("acc", "accuracy (%)") if kind == "image" else ("loss", "loss (nats/token)")
    scale = 100.0 if kind == "image" else 1.0
    lines = [
        f"| # | family | params | GHN {label} | random-init {label} |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows):
        lines.append(
            f"| {i} | {row['family']} | {row['num_params']:,} | {scale * row[metric]:.2f} | "
            f"{scale * row[metric + '_random']:.2f} |"
        )
    if rows:
        ghn = mean(r[metric] for r in rows) * scale
        rnd = mean(r[metric + "_random"] for r in rows) * scale
        lines.append(f"| mean | {len(rows)} archs | | **{ghn:.2f}** | **{rnd:.2f}** |")
    return "\n".join(lines)
