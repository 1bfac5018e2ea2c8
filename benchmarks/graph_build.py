"""Graph build time and peak memory against model size, beside building the same model with random init.

For each model: (graph) create it on the 'meta' device and build its graph, and (init) create it with random init on
`--device`. Each runs in its own fresh process, so each peak resident memory belongs to that case alone.

    python benchmarks/graph_build.py --repeats 5 --out benchmarks/results/graph_build-<hardware>.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere: find _timing

from _timing import (
    MB,
    append_jsonl,
    environment,
    markdown_table,
    measure,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    run_isolated,
)

CASES = ("zoo:resnet50", "zoo:vit-b/16", "hf:gpt2", "hf:gpt2-medium", "hf:gpt2-large")
TASKS = ("graph", "init")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--device", default="cpu", help="where the 'init' models are built (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one warm-up)")
    parser.add_argument("--out", help="append one JSON row per model to this JSONL file")
    parser.add_argument("--cases", nargs="+", default=list(CASES), metavar="SPEC", help="model specs to measure")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one case may run")
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)  # runs one case in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_work(args.worker, args.cases[0], device=args.device, repeats=args.repeats)))
        return 0
    env = environment(args.device)
    rows = [_measure_case(spec, args, env) for spec in args.cases]
    print(f"graph_build on {env['device_name']}, torch {env['torch']}, git {env['git_sha']}, "
          f"median of {args.repeats} after 1 warm-up\n")  # fmt: skip
    print(_table(rows, args.device))
    if args.out:
        append_jsonl(args.out, rows)
    return 0


def _measure_case(spec: str, args: argparse.Namespace, env: dict) -> dict:
    row = {"benchmark": "graph_build", "case": spec, "repeats": args.repeats, **env}
    for task in TASKS:
        command = [sys.executable, __file__, "--worker", task, "--cases", spec]
        command += ["--device", args.device, "--repeats", str(args.repeats)]
        result, peak = run_isolated(command, timeout=args.timeout)
        result["peak_rss_mb"] = peak / MB  # the whole process: interpreter, imports, warm-up and timed runs
        row[task] = result
    row["time_ratio"] = row["init"]["total"]["median_s"] / row["graph"]["total"]["median_s"]
    # Peaks of the whole processes: the graph's working memory alone rounds to zero, so its ratio would not inform.
    row["memory_ratio"] = row["init"]["peak_rss_mb"] / row["graph"]["peak_rss_mb"]
    return row


def _work(task: str, spec: str, *, device: str, repeats: int) -> dict:
    """One case in this (fresh) process. 'Δ RSS' is the peak resident memory of the timed runs above the resident
    size after the warm-up run, which has already paid for imports (torch, ghn, transformers) in both tasks alike."""
    from ghn import zoo
    from ghn.graph import build_graph

    def graph() -> object:
        return build_graph(zoo.create(spec, device="meta"))

    def init() -> object:
        return zoo.create(spec, device=device)

    run = graph if task == "graph" else init
    run()  # warm-up: imports, lazy modules, kernel caches
    is_reset = reset_peak_rss()
    baseline = rss_bytes()
    result = {"total": measure(run, repeats=repeats, warmup=0, device=device).to_dict()}
    result["delta_rss_mb"] = max(peak_rss_bytes() - baseline, 0) / MB
    result["is_peak_reset"] = is_reset  # False: the delta also holds the warm-up's peak
    if task == "graph":
        model = zoo.create(spec, device="meta")
        result["graph_only"] = measure(lambda: build_graph(model), repeats=repeats, warmup=0).to_dict()
        built = build_graph(model)
        coverage = built.coverage()
        result.update(num_nodes=built.num_nodes, num_edges=built.num_edges, num_params=built.num_params)
        result["coverage"] = coverage.fraction
    return result


def _table(rows: list[dict], device: str) -> str:
    headers = [
        "model", "params", "nodes", "meta model + graph (s)", "graph only (s)", "peak RSS (MB)", "Δ RSS (MB)",
        f"random init on {device} (s)", "peak RSS (MB)", "Δ RSS (MB)", "init / graph time", "init / graph peak RSS",
    ]  # fmt: skip
    lines = []
    for row in rows:
        graph, init = row["graph"], row["init"]
        lines.append([
            row["case"], f"{graph['num_params'] / 1e6:.1f}M", graph["num_nodes"],
            _seconds(graph["total"]), _seconds(graph["graph_only"]), f"{graph['peak_rss_mb']:.0f}",
            f"{graph['delta_rss_mb']:.1f}", _seconds(init["total"]), f"{init['peak_rss_mb']:.0f}",
            f"{init['delta_rss_mb']:.0f}", f"{row['time_ratio']:.1f}×", f"{row['memory_ratio']:.1f}×",
        ])  # fmt: skip
    return markdown_table(headers, lines)


def _seconds(timing: dict) -> str:
    return f"{timing['median_s']:.3f} ± {timing['spread_s'] / 2:.3f}"


if __name__ == "__main__":
    sys.exit(main())
