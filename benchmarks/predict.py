"""Time and peak memory of `ghn.predict` from a `meta` model (graph + prediction into real tensors), beside
constructing the same model with PyTorch's random init, measured in the same run, each case in a fresh process.

Two more columns say where the time goes. 'write floor': allocate every parameter tensor of the model and fill it
with a constant, the least any way of making the model costs (fresh memory is paid for in page faults, which both
prediction and random init pay). 'predict resident': predict into a model whose parameters already exist, which
is what the GHN itself costs (graph, GHN forward, and the low-rank products) without allocation.

    python benchmarks/predict.py --repeats 3 --out benchmarks/results/predict-<hardware>.jsonl

Targets (issue 3): GPT-2 Large graph + prediction in at most 0.2x the time of its random init (aim 0.1x), and peak
memory at most 1.3x the model's fp32 size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere: find _timing

from _timing import MB, append_jsonl, environment, markdown_table, measure, peak_rss_bytes, reset_peak_rss, rss_bytes, run_isolated

CASES = ("zoo:resnet50", "zoo:vit-b/16", "zoo:gpt2", "zoo:gpt2-medium", "zoo:gpt2-large")
TASKS = ("predict", "init", "write", "resident")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--device", default="cpu", help="where predicted and random-init models live")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one warm-up)")
    parser.add_argument("--ghn", default="logah-tiny", help="GHN preset (untrained: speed does not depend on training), "
                        "or a shipped name / saved directory, e.g. logah-tiny.pydoc (its own_spectrum costs time)")
    parser.add_argument("--out", help="append one JSON row per model to this JSONL file")
    parser.add_argument("--cases", nargs="+", default=list(CASES), metavar="SPEC")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_work(args.worker, args.cases[0], args)))
        return 0
    env = environment(args.device)
    rows = []
    for spec in args.cases:
        row = {"benchmark": "predict", "case": spec, "ghn": args.ghn, "repeats": args.repeats, **env}
        for task in TASKS:
            command = [sys.executable, __file__, "--worker", task, "--cases", spec, "--ghn", args.ghn]
            command += ["--device", args.device, "--repeats", str(args.repeats)]
            result, peak = run_isolated(command, timeout=args.timeout)
            result["peak_rss_mb"] = peak / MB
            row[task] = result
        row["time_ratio"] = row["predict"]["total"]["median_s"] / row["init"]["total"]["median_s"]
        row["memory_ratio"] = row["predict"]["delta_rss_mb"] / row["predict"]["fp32_mb"]
        row["floor_ratio"] = row["write"]["total"]["median_s"] / row["init"]["total"]["median_s"]
        rows.append(row)
    print(f"predict on {env['device_name']}, torch {env['torch']}, git {env['git_sha']}, {args.ghn}, "
          f"median of {args.repeats} after 1 warm-up\n")  # fmt: skip
    headers = [
        "model", "params", "fp32 (MB)", "graph (s)", "graph + predict (s)", "Δ RSS (MB)", "Δ RSS / fp32",
        f"random init on {args.device} (s)", "predict / init time", "write floor (s)", "floor / init",
        "predict resident (s)",
    ]  # fmt: skip
    lines = [
        [r["case"], f"{r['predict']['num_params'] / 1e6:.1f}M", f"{r['predict']['fp32_mb']:.0f}",
         f"{r['predict']['graph_s']:.2f}", _seconds(r["predict"]["total"]), f"{r['predict']['delta_rss_mb']:.0f}",
         f"{r['memory_ratio']:.2f}×", _seconds(r["init"]["total"]), f"{r['time_ratio']:.3f}×",
         _seconds(r["write"]["total"]), f"{r['floor_ratio']:.3f}×", _seconds(r["resident"]["total"])]
        for r in rows
    ]  # fmt: skip
    print(markdown_table(headers, lines))
    if args.out:
        append_jsonl(args.out, rows)
    return 0


def _work(task: str, spec: str, args: argparse.Namespace) -> dict:
    """One case in a fresh process. 'Δ RSS' is the peak resident memory of the timed runs above the resident size
    before them (imports and the GHN already paid for), which is what the predicted model itself costs."""
    import gc

    import torch

    import ghn
    from ghn import zoo

    from ghn.nn import GHN_PRESETS

    hyper = ghn.GHN.from_preset(args.ghn) if args.ghn in GHN_PRESETS else ghn.from_pretrained(args.ghn)
    hyper = hyper.to(args.device)

    def predict() -> object:
        model = zoo.create(spec, device="meta")
        return ghn.predict(model, hyper, device=args.device)

    def init() -> object:
        return zoo.create(spec, device=args.device)

    def write() -> object:
        shapes = [p.shape for p in zoo.create(spec, device="meta").parameters()]
        return [torch.empty(shape, device=args.device).fill_(0.5) for shape in shapes]

    resident_model = zoo.create(spec, device=args.device) if task == "resident" else None

    def resident() -> object:
        return ghn.predict(resident_model, hyper)

    run = {"predict": predict, "init": init, "write": write, "resident": resident}[task]
    model = run()  # warm-up: imports, lazy modules, kernel caches
    num_params = sum(p.numel() for p in zoo.create(spec, device="meta").parameters())
    del model
    gc.collect()
    is_reset = reset_peak_rss()
    baseline = rss_bytes()
    def timed() -> None:
        run()  # the model is dropped on return, so each repeat's peak holds one model
        gc.collect()

    timing = measure(timed, repeats=args.repeats, warmup=0, device=args.device)
    result = {"total": timing.to_dict(), "num_params": num_params, "fp32_mb": num_params * 4 / MB}
    result["delta_rss_mb"] = max(peak_rss_bytes() - baseline, 0) / MB
    result["is_peak_reset"] = is_reset
    if task == "predict":
        meta = zoo.create(spec, device="meta")
        start = time.perf_counter()
        ghn.build_graph(meta)
        result["graph_s"] = time.perf_counter() - start
    return result


def _seconds(timing: dict) -> str:
    return f"{timing['median_s']:.2f} ± {timing['spread_s'] / 2:.2f}"


if __name__ == "__main__":
    sys.exit(main())
