"""The `ghn` command line: one small function per subcommand, registered in `COMMANDS`.

    ghn graph zoo:resnet18 --stats
    ghn graph hf:gpt2 --out gpt2.svg

This is the only place where a `GHNError` becomes an exit code (2), with the traceback shown only under `--debug`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ghn import __version__
from ghn.errors import ConfigError, GHNError
from ghn.registry import Registry

if TYPE_CHECKING:
    from ghn.graph import ComputationGraph

__all__ = ["COMMANDS", "CommandSpec", "main"]

#: Exit code for errors ghn reports (bad spec, unsupported op, missing extra); argparse also uses 2.
EXIT_ERROR = 2


@dataclass(frozen=True)
class CommandSpec:
    """One subcommand.

    Attributes:
        name: what the user types after `ghn`.
        help: one line shown by `ghn -h`.
        add_arguments: adds the subcommand's own flags to its parser.
        run: does the work from the parsed arguments and returns the exit code.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = Registry[CommandSpec]("command")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ghn` with `argv` (default: the process arguments) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and not {"-h", "--help"} & set(argv[1:2]):
        # train_ghn.py's options are LightningCLI's own (--config, --data.task ...): argparse cannot pass through
        # options that start with '-', so everything after 'train' goes to the training entry as it is.
        args = argparse.Namespace(command="train", debug="--debug" in argv[1:], options=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return COMMANDS.get(args.command).run(args)
    except GHNError as err:
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"ghn {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghn", description="Graph hypernetworks: predict the parameters of any PyTorch model.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"ghn {__version__}")
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback when ghn reports an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in COMMANDS.values():
        sub = subparsers.add_parser(
            spec.name, help=spec.help, description=spec.help, parents=[common], allow_abbrev=False
        )
        spec.add_arguments(sub)
    return parser


# -- ghn graph ------------------------------------------------------------------------------------------------------
def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="model spec: 'zoo:resnet18', 'hf:gpt2', 'module:pkg.mod:factory'")
    parser.add_argument("--out", metavar="FILE", help="draw the graph to FILE ('.png' or '.svg')")
    parser.add_argument("--stats", action="store_true", help="print node and edge counts, coverage and op counts")
    parser.add_argument(
        "--device", default="meta", help="where the model is built and traced; 'meta' (default) needs no memory"
    )


def _run_graph(args: argparse.Namespace) -> int:
    import torch

    from ghn import zoo
    from ghn.graph import build_graph

    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise ConfigError(f"Unknown device {args.device!r}. Use 'meta', 'cpu' or 'cuda[:N]'.") from err
    model = zoo.create(args.spec, device=device)
    graph = build_graph(model, device=device)
    if args.out:
        graph.draw(args.out, title=f"{args.spec}: {graph.num_nodes} nodes, {graph.num_edges} edges")
        print(f"Wrote the graph of {args.spec} ({graph.num_nodes} nodes) to {args.out}")
    if args.stats or not args.out:
        print(format_stats(args.spec, graph))
    return 0


def format_stats(spec: str, graph: ComputationGraph) -> str:
    """Counts, coverage and a table of ops (with their kind and id) of `graph`, as printed by `ghn graph`."""
    from ghn.graph import OPS

    coverage = graph.coverage()
    summary = [
        ("model", f"{spec} ({graph.model_type})"),
        ("nodes", f"{graph.num_nodes:,}"),
        ("edges", f"{graph.num_edges:,}"),
        ("parameters", f"{graph.num_params:,}"),
        ("coverage", str(coverage)),
    ]
    ops = [(op, OPS.get(op).kind, str(OPS.get(op).id), f"{count:,}") for op, count in graph.op_histogram().items()]
    activations: dict[str, int] = {}
    for node in graph.nodes:
        if node.activation:
            activations[node.activation] = activations.get(node.activation, 0) + 1
    ops += [
        (name, "activation", str(OPS.get(name).id), f"{count:,}")
        for name, count in sorted(activations.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    width = max(len(key) for key, _ in summary)
    lines = [f"{key:<{width}}  {value}" for key, value in summary]
    return "\n".join(lines) + "\n\n" + format_table(("op", "kind", "id", "count"), ops, right=(2, 3))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A plain-text table with a header rule; columns listed in `right` are right-aligned (numbers)."""
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows])


COMMANDS.register(
    "graph",
    CommandSpec(
        name="graph",
        help="build a model's computation graph; print its stats or draw it",
        add_arguments=_add_graph_arguments,
        run=_run_graph,
    ),
)


# -- ghn export / ghn predict ------------------------------------------------------------------------------------------
def _add_ghn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ghn", metavar="NAME_OR_PATH",
        help="the GHN: a pretrained name (logah-tiny.digits), a saved directory or .safetensors file, or a URL; "
        "default: the shipped pretrained GHN for the model's task, as ghn.predict(model) picks it",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where the GHN runs (default cpu); weights go through the CPU")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from ghn.export import EXPORT_DTYPES

    parser.add_argument("--dtype", choices=list(EXPORT_DTYPES), help="cast floating tensors (default: float32)")
    parser.add_argument(
        "--format", choices=("auto", "hf", "safetensors"), default="auto",
        help="'hf': a save_pretrained directory; 'safetensors': a state-dict file; 'auto' (default): by --out's suffix "
        "and the model",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="model spec, built on 'meta': 'zoo:gpt2-large', 'hf:llama-tiny'")
    _add_ghn_argument(parser)
    parser.add_argument("--out", required=True, metavar="PATH", help="directory (Hugging Face) or '.safetensors' file")
    _add_output_arguments(parser)


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="model spec: 'zoo:resnet18-cifar', 'hf:gpt2'")
    _add_ghn_argument(parser)
    parser.add_argument("--out", metavar="PATH", help="also export the predicted weights to PATH (as ghn export does)")
    _add_output_arguments(parser)


def _load_ghn_argument(args: argparse.Namespace, model=None):
    """--ghn, or with none the shipped GHN `ghn.predict` would pick for `model` (logged), on --device."""
    from ghn.hub import default_ghn_for, from_pretrained

    if args.ghn is None:
        ghn = default_ghn_for(model).to(args.device)
        print(f"No --ghn given: using the shipped pretrained GHN {ghn.metadata.get('name')!r}, as ghn.predict(model) "
              "picks it for this model's task.", file=sys.stderr)  # fmt: skip
        return ghn
    return from_pretrained(args.ghn, map_location=args.device, progress=True)


def _run_export(args: argparse.Namespace) -> int:
    from ghn import zoo
    from ghn.export import export_predicted

    ghn = _load_ghn_argument(args, None if args.ghn else zoo.create(args.spec, device="meta"))
    path = export_predicted(args.spec, ghn, args.out, format=args.format, dtype=args.dtype, force=args.force)
    print(_export_summary(args.spec, path))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from ghn import zoo
    from ghn.export import export_predicted
    from ghn.predict import predict

    model = zoo.create(args.spec, device="meta")
    hypernet = _load_ghn_argument(args, model)
    if args.out:
        path = export_predicted(model, hypernet, args.out, format=args.format, dtype=args.dtype, force=args.force)
        print(_export_summary(args.spec, path))
    else:
        _, report = predict(model, hypernet, device="cpu", return_report=True)
        print(report)
    return 0


def _export_summary(spec: str, path) -> str:
    from ghn.export import read_export_record

    record = read_export_record(path)
    done = record["prediction"] or {}
    lines = [
        f"Wrote {spec} ({record['format']}, {record['dtype'] or 'float32'}) to {path}",
        f"  predicted {done.get('num_predicted_params', 0):,}/{done.get('num_total_params', 0):,} parameters with "
        f"GHN {(record['ghn'] or {}).get('name')!r}",
    ]
    lines += [f"  not predicted: {name!r} ({why})" for name, why in (done.get("not_predicted") or {}).items()]
    return "\n".join(lines)


COMMANDS.register(
    "export",
    CommandSpec(
        name="export",
        help="predict a model's weights with a GHN and write them as a Hugging Face directory or safetensors file",
        add_arguments=_add_export_arguments,
        run=_run_export,
    ),
)
COMMANDS.register(
    "predict",
    CommandSpec(
        name="predict",
        help="predict a model's weights with a GHN and print what was predicted; --out also exports them",
        add_arguments=_add_predict_arguments,
        run=_run_predict,
    ),
)


# -- ghn eval ---------------------------------------------------------------------------------------------------------
def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ghn", metavar="NAME_OR_PATH",
        help="the GHN: a pretrained name (logah-tiny.digits), a saved directory or .safetensors file, or a URL; "
        "default: the shipped pretrained GHN for --task's kind (with no --task: logah-tiny.digits)",
    )  # fmt: skip
    parser.add_argument("--task", help="task to evaluate on (digits, pydoc, cifar10, ...); default the GHN's own")
    parser.add_argument(
        "--task-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the task loader, e.g. --task-option root=data (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--archs", default="heldout:10", metavar="SPEC[,SPEC...]",
        help="'heldout:N' (held-out draws of the GHN's space), 'train:N' (the first N it trained on), 'outside' "
        "(networks written outside ghn.zoo, ghn.evaluate.outside) or 'outside:NAME', and/or specs like "
        "zoo:resnet18-cifar (default heldout:10)",
    )  # fmt: skip
    parser.add_argument("--space", help="space of 'heldout:N' / 'train:N' when the GHN's metadata names none")
    parser.add_argument("--steps", default="0,100", metavar="N[,N...]", help="fine-tuning step counts (default 0,100)")
    parser.add_argument("--seeds", default=2, type=int, metavar="N", help="number of seeds (default 2)")
    parser.add_argument(
        "--inits", default="ghn,random,orthogonal", metavar="NAME[,NAME...]",
        help="inits to compare (default ghn,random,orthogonal)",
    )  # fmt: skip
    parser.add_argument("--eval-every", type=int, metavar="N", help="score every N steps (default: the task's recipe)")
    parser.add_argument(
        "--lr", type=float, metavar="LR",
        help="fine-tuning learning rate for every init (default: the task's recipe, 1e-3), to see whether an init "
        "wants another one",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="write results.md, results.json and PNG plots into DIR")
    parser.add_argument("--device", default="cpu", help="where the GHN runs and the networks train (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N",
        help="CPU threads per operation (default 1: small networks run fastest on one; 0 keeps torch's default)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="processes running architectures side by side (default: one per usable CPU core on cpu, 1 on cuda)",
    )  # fmt: skip


def _run_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ghn.evaluate import INITS, RECIPES, check_steps, evaluate_ghn, parse_archs
    from ghn.hub import default_ghn_name, from_pretrained

    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError as err:
        raise ConfigError(f"--steps must be comma-separated integers such as 0,50,200, got {args.steps!r}.") from err
    check_steps(steps)
    inits = [name.strip() for name in args.inits.split(",") if name.strip()]
    for name in inits:
        INITS.get(name)
    parse_archs(args.archs)
    options = dict(_key_value(item) for item in args.task_option)
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads!r}.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the command owns its process; tiny convs lose time syncing threads
    if args.ghn is None and ("ghn" in inits or args.task is None):  # the GHN's metadata names the default task
        args.ghn = default_ghn_name(_task_kind(args.task) if args.task else "image", args.task or "digits")
        print(f"No --ghn given: evaluating the shipped pretrained GHN {args.ghn!r}.", file=sys.stderr)
    hypernet = None if args.ghn is None else from_pretrained(args.ghn, map_location=args.device,
                                                             progress=sys.stderr.isatty())  # fmt: skip
    recipe = None
    if args.eval_every is not None or args.lr is not None:
        kind = hypernet.metadata.get("task_kind") if args.task is None else _task_kind(args.task)
        recipe = RECIPES.get(kind or "image")
        recipe = replace(recipe, eval_every=recipe.eval_every if args.eval_every is None else args.eval_every,
                         lr=recipe.lr if args.lr is None else args.lr)  # fmt: skip
    result = evaluate_ghn(
        hypernet, task=args.task, archs=args.archs, steps=steps, seeds=args.seeds, inits=inits, device=args.device,
        progress=sys.stderr.isatty(), recipe=recipe, task_options=options, space=args.space,
        workers=args.workers or _default_workers(args.device),
    )  # fmt: skip
    print(result.to_markdown())
    if args.out:
        files = result.save(args.out)
        print(f"Wrote {', '.join(str(path) for path in files.values())}")
    return 0


def _key_value(item: str) -> tuple[str, object]:
    """'key=value' with the value read as an int, float or bool when it looks like one."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--task-option needs KEY=VALUE, got {item!r}.")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def _default_workers(device: str) -> int:
    """One per CPU core this process may use when training on the CPU; 1 on an accelerator."""
    import os

    if not device.startswith("cpu"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


def _task_kind(name: str) -> str:
    from ghn.data import TASKS

    return TASKS.get(name).kind


COMMANDS.register(
    "eval",
    CommandSpec(
        name="eval",
        help="compare GHN-predicted, random and orthogonal init on unseen architectures, before and after fine-tuning",
        add_arguments=_add_eval_arguments,
        run=_run_eval,
    ),
)


# -- ghn train ------------------------------------------------------------------------------------------------------
def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="train_ghn.py's options: --config configs/NAME.yaml and any --section.field value override",
    )


def _run_train(args: argparse.Namespace) -> int:
    from ghn.train.cli import main as train_main  # Lightning loads only when training

    train_main([option for option in args.options if option != "--debug"])
    return 0


COMMANDS.register(
    "train",
    CommandSpec(
        name="train",
        help="train a GHN (the same entry as train_ghn.py; no options: the embedded digits run)",
        add_arguments=_add_train_arguments,
        run=_run_train,
    ),
)


if __name__ == "__main__":
    sys.exit(main())
