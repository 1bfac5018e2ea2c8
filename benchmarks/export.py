"""Export time and peak memory: a GHN-predicted GPT-2 streamed into a Hugging Face directory, beside
`GPT2LMHeadModel(config).save_pretrained(...)` from random init.

For each model: (ghn) `ghn.export_predicted(spec, GHN.from_preset("logah-tiny"), dir)` in float32, (ghn-bf16) the
same in bfloat16, and (hf) random init plus `save_pretrained`. Each runs in its own fresh process, so each peak
resident memory belongs to that case alone; 'Δ RSS' is the peak of the timed runs above the resident size after a
tiny warm-up export that paid for the imports, and is compared with the model's float32 size.

    python benchmarks/export.py --repeats 3 --out benchmarks/results/export-<hardware>.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
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

CASES = ("zoo:gpt2", "zoo:gpt2-medium", "zoo:gpt2-large")
TASKS = ("ghn", "ghn-bf16", "hf")
_TINY = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=256, n_positions=32)  # the warm-up model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--device", default="cpu", help="where the GHN (or the random init) runs (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one tiny warm-up)")
    parser.add_argument("--out", help="append one JSON row per model to this JSONL file")
    parser.add_argument("--cases", nargs="+", default=list(CASES), metavar="SPEC", help="zoo GPT-2 specs to measure")
    parser.add_argument("--workdir", help="where exports are written (default: a temporary folder, removed after)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one case may run")
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)  # runs one case in this process
    args = parser.parse_args(argv)
    if args.worker:
        result = _work(args.worker, args.cases[0], device=args.device, repeats=args.repeats, workdir=Path(args.workdir))
        print(json.dumps(result))
        return 0
    env = environment(args.device)
    with tempfile.TemporaryDirectory(prefix="ghn-export-bench-", dir=args.workdir) as workdir:
        rows = [_measure_case(spec, args, env, Path(workdir)) for spec in args.cases]
    print(f"export on {env['device_name']}, torch {env['torch']}, git {env['git_sha']}, "
          f"median of {args.repeats} after a tiny warm-up\n")  # fmt: skip
    print(_table(rows))
    if args.out:
        append_jsonl(args.out, rows)
    return 0


def _measure_case(spec: str, args: argparse.Namespace, env: dict, workdir: Path) -> dict:
    row = {"benchmark": "export", "case": spec, "repeats": args.repeats, **env}
    for task in TASKS:
        folder = workdir / task
        command = [sys.executable, __file__, "--worker", task, "--cases", spec, "--device", args.device]
        command += ["--repeats", str(args.repeats), "--workdir", str(folder)]
        result, peak = run_isolated(command, timeout=args.timeout)
        result["peak_rss_mb"] = peak / MB  # the whole process: interpreter, imports, GHN, warm-up and timed runs
        row[task] = result
        shutil.rmtree(folder, ignore_errors=True)  # GPT-2 Large is 3 GB on disk in float32
    row["fp32_mb"] = row["hf"]["num_params"] * 4 / MB
    return row


def _work(task: str, spec: str, *, device: str, repeats: int, workdir: Path) -> dict:
    """One case in this (fresh) process; see the module docstring for what is measured."""
    import torch

    workdir.mkdir(parents=True, exist_ok=True)
    if task == "hf":
        import transformers

        from ghn import zoo

        def save(overrides: dict, out: Path) -> None:
            fields = zoo.lookup_config(spec.removeprefix("zoo:"))[1]
            config = transformers.GPT2Config(**{**_hf_fields(fields), **overrides})
            with torch.device(device):
                model = transformers.GPT2LMHeadModel(config)
            model.save_pretrained(out)

        def run() -> None:
            save({}, workdir / "model")

        save(_TINY, workdir / "warmup")
    else:
        import ghn
        from ghn.nn import GHN

        torch.manual_seed(0)
        hypernet = GHN.from_preset("logah-tiny").to(device).eval()  # untrained: the cost does not depend on training
        dtype = "bfloat16" if task == "ghn-bf16" else None

        def run() -> None:
            ghn.export_predicted(spec, hypernet, workdir / "model", dtype=dtype, force=True)

        tiny = ghn.zoo.create("zoo:gpt2", device="meta", **_TINY)
        ghn.export_predicted(tiny, hypernet, workdir / "warmup", dtype=dtype, force=True)
    is_reset = reset_peak_rss()
    baseline = rss_bytes()
    result = {"total": measure(run, repeats=repeats, warmup=0, device=device).to_dict()}
    result["delta_rss_mb"] = max(peak_rss_bytes() - baseline, 0) / MB
    result["is_peak_reset"] = is_reset  # False: the delta also holds the warm-up's peak
    result["file_mb"] = (workdir / "model" / "model.safetensors").stat().st_size / MB
    from safetensors import safe_open

    with safe_open(str(workdir / "model" / "model.safetensors"), framework="pt") as file:
        result["num_params"] = sum(math.prod(file.get_slice(key).get_shape()) for key in file.keys())
    return result


def _hf_fields(config) -> dict:
    """`transformers.GPT2Config` fields of a zoo GPT-2 config."""
    return dict(vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
                n_layer=config.n_layer, n_head=config.n_head)  # fmt: skip


def _table(rows: list[dict]) -> str:
    headers = [
        "model", "params", "fp32 size (MB)",
        "ghn export fp32 (s)", "Δ RSS (MB)", "Δ RSS / fp32 size",
        "ghn export bf16 (s)", "Δ RSS (MB)", "Δ RSS / fp32 size",
        "HF init + save_pretrained (s)", "Δ RSS (MB)", "Δ RSS / fp32 size",
    ]  # fmt: skip
    lines = []
    for row in rows:
        cells = [row["case"], f"{row['hf']['num_params'] / 1e6:.0f}M", f"{row['fp32_mb']:.0f}"]
        for task in TASKS:
            result = row[task]
            delta = result["delta_rss_mb"]
            cells += [_seconds(result["total"]), f"{delta:.0f}", f"{delta / row['fp32_mb']:.2f}×"]
        lines.append(cells)
    return markdown_table(headers, lines)


def _seconds(timing: dict) -> str:
    return f"{timing['median_s']:.2f} ± {timing['spread_s'] / 2:.2f}"


if __name__ == "__main__":
    sys.exit(main())
