"""Quality of trained GHNs (issues 5, 11): `ghn.evaluate.evaluate_ghn` on each GHN's own task, on held-out
architectures of its space and on the outside set (networks written outside `ghn.zoo`, `ghn.evaluate.outside`),
GHN-predicted vs the model's default init vs orthogonal init, with no training and after fine-tuning, and the floor
check: after every fine-tuning step count, GHN init at least as good as default init on the mean and on at least
80% of the architectures of each group (the count), or on the mean with at most 20% clearly behind, their gap
paired by seed more than 2 standard errors below zero (the paired reading; issue 11), with each architecture's
gap. Prints the tables and writes them, with the command that produced it, into `benchmarks/RESULTS.md` between
`<!-- SECTION:start -->` and `<!-- SECTION:end -->` (added at the end of the file when missing).

    python benchmarks/quality.py                                  # the newest runs/*/lightning_logs/*/ghn
    python benchmarks/quality.py logah-tiny.digits                # a shipped GHN by name
    python benchmarks/quality.py runs/a/ghn runs/b/ghn --labels low-rank block   # two GHNs in one table
    python benchmarks/quality.py logah-tiny.digits --inits ghn,random --repeats 16 --first-seed 16  # fresh seeds

Each GHN runs the whole protocol (its own random and orthogonal rows too), so two GHNs take twice as long; on the
same task, space and seed they see the same architectures, and their random rows are equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere: find _timing

from _timing import append_jsonl, environment, markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from ghn.evaluate import RECIPES, evaluate_ghn
    from ghn.hub import PRETRAINED, from_pretrained

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    paths = [p if p in PRETRAINED.names() else Path(p) for p in args.ghns] or [_newest_run()]
    labels = args.labels or [_label(p) for p in paths]
    if len(labels) != len(paths):
        raise SystemExit(f"--labels needs one label per GHN ({len(paths)}), got {len(labels)}.")
    env = environment(args.device)
    results, rows, seconds = [], [], []
    seeds = range(args.first_seed, args.first_seed + args.repeats)
    for path, label in zip(paths, labels):
        start = time.perf_counter()
        hypernet = from_pretrained(path)
        recipe = None
        if args.lr is not None:
            recipe = dataclasses.replace(RECIPES.get(hypernet.metadata.get("task_kind", "image")), lr=args.lr)
        result = evaluate_ghn(
            hypernet, archs=args.archs, space=args.space, steps=[int(s) for s in args.steps.split(",")],
            seeds=seeds, inits=args.inits.split(","), device=args.device, progress=True, recipe=recipe,
            workers=args.workers if args.device == "cpu" else 1,
        )  # fmt: skip
        seconds.append(time.perf_counter() - start)
        results.append(result)
        rows += [{**env, **row, "label": label, "seconds": seconds[-1]} for row in _rows(result)]
        if args.eval_out:
            result.save(Path(args.eval_out) / label.replace("/", "_"))
    section = _section(results, labels, seconds, env, argv if argv is not None else sys.argv[1:])
    print(section)
    if args.out:
        append_jsonl(args.out, rows)
    if not args.dry_run:
        name = args.section or ("quality" if len(paths) == 1 else "quality-compare")
        write_section(Path(args.results), name, section)
        print(f"\nUpdated section {name!r} of {args.results}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("ghns", nargs="*", metavar="GHN_DIR", help="saved GHN directories (default: newest run)")
    parser.add_argument("--labels", nargs="+", help="one name per GHN for the table (default: its run directory)")
    parser.add_argument(
        "--archs", default="heldout:10,outside",
        help="architectures (default heldout:10,outside; 'train:N': the first N the GHN trained on)",
    )  # fmt: skip
    parser.add_argument("--space", help="the space 'heldout:N' / 'train:N' draw from (default: each GHN's own)")
    parser.add_argument("--steps", default="0,100,200", help="fine-tuning step counts (default 0,100,200)")
    parser.add_argument("--repeats", type=int, default=2, help="seeds per (architecture, init) (default 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0; 8 for 8 fresh ones)")
    parser.add_argument("--inits", default="ghn,random,orthogonal", help="inits to compare")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate for every init (default: the recipe's)")
    parser.add_argument("--device", default="cpu", help="where the networks train (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, fastest for tiny nets)")
    parser.add_argument("--workers", type=int, default=2, help="processes side by side on CPU (default 2; 1 on GPU)")
    parser.add_argument("--out", help="append one JSON row per GHN and init to this JSONL file")
    parser.add_argument("--eval-out", help="also save each result (results.md/json, plots) under DIR/<label with '/' as '_'>")
    parser.add_argument("--results", default=str(RESULTS), help="the Markdown file to update")
    parser.add_argument("--section", help="marker name (default 'quality', or 'quality-compare' for several GHNs)")
    parser.add_argument("--dry-run", action="store_true", help="print the section without writing the results file")
    return parser


def _newest_run() -> Path:
    found = sorted(ROOT.glob("runs/*/lightning_logs/*/ghn"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("No GHN under runs/*/lightning_logs/*/ghn. Train one (python train_ghn.py) or pass its path.")
    return found[-1]


def _label(path: Path | str) -> str:
    if isinstance(path, str):
        return path
    parts = path.resolve().parts
    return "/".join(parts[-4:-1]) if "lightning_logs" in parts else path.name


def _rows(result) -> list[dict]:
    """One JSONL row per init: `EvalResult.summary()` (per-seed values of each column) and the run's settings."""
    base = {"task": result.task, "ghn": result.ghn, "archs": [a.name for a in result.archs],
            "seeds": list(result.seeds), "steps": list(result.steps)}
    return [{**base, **row} for row in result.summary()]


def _section(results, labels: list[str], seconds: list[float], env: dict, argv: Sequence[str]) -> str:
    from ghn.evaluate.measures import BEHIND_SE

    command = "python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"Command: `{command.strip()}` (git {env['git_sha']}, torch {env['torch']}, {env['device_name']}, "
        f"{env['timestamp']}; {', '.join(f'{s / 60:.1f} min' for s in seconds)} wall).",
        "",
    ]
    if len(results) > 1:
        headers, _ = results[0].summary_table()
        rows = [[label] + row for label, result in zip(labels, results) for row in result.summary_table()[1]]
        lines += ["Averaged over architectures, per GHN:", "", markdown_table(["GHN", *headers], rows), ""]
    for label, result in zip(labels, results):
        if "ghn" in result.inits and "random" in result.inits:
            lines += [f"**Floor check{f' ({label})' if len(results) > 1 else ''}**: GHN init against the model's "
                      "default init, primary metric, mean over architectures and seeds; 'at least as good' counts "
                      "architectures (mean over seeds), 'behind' those whose gap, paired by seed (same batches), is "
                      f"more than {BEHIND_SE:g} standard errors below zero.", "", floor_table(result), "",
                      f"Gap to the default init per architecture ({result.metrics[0].label}, GHN minus default, "
                      "positive is better; mean ± standard error over seeds):", "", paired_table(result), ""]  # fmt: skip
        lines += [f"**{label}**: {result.to_markdown()}" if len(results) > 1 else result.to_markdown()]
    return "\n".join(lines).rstrip() + "\n"


def floor_table(result) -> str:
    """Per group of architectures (held-out draws, training draws, outside set, other specs) and step: GHN vs default
    init and the gap of their means (± its standard error over seeds, paired), how many architectures GHN init is at
    least as good on (mean over seeds) and how many it is clearly behind on (paired over seeds), and whether the floor
    holds: the issue's count (mean and >= 80% at least as good), and the paired reading (mean, and at most 20%
    clearly behind)."""
    from ghn.evaluate.measures import BEHIND_SE

    primary = result.metrics[0]
    rows = []
    for group, archs in _groups(result).items():
        for row in result.versus("ghn", "random", archs):
            better = row["init"] >= row["reference"] if primary.higher_is_better else row["init"] <= row["reference"]
            holds = better and row["wins"] >= 0.8 * row["num_archs"]
            holds_paired = better and row["behind"] <= 0.2 * row["num_archs"]
            step = "no training" if row["step"] == 0 else f"after {row['step']} steps"
            verdicts = ["yes" if ok else "**no**" for ok in (holds, holds_paired)] if row["step"] else ["—", "—"]
            gap = _gap_text(row["gap"], row["gap_se"], primary.scale)
            rows.append([group, step, f"{row['init'] * primary.scale:.2f}", f"{row['reference'] * primary.scale:.2f}", gap,
                         f"{row['wins']}/{row['num_archs']}", f"{row['behind']}/{row['num_archs']}", *verdicts])  # fmt: skip
    headers = ["archs", "step", f"GHN {primary.label}", f"default {primary.label}", "gap ± SE", "GHN at least as good",
               f"GHN behind by > {BEHIND_SE:g} SE", "floor holds (count)", "floor holds (paired)"]  # fmt: skip
    return markdown_table(headers, rows)


def paired_table(result) -> str:
    """Per architecture and fine-tuning step: GHN init's gap to the default init on the primary metric (positive is
    better), mean ± standard error over seeds paired on the same batches, in bold where it is clearly behind."""
    from ghn.evaluate import markdown_table as table_with_text_columns
    from ghn.evaluate.measures import is_clearly_behind

    primary = result.metrics[0]
    steps = [s for s in result.steps if s > 0]
    rows = []
    for index, arch in enumerate(result.archs):
        row = [arch.name, arch.family]
        for step in steps:
            gap, stderr = result.paired_gap(index, "ghn", "random", step)
            text = _gap_text(gap, stderr, primary.scale)
            row.append(f"**{text}**" if is_clearly_behind(gap, stderr) else text)
        rows.append(row)
    headers = ["architecture", "family"] + [f"after {s} steps" for s in steps]
    return table_with_text_columns(headers, rows, num_text_columns=2)


def _gap_text(gap: float, stderr: float, scale: float) -> str:
    """'+1.16 ± 0.47' in table units; no ± part without an error estimate (one seed)."""
    return f"{gap * scale:+.2f}" + ("" if math.isnan(stderr) else f" ± {stderr * scale:.2f}")


def _groups(result) -> dict[str, list[int]]:
    """Architecture indices by group: 'heldout', 'train', 'outside', and 'specs' for any other named spec."""
    groups: dict[str, list[int]] = {}
    for index, arch in enumerate(result.archs):
        group = arch.name.partition(":")[0] if arch.name.startswith(("heldout:", "train:", "outside:")) else "specs"
        groups.setdefault(group, []).append(index)
    return groups


def write_section(path: Path, name: str, body: str) -> None:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->` in `path` (append both if missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    else:
        title = "Quality: GHN vs random vs orthogonal init" + (" (comparison)" if name != "quality" else "")
        text = text.rstrip() + f"\n\n## {title} (`benchmarks/quality.py`, issue 5)\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
