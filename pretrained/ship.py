"""Ship a trained GHN in this folder: copy its files to `pretrained/<name>/`, write its model card, and list it in
`manifest.json` with sha256 and sizes (replacing an entry of the same name).

    python train_ghn.py --out_dir runs/digits/ghn
    python benchmarks/quality.py runs/digits/ghn --eval-out runs/digits/eval --dry-run
    python pretrained/ship.py runs/digits/ghn --name logah-tiny.digits --eval runs/digits/eval/ghn/results.md \
        --command "python train_ghn.py" --hardware "2-core AMD EPYC CPU, 2 gloo DDP processes"

The card holds what the checkpoint's metadata says (task, space, steps, held-out table with no training) and, with
`--eval`, the fine-tuning table of `ghn eval` / `benchmarks/quality.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ghn._io import atomic_write, atomic_write_text
from ghn.hub import MANIFEST_NAME, manifest_entry, write_model_card
from ghn.nn.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_header
from ghn.train.report import markdown_table

HERE = Path(__file__).resolve().parent


def model_card(name: str, meta: dict, *, command: str, hardware: str, description: str, eval_text: str) -> str:
    kind = meta.get("task_kind", "image")
    values = meta.get("task_values", {})
    shape = (
        f"{values.get('in_channels')}x{values.get('image_size')}x{values.get('image_size')} images, "
        f"{values.get('num_classes')} classes"
        if kind == "image"
        else f"vocabulary {values.get('vocab_size')}, context {values.get('n_positions')}"
    )
    heldout = meta.get("heldout") or []
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"- Trained on: task `{meta.get('task')}` ({shape}), architecture space `{meta.get('space')}`",
        f"- Steps: {meta.get('steps')}; command: `{command}`",
        f"- Hardware: {hardware}",
        f"- Load: `ghn.from_pretrained({name!r})`; predict: `ghn.predict(model)` picks it for {kind} models",
        "",
    ]
    if heldout:
        lines += [
            f"## Held-out architectures, no training ({len(heldout)} never seen in training, test split)",
            "",
            markdown_table(heldout, kind=kind),
            "",
        ]
    if eval_text:
        lines += ["## Fine-tuning from GHN init and the model's default init (`benchmarks/quality.py`)", "", eval_text.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("ghn_dir", type=Path, help="a saved GHN directory (config.json + model.safetensors)")
    parser.add_argument("--name", required=True, help="manifest name, e.g. logah-tiny.digits")
    parser.add_argument("--eval", type=Path, help="a results.md of `ghn eval` to put in the card")
    parser.add_argument("--command", default="python train_ghn.py", help="the command that trained it")
    parser.add_argument("--hardware", default="CPU", help="where it was trained")
    parser.add_argument("--description", default="", help="one paragraph: what it is for")
    args = parser.parse_args(argv)
    meta = read_header(args.ghn_dir).get("metadata", {})
    if args.eval and not args.eval.is_file():  # before anything is copied: a failed ship changes nothing
        parser.error(f"--eval {str(args.eval)!r} is not a file (the results.md that quality.py --eval-out wrote).")
    eval_text = args.eval.read_text() if args.eval else ""
    target = HERE / args.name
    target.mkdir(exist_ok=True)
    for file in (CONFIG_NAME, WEIGHTS_NAME):  # atomically, like every file ghn writes: never a half-copied entry
        atomic_write(target / file, lambda tmp, source=args.ghn_dir / file: shutil.copyfile(source, tmp))
    write_model_card(
        target,
        model_card(args.name, meta, command=args.command, hardware=args.hardware, description=args.description,
                   eval_text=eval_text),
    )  # fmt: skip
    entry = manifest_entry(target, name=args.name, license="MIT", description=args.description)
    manifest_path = HERE / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["checkpoints"] = [e for e in manifest["checkpoints"] if e["name"] != args.name] + [entry]
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"Shipped {args.name} in {target} ({sum(entry['size'].values()) / 1e6:.2f} MB) and listed it in {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
