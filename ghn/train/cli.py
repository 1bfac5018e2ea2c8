"""The training entry point behind `train_ghn.py` and `ghn train`: LightningCLI over `GHNModule` and
`GHNDataModule`, so every field of a YAML config can be overridden on the command line
(`--model.optim.lr 1e-3`, `--data.space vits`, `--trainer.max_steps 100`).

With no arguments it runs the embedded default: logah-tiny on scikit-learn's digits over the mixed CNN/ResNet/ViT
space, then writes the GHN directory and prints held-out accuracy with no training, GHN-predicted vs random init.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from ghn._io import atomic_write_text
from ghn.data.architectures import task_values
from ghn.errors import GHNError
from ghn.train.datamodule import GHNDataModule
from ghn.train.module import GHNModule
from ghn.train.report import heldout_rows, markdown_table

__all__ = ["main", "run", "build_cli", "trainer_defaults"]

#: Exit code for ghn errors, as the `ghn` command line uses (argparse and jsonargparse also use 2).
EXIT_ERROR = 2


def trainer_defaults() -> dict[str, Any]:
    """Trainer settings of the embedded default run (fresh callback objects on every call)."""
    return {
        "max_steps": 1000,
        "default_root_dir": "runs/digits_logah_tiny",
        "log_every_n_steps": 10,
        "gradient_clip_val": 1.0,
        "num_sanity_val_steps": 0,
        # Validate on held-out architectures every 100 steps, whatever an epoch is (data and architecture loaders
        # of different lengths are cycled together).
        "check_val_every_n_epoch": None,
        "val_check_interval": 100,
        "accelerator": "auto",
        "devices": 1,
        "callbacks": [
            ModelCheckpoint(every_n_train_steps=500, save_last=True, save_top_k=-1, filename="step{step}"),
            LearningRateMonitor(logging_interval="step"),
        ],
    }


class _CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="Resume from this Lightning checkpoint.")
        parser.add_argument(
            "--out_dir",
            type=str | None,
            default=None,
            help="Where the final GHN directory (config.json + model.safetensors) goes; default <log dir>/ghn.",
        )
        parser.add_argument(
            "--final_eval", type=bool, default=True, help="Print held-out test metrics (GHN vs random init) at the end."
        )


def build_cli(args: list[str] | None = None) -> LightningCLI:
    """Parse a config and overrides into a trainer, a `GHNModule` and a `GHNDataModule`, without training."""
    with warnings.catch_warnings():
        # `args` is how the entry passes sys.argv[1:] (possibly with the default run's flags): not a mistake.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return _CLI(
            GHNModule,
            GHNDataModule,
            run=False,
            args=args,
            trainer_defaults=trainer_defaults(),
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": __doc__.split("\n\n")[0]},
        )


def default_run_args() -> list[str]:
    """What the embedded default run (no arguments) adds on a machine without CUDA: two gloo DDP processes of one
    thread each when there are two cores or more. A step of CPU-sized networks is too small to keep two threads
    busy: two processes of 2 architectures each train the same 4 per step 1.4x faster than one process of 4."""
    import torch

    if torch.cuda.is_available() or (os.cpu_count() or 1) < 2:
        return []
    # Two architectures per process keep the meta-batch of the single-process run (4 per optimizer step).
    return ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--data.meta_batch_size", "2"]  # fmt: skip


def run(argv: list[str] | None = None, *, prog: str = "train_ghn.py") -> int:
    """The script entry: `main`, with a ghn error (bad task, space, option) printed as one line and exit code 2;
    `--debug` anywhere in `argv` shows the full traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        main([arg for arg in argv if arg != "--debug"])
    except GHNError as err:
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Train a GHN from a YAML config and command-line overrides; returns the final summary. No arguments run
    the embedded default (see `default_run_args`). Every config and data error is raised here, in the launching
    process, before DDP spawns any other."""
    args = sys.argv[1:] if args is None else list(args)
    cli = build_cli(args or default_run_args())
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    datamodule.load_task()
    threads = torch.get_num_threads()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cli.config.ckpt_path)
    summary: dict[str, Any] = {"steps": trainer.global_step}
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast under DDP: every rank asks
    if not trainer.is_global_zero:
        _leave_process_group()
        return summary
    torch.set_num_threads(threads)  # CPU DDP split the cores between the ranks; rank 0 now evaluates alone
    out_dir = Path(cli.config.out_dir) if cli.config.out_dir else log_dir / "ghn"
    data = datamodule.config
    save = functools.partial(
        model.ghn.save_pretrained,
        out_dir,
        task=data.task,
        space=data.space,
        heldout_space=datamodule.heldout_space,
        steps=trainer.global_step,
        task_kind=datamodule.task.kind,
        task_values=task_values(datamodule.task),
        **({"init_from": model.init_from} if model.init_from is not None else {}),
        **({"replay_archs": data.replay_archs} if data.replay_archs else {}),
    )
    save()  # before the held-out evaluation, so a process killed during it keeps the trained GHN
    if cli.config.final_eval:
        rows = heldout_rows(model, datamodule, split="test")
        summary["heldout"] = rows
        table = markdown_table(rows, kind=datamodule.task.kind)
        print(f"\nHeld-out architectures on the {data.task} test split, no training:\n\n{table}\n")
        save(heldout=rows)
        atomic_write_text(out_dir / "heldout.json", json.dumps(rows, indent=2) + "\n")
    _leave_process_group()
    print(f"GHN written to {out_dir} (load it with ghn.GHN.load({str(out_dir)!r})); logs in {log_dir}")
    return summary


def _leave_process_group() -> None:
    """Tear down this process's DDP group before interpreter shutdown does: left to shutdown, gloo once aborted a
    finished rank (exit -6), and Lightning's launcher then killed rank 0 before it had written the GHN."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
