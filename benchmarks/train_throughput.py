"""GHN training throughput: steps/s, architectures/s and samples/s of `GHNModule.training_step` (forward, backward
and optimizer step), for logah-tiny with a meta-batch of 4 on the digits space and on the GPT space.

The baseline in the same run is training the same networks directly (their own parameters, same data batch),
which is what a GHN step costs at least.

    python benchmarks/train_throughput.py --repeats 20 --out benchmarks/results/train_throughput-<hardware>.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere: find _timing

import torch
from _timing import append_jsonl, environment, markdown_table, measure

from ghn.data.metrics import task_loss
from ghn.train import GHNDataModule, GHNModule

CASES = {
    "digits/mixed-tiny": {"task": "digits", "space": "mixed-tiny"},
    "digits/mixed-plain-tiny": {"task": "digits", "space": "mixed-plain-tiny"},  # the embedded default run's space
    "digits32/mixed": {"task": "digits", "space": "mixed", "task_options": {"image_size": 32, "in_channels": 3}},
    "pydoc/gpts-tiny": {"task": "pydoc", "space": "gpts-tiny", "task_options": {"context": 64}, "batch_size": 16},
    "pydoc/gpts": {"task": "pydoc", "space": "gpts", "task_options": {"context": 64}, "batch_size": 16},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per case (after 2 warm-up steps)")
    parser.add_argument("--meta_batch_size", type=int, default=4)
    parser.add_argument("--ghn", default="logah-tiny")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32", help="bf16 autocast (CUDA) or fp32")
    parser.add_argument("--cases", nargs="+", default=["digits/mixed-tiny", "pydoc/gpts-tiny"], choices=list(CASES))
    parser.add_argument("--out", help="append one JSON row per case to this JSONL file")
    args = parser.parse_args(argv)
    env = environment(args.device)
    rows = [_case(name, args, env) for name in args.cases]
    print(f"train_throughput on {env['device_name']}, torch {env['torch']}, git {env['git_sha']}, "
          f"{args.ghn}, meta-batch {args.meta_batch_size}, median of {args.repeats}\n")  # fmt: skip
    table = [
        [r["case"], f"{r['ghn_step_s']:.3f}", f"{1 / r['ghn_step_s']:.2f}", f"{r['archs_per_s']:.1f}",
         f"{r['samples_per_s']:.0f}", f"{r['direct_step_s']:.3f}", f"{r['ghn_step_s'] / r['direct_step_s']:.2f}x",
         f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] else "-"]
        for r in rows
    ]  # fmt: skip
    headers = ["case", "GHN step (s)", "steps/s", "archs/s", "samples/s", "direct step (s)", "GHN / direct", "GPU MB"]
    print(markdown_table(headers, table))
    if args.out:
        append_jsonl(args.out, rows)
    return 0


def _case(name: str, args: argparse.Namespace, env: dict) -> dict:
    options = {"num_train_archs": 40, "num_heldout_archs": 1, "meta_batch_size": args.meta_batch_size, **CASES[name]}
    data = GHNDataModule(progress=False, **options)
    data.setup()
    module = GHNModule(args.ghn).to(args.device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    batches = itertools.chain.from_iterable(iter(data.train_dataloader()) for _ in itertools.count())  # endless
    autocast = torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def next_batch() -> dict:
        batch, _, _ = next(batches)
        return module.transfer_batch_to_device(batch, torch.device(args.device), 0)

    def ghn_step() -> None:
        batch = next_batch()
        with autocast:
            loss = module.training_step(batch, 1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    module.log = lambda *a, **k: None  # no trainer attached: logging is not what is measured
    direct_models: dict[str, tuple] = {}

    def direct_step() -> None:
        batch = next_batch()
        x, y = batch["data"]
        for arch in batch["archs"]:
            if arch.hash not in direct_models:
                model = arch.build(args.device)
                direct_models[arch.hash] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
            model, opt = direct_models[arch.hash]
            with autocast:
                loss, _ = task_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ghn = measure(ghn_step, repeats=args.repeats, warmup=2, device=args.device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0.0
    direct = measure(direct_step, repeats=args.repeats, warmup=2, device=args.device)
    batch_size = options.get("batch_size", 64)
    return {
        "benchmark": "train_throughput",
        "case": name,
        "ghn": args.ghn,
        "meta_batch_size": args.meta_batch_size,
        "precision": args.precision,
        "ghn_step_s": ghn.median,
        "ghn_step_spread_s": ghn.spread,
        "direct_step_s": direct.median,
        "archs_per_s": args.meta_batch_size / ghn.median,
        "samples_per_s": args.meta_batch_size * batch_size / ghn.median,
        "peak_gpu_mb": peak,
        **env,
    }


if __name__ == "__main__":
    raise SystemExit(main())
