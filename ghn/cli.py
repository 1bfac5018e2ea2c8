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
def _add_ghn_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    default = "" if required else "; default: the shipped pretrained GHN for the model's task"
    parser.add_argument(
        "--ghn", required=required, metavar="NAME_OR_PATH",
        help=f"the GHN: a pretrained name (logah-tiny.digits), a saved directory or .safetensors file, or a URL{default}",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where the GHN runs (default cpu); weights are written from the CPU")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from ghn.export import EXPORT_DTYPES

    parser.add_argument("--dtype", choices=list(EXPORT_DTYPES), help="cast floating tensors (default: as predicted, float32)")
    parser.add_argument(
        "--format", choices=("auto", "hf", "safetensors"), default="auto",
        help="'hf': a save_pretrained directory; 'safetensors': a state-dict file; 'auto' (default): by --out's suffix "
        "and the model",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="model spec, built on 'meta': 'zoo:gpt2-large', 'hf:llama-tiny'")
    _add_ghn_argument(parser, required=True)
    parser.add_argument("--out", required=True, metavar="PATH", help="directory (Hugging Face) or '.safetensors' file to write")
    _add_output_arguments(parser)


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="model spec: 'zoo:resnet18-cifar', 'hf:gpt2'")
    _add_ghn_argument(parser, required=False)
    parser.add_argument("--out", metavar="PATH", help="also export the predicted weights to PATH (as ghn export does)")
    _add_output_arguments(parser)


def _load_ghn_argument(args: argparse.Namespace):
    from ghn.hub import from_pretrained

    return from_pretrained(args.ghn, map_location=args.device, progress=True)


def _run_export(args: argparse.Namespace) -> int:
    from ghn.export import export_predicted

    path = export_predicted(
        args.spec, _load_ghn_argument(args), args.out, format=args.format, dtype=args.dtype, force=args.force
    )
    print(_export_summary(args.spec, path))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from ghn import zoo
    from ghn.export import export_predicted
    from ghn.hub import default_ghn_for
    from ghn.predict import predict

    model = zoo.create(args.spec, device="meta")
    hypernet = _load_ghn_argument(args) if args.ghn else default_ghn_for(model).to(args.device)
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

if __name__ == "__main__":
    sys.exit(main())
