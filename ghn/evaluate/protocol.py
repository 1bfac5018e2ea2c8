"""`evaluate_ghn`: the protocol of issue 5. Does a GHN's init beat random and orthogonal init on architectures it
never saw, with no training and after a few fine-tuning steps, and how many steps does it save?"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ghn._logging import get_logger
from ghn.data import TASKS, ByteTokenizer, TaskData, load_task
from ghn.data.architectures import heldout_configs, make_architecture, task_values, training_sampler
from ghn.data.metrics import logits_of
from ghn.errors import ConfigError
from ghn.evaluate.inits import INITS, InitContext, InitSpec
from ghn.evaluate.measures import (
    MetricSpec,
    add_bits_per_byte,
    filter_similarity,
    parameter_diversity,
    steps_to_target,
)
from ghn.evaluate.outside import OUTSIDE, OutsideModel, outside_names
from ghn.evaluate.recipe import RECIPES, FinetuneRecipe, finetune
from ghn.evaluate.result import ArchInfo, EvalResult, RunResult
from ghn.graph import ComputationGraph, build_graph
from ghn.nn import GHN, load_ghn
from ghn.zoo import FAMILIES, SOURCES, config_hash, create, family_of, lookup_config
from ghn.zoo.space import SPACES, SpaceSpec, adapt_config

__all__ = ["evaluate_ghn", "parse_archs", "check_steps"]

logger = get_logger(__name__)

#: Task loader options a GHN's recorded `task_values` fill in when it is evaluated on the task it was trained on.
_OPTION_OF_VALUE = {"in_channels": "in_channels", "image_size": "image_size", "n_positions": "context"}


@dataclass
class _Target:
    """An architecture ready to run: what the result reports about it, its graph, and how to build it."""

    info: ArchInfo
    graph: ComputationGraph
    build: Callable[[], nn.Module]


def evaluate_ghn(
    ghn: GHN | str | Path | None,
    *,
    task: str | TaskData | None = None,
    archs: str | Sequence[Any] = "heldout:10",
    steps: Sequence[int] = (0, 100),
    seeds: int | Sequence[int] = 2,
    inits: Sequence[str] = ("ghn", "random", "orthogonal"),
    device: str | torch.device = "cpu",
    progress: bool = False,
    recipe: FinetuneRecipe | None = None,
    task_options: Mapping[str, Any] | None = None,
    space: str | None = None,
    workers: int = 1,
) -> EvalResult:
    """Score networks initialized by the GHN, by the family's random init and orthogonally, on a task's test split
    with no training and after fine-tuning, on architectures the GHN did not train on.

    For every architecture, seed and init: build the network with the family's init under a seed derived from the
    architecture and the seed, apply the init (`INITS`), then fine-tune it with the task kind's `FinetuneRecipe`
    (`RECIPES`), scoring it on the test split at step 0, every `recipe.eval_every` steps and at every entry of
    `steps`. Every score uses `ghn.data.metrics.evaluate` (BatchNorm with batch statistics, as in GHN-2). The
    data order depends on the seed only, so all inits see the same batches.

    Steps-to-target of a run is the first scored step at which its primary metric (accuracy for images, loss for
    text) reaches the random init's value after the last step count, for the same architecture and seed; its
    speed-up is random's steps-to-target divided by its own (at least 1). Diversity and filter similarity are
    `ghn.evaluate.parameter_diversity` and `filter_similarity` of each init's parameters before training (first
    seed).

    Example:
        >>> result = evaluate_ghn("runs/ghn", archs="heldout:10", steps=(0, 100), seeds=2)
        >>> print(result.to_markdown()); result.save("eval")

    Args:
        ghn: the GHN, or the directory of a saved one; None when `inits` leaves out 'ghn'.
        task: a registered task name or loaded `TaskData`; default the task in the GHN's metadata.
        archs: 'heldout:N' (the first N held-out architectures of the GHN's space, drawn like its training did),
            'train:N' (the first N architectures it trained on, to tell underfitting from not generalizing),
            'outside' (every network of the outside set for the task's kind, `ghn.evaluate.outside`) or
            'outside:<name>', and/or specs ('zoo:resnet18-cifar', 'hf:...', 'module:pkg.mod:factory') or zoo
            configs, as a list or
            a comma-separated string. Zoo specs and configs are adapted to the task's shapes.
        steps: increasing fine-tuning step counts to report; 0 (no training) is always added.
        seeds: how many seeds (0, 1, ...) or the seeds themselves.
        inits: names in `INITS`.
        device: where the networks train ('cpu', 'cuda', 'cuda:1'); the GHN stays on its own device.
        progress: show a progress bar on stderr (only when stderr is a terminal).
        recipe: fine-tuning recipe; default `RECIPES.get(task kind)`.
        task_options: options of the task loader (`load_task`), over those the GHN's metadata implies.
        space: the space 'heldout:N' and 'train:N' draw from, for a GHN whose metadata has none.
        workers: CPU processes that run architectures side by side (forked, one thread each; results are the same
            as with 1). Use one per core for many small networks; CPU only, and needs the 'fork' start method.

    Returns:
        Every score of every run, with `to_markdown()`, `to_json()`, `plot(dir)` and `save(dir)`.

    Raises:
        UnknownNameError: an unknown task, init, space or architecture spec.
        ConfigError: steps not increasing, bad seeds or device, no task known, an architecture that does not build
            or does not fit the task, or 'ghn' in `inits` without a GHN. All raised before any network trains.
        CheckpointError: `ghn` is a path that holds no valid GHN.
    """
    steps, seeds, init_specs = check_steps(steps), _check_seeds(seeds), _check_inits(inits, ghn)
    device = _check_device(device)
    _check_workers(workers, device)
    parsed = parse_archs(archs)
    if isinstance(ghn, (str, Path)):
        label, ghn = str(ghn), load_ghn(ghn)
    else:
        label = ghn.metadata.get("name", "in-memory GHN") if ghn is not None else "none"
    metadata = ghn.metadata if ghn is not None else {}
    if isinstance(task, TaskData):
        if task_options:
            raise ConfigError("task_options apply when a task is loaded by name; pass task='<name>' or no options.")
    else:
        task = _load_task(task, metadata, task_options, recipe)
    recipe = recipe or RECIPES.get(task.kind)
    num_train = len(task.train)  # type: ignore[arg-type]
    if num_train < recipe.batch_size:
        raise ConfigError(
            f"Task {task.name!r} has {num_train} training samples, fewer than one batch of {recipe.batch_size}. "
            "Use a recipe with a smaller batch_size."
        )
    targets = _build_targets(parsed, task, metadata, space, has_ghn=ghn is not None)
    result = EvalResult(
        ghn=label, task=task.name, kind=task.kind, archs=[t.info for t in targets], inits=tuple(inits),
        seeds=seeds, steps=steps, grid=recipe.grid(steps), recipe=recipe,
        is_byte_level=isinstance(task.tokenizer, ByteTokenizer),
    )
    _run_all(result, targets, init_specs, ghn, task, device, progress, workers)
    return result


# -- checks (all before any work) ---------------------------------------------------------------------------------
def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """`steps` as a tuple starting at 0; raises `ConfigError` unless they are increasing non-negative ints."""
    steps = tuple(steps)
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in steps):
        raise ConfigError(f"Step counts must be non-negative integers, got {steps!r}. Pass e.g. (0, 50, 200).")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(
            f"Step counts must be strictly increasing, got {steps!r}. Pass e.g. {tuple(sorted(set(steps)))!r}."
        )
    return steps if steps[0] == 0 else (0, *steps)


def _check_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"The number of seeds must be at least 1, got {seeds!r}.")
        return tuple(range(seeds))
    values = tuple(seeds)
    if not values or len(set(values)) != len(values) or any(not isinstance(s, int) or s < 0 for s in values):
        raise ConfigError(f"Seeds must be distinct non-negative integers, got {values!r}.")
    return values


def _check_inits(inits: Sequence[str], ghn: Any) -> list[InitSpec]:
    if isinstance(inits, str) or not inits or len(set(inits)) != len(inits):
        raise ConfigError(f"inits must be a non-empty list of distinct names from {INITS.names()}, got {inits!r}.")
    specs = [INITS.get(name) for name in inits]
    if ghn is None and any(spec.uses_ghn for spec in specs):
        raise ConfigError(
            "Init 'ghn' needs a GHN, but ghn is None. Pass a GHN or its path, or leave 'ghn' out of inits."
        )
    return specs


def _check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"Unknown device {str(device)!r}. Use 'cpu', 'cuda' or 'cuda:N'.") from err
    if device.type == "meta" or (device.type == "cuda" and not torch.cuda.is_available()):
        usable = "'cpu' or 'cuda'" if torch.cuda.is_available() else "'cpu' (no CUDA device is available)"
        raise ConfigError(f"Cannot train on device {str(device)!r} here. Use {usable}.")
    return device


def _check_workers(workers: int, device: torch.device) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}.")
    if workers > 1 and device.type != "cpu":
        raise ConfigError(f"workers > 1 runs CPU processes; with device {str(device)!r} use workers=1.")
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError("workers > 1 needs the 'fork' start method, which this platform lacks; use workers=1.")


def parse_archs(archs: str | Sequence[Any]) -> list[tuple[str, Any]]:
    """('heldout', N), ('train', N), ('outside', name or None for all), ('spec', 'zoo:...') or ('config', config)
    for each comma-separated item of `archs`; names are checked against the zoo, the sources and the outside set
    (`ghn.evaluate.outside`), so a typo fails before anything is built.

    Raises:
        ConfigError: an item is malformed ('heldout:x', a spec without a source, not a spec or a config).
        UnknownNameError: an unknown source or zoo name.
    """
    items = [s.strip() for s in archs.split(",") if s.strip()] if isinstance(archs, str) else list(archs)
    if not items:
        raise ConfigError(
            f"No architectures given ({archs!r}). Pass 'heldout:10' or specs such as 'zoo:resnet18-cifar'."
        )
    parsed: list[tuple[str, Any]] = []
    for item in items:
        if is_dataclass(item) and not isinstance(item, type):
            family_of(item)
            parsed.append(("config", item))
        elif item == "outside":
            parsed.append(("outside", None))
        elif isinstance(item, str) and item.startswith("outside:"):
            parsed.append(("outside", OUTSIDE.get(item.partition(":")[2]).name))
        elif isinstance(item, str) and item.startswith(("heldout:", "train:")):
            kind, _, count = item.partition(":")
            if not count.isdigit() or int(count) < 1:
                raise ConfigError(f"Architecture item {item!r} needs a positive count, like '{kind}:10'.")
            parsed.append((kind, int(count)))
        elif isinstance(item, str) and ":" in item:
            source, _, name = item.partition(":")
            SOURCES.get(source)
            if source == "zoo":
                lookup_config(name)
            parsed.append(("spec", item))
        else:
            raise ConfigError(
                f"Architecture item {item!r} is neither 'heldout:N', 'train:N', a '<source>:<name>' spec nor a zoo "
                "config. Write e.g. 'heldout:10' or 'zoo:resnet18-cifar'."
            )
    return parsed


# -- task and architectures ---------------------------------------------------------------------------------------
def _load_task(
    name: str | None, metadata: Mapping[str, Any], options: Mapping[str, Any] | None, recipe: FinetuneRecipe | None
) -> TaskData:
    """The task `name` (default the GHN's), loaded with the shapes the GHN trained with when it is that task."""
    name = name or metadata.get("task")
    if name is None:
        raise ConfigError("No task given and the GHN's metadata names none. Pass task='digits' (or another task).")
    spec = TASKS.get(name)
    known = spec.options()
    implied: dict[str, Any] = {}
    if name == metadata.get("task"):
        values = metadata.get("task_values", {})
        implied = {_OPTION_OF_VALUE[k]: v for k, v in values.items() if _OPTION_OF_VALUE.get(k) in known}
        implied.update(metadata.get("task_options", {}))
    augment = (recipe or RECIPES.get(spec.kind)).augment
    if "augment" in known:
        implied["augment"] = augment
    return load_task(name, **{**implied, **(options or {})})


def _build_targets(
    parsed: list[tuple[str, Any]], task: TaskData, metadata: Mapping[str, Any], space: str | None, *, has_ghn: bool
) -> list[_Target]:
    values = task_values(task)
    targets: list[_Target] = []
    for index, (kind, item) in enumerate(parsed):
        if kind in ("heldout", "train"):
            draw = _heldout if kind == "heldout" else _training
            for i, config in enumerate(draw(item, task, metadata, space)):
                targets.append(_zoo_target(f"{kind}:{i}", adapt_config(config, values)))
        elif kind == "outside":
            names = [item] if item is not None else _available(outside_names(task.kind))
            targets += [_outside_target(OUTSIDE.get(name), task) for name in names]
        elif kind == "config":
            targets.append(_zoo_target(f"config:{index}", adapt_config(item, values)))
        elif item.startswith("zoo:"):
            targets.append(_zoo_target(item, adapt_config(lookup_config(item[4:])[1], values)))
        else:
            targets.append(_spec_target(item))
    for target in targets:
        _check_fits(target, task)
        if not has_ghn:
            target.info = replace(target.info, coverage=None)
    return targets


def _space_of(
    task: TaskData, metadata: Mapping[str, Any], space: str | None, item: str
) -> tuple[SpaceSpec, dict[str, Any], list[str]]:
    """The space a 'heldout:N' / 'train:N' item draws from, the task values the GHN drew with, and the held-out
    hashes it recorded (none unless the GHN trained on this task and space). Held-out draws come from the GHN's
    `heldout_space` where it recorded one (a GHN trained in stages), training draws from its `space`."""
    own = metadata.get("space")
    if item == "heldout":
        own = metadata.get("heldout_space") or own
    name = space or own
    if name is None:
        raise ConfigError(
            f"'{item}:N' needs the GHN's architecture space, but its metadata has none. Pass space='mixed-tiny' "
            "(--space) or name architectures such as 'zoo:resnet18-cifar'."
        )
    spec = SPACES.get(name)
    if spec.task != task.kind:
        raise ConfigError(f"Space {name!r} holds {spec.task} models but task {task.name!r} is {task.kind} data.")
    same_task = metadata.get("task") == task.name and "task_values" in metadata and name == own
    values = metadata["task_values"] if same_task else task_values(task)
    recorded = [row.get("hash") for row in metadata.get("heldout", []) if isinstance(row, Mapping)] if same_task else []
    return spec, values, recorded


def _heldout(num: int, task: TaskData, metadata: Mapping[str, Any], space: str | None) -> list[Any]:
    """The first `num` held-out configs of the GHN's space, drawn with the task values and seed it trained with."""
    spec, values, recorded = _space_of(task, metadata, space, "heldout")
    configs = heldout_configs(spec, values, num, seed=int(metadata.get("seed", 0)))
    drawn = [config_hash(c) for c in configs[: len(recorded)]]
    if recorded and drawn != recorded[: len(drawn)]:
        logger.warning(
            "The held-out architectures drawn from %r differ from those the GHN recorded, so some may have been "
            "trained on (was it trained with a seed other than the metadata's 'seed', default 0?). Pass "
            "architectures by spec to be sure.", spec.name,
        )
    return configs


def _training(num: int, task: TaskData, metadata: Mapping[str, Any], space: str | None) -> list[Any]:
    """The first `num` distinct training configs of the GHN's space, drawn as its training drew them (seed, task
    values, its recorded held-out architectures left out): what the GHN fit, to tell underfitting from not
    generalizing."""
    spec, values, recorded = _space_of(task, metadata, space, "train")
    if not recorded:
        raise ConfigError(
            f"'train:N' draws the GHN's training architectures of space {spec.name!r} past its held-out ones, but "
            "its metadata records none for this task and space (a GHN saved by train_ghn.py records them). Use "
            "'heldout:N' or name architectures such as 'zoo:resnet18-cifar'."
        )
    return training_sampler(spec, values, seed=int(metadata.get("seed", 0)), exclude=recorded).distinct(num)


def _zoo_target(name: str, config: Any) -> _Target:
    arch = make_architecture(config)
    spec = FAMILIES.get(arch.family)
    info = ArchInfo(name, arch.family, arch.hash, arch.graph.num_params, arch.graph.coverage().fraction)
    return _Target(info, arch.graph, lambda: spec.build(config))


def _available(names: list[str]) -> list[str]:
    """The outside networks whose optional package is installed; the others are logged and left out."""
    missing = [n for n in names if _missing_package(OUTSIDE.get(n))]
    if missing:
        logger.warning("Leaving out outside networks %s: they need a package that is not installed.", missing)
    return [n for n in names if n not in missing]


def _missing_package(entry: OutsideModel) -> bool:
    return entry.needs is not None and importlib.util.find_spec(entry.needs) is None


def _outside_target(entry: OutsideModel, task: TaskData) -> _Target:
    """A network of the outside set, built for the task's shapes; its graph is traced on a real build (its own init
    values give the scales) with an input of the task's shape."""
    if entry.kind != task.kind:
        raise ConfigError(
            f"Outside network {entry.name!r} is a {entry.kind} model but task {task.name!r} is {task.kind} data."
        )
    if _missing_package(entry):
        raise ConfigError(f"Outside network {entry.name!r} needs {entry.needs!r}: pip install {entry.needs}.")
    values = task_values(task)
    model = entry.build(values)
    dtype = torch.float32 if task.kind == "image" else torch.long
    graph = build_graph(model, torch.zeros((1, *task.input_shape), dtype=dtype))
    key = hashlib.sha256(f"outside:{entry.name}:{sorted(values.items())}".encode()).hexdigest()[:16]
    info = ArchInfo(f"outside:{entry.name}", "outside", key, graph.num_params, graph.coverage().fraction)
    return _Target(info, graph, lambda: entry.build(values))


def _spec_target(spec: str) -> _Target:
    model = create(spec, device="meta")
    graph = build_graph(model)
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    info = ArchInfo(spec, spec.partition(":")[0], key, graph.num_params, graph.coverage().fraction)
    return _Target(info, graph, lambda: create(spec, device=torch.get_default_device()))


def _check_fits(target: _Target, task: TaskData) -> None:
    """A forward on `meta` with a batch of the task's inputs must give logits over the task's outputs."""
    with torch.device("meta"):
        model = target.build().to("meta")  # a spec on meta keeps real buffers (ghn.empty_weights); run wholly on meta
    dtype = torch.float32 if task.kind == "image" else torch.long
    x = torch.zeros((2, *task.input_shape), dtype=dtype, device="meta")
    try:
        width = logits_of(model(x)).shape[-1]
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ConfigError(
            f"Architecture {target.info.name!r} does not run on {task.name!r} inputs of shape {task.input_shape} "
            f"({err}). Use a spec built for this task, or a zoo spec (those are adapted)."
        ) from err
    if width != task.num_outputs:
        raise ConfigError(
            f"Architecture {target.info.name!r} outputs {width} logits but task {task.name!r} has {task.num_outputs} "
            "classes/tokens. Build it with the task's output size, or use a zoo spec (those are adapted)."
        )


# -- the runs -------------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    """Everything the runs of one evaluation share; forked worker processes inherit it (nothing is pickled)."""

    result: EvalResult
    targets: list[_Target]
    contexts: list[InitContext]
    inits: list[InitSpec]
    task: TaskData
    eval_batches: list
    device: torch.device


_JOB: _Job | None = None  # set only while a worker pool runs, for the forked workers to read


def _run_all(
    result: EvalResult, targets: list[_Target], inits: list[InitSpec], ghn: GHN | None, task: TaskData,
    device: torch.device, progress: bool, workers: int,
) -> None:
    """Run every (architecture, seed, init), in this process or in `workers` forked processes (one architecture
    at a time each, one thread each); results come back in architecture order either way, so they are identical."""
    from tqdm.auto import tqdm

    global _JOB
    loader = DataLoader(task.test, batch_size=result.recipe.eval_batch_size, shuffle=False)
    eval_batches = [(x.to(device), y.to(device)) for x, y in loader]
    contexts = [InitContext(t.graph, ghn) for t in targets]
    job = _Job(result, targets, contexts, inits, task, eval_batches, device)
    snapshots: dict[str, list[dict[str, torch.Tensor]]] = {spec.name: [] for spec in inits}
    total = len(targets) * len(inits) * len(result.seeds)
    with tqdm(total=total, desc="ghn eval", unit="run", disable=not (progress and sys.stderr.isatty())) as bar:
        if workers > 1:
            if any(spec.uses_ghn for spec in inits):
                for context in contexts:  # predict here once, not in every worker
                    context.predicted()
            _JOB = job
            try:
                with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads,
                                                              initargs=(1,)) as pool:
                    outputs = pool.imap(_worker_arch, range(len(targets)))
                    for runs, snapshot in outputs:
                        _collect(result, snapshots, runs, snapshot, bar)
            finally:
                _JOB = None
        else:
            for a in range(len(targets)):
                runs, snapshot = _run_arch(job, a, bar)
                _collect(result, snapshots, runs, snapshot, None)
    _fill_targets(result, result.metrics[0])
    result.diversity = {name: parameter_diversity(params) for name, params in snapshots.items()}
    result.similarity = {name: filter_similarity(params) for name, params in snapshots.items()}


def _worker_arch(index: int) -> tuple[list[RunResult], dict[str, dict[str, torch.Tensor]]]:
    assert _JOB is not None, "worker started without a job"
    return _run_arch(_JOB, index, None)


def _collect(result: EvalResult, snapshots: dict, runs: list[RunResult], snapshot: dict, bar) -> None:
    result.runs.extend(runs)
    for name, params in snapshot.items():
        snapshots[name].append(params)
    if bar is not None:
        bar.update(len(runs))


def _run_arch(job: _Job, a: int, bar) -> tuple[list[RunResult], dict[str, dict[str, torch.Tensor]]]:
    """Every (seed, init) run of architecture `a`, and each init's parameters of 2+ dims before training (first
    seed), for the diversity measures."""
    target, context, result = job.targets[a], job.contexts[a], job.result
    runs: list[RunResult] = []
    snapshot: dict[str, dict[str, torch.Tensor]] = {}
    for seed in result.seeds:
        for spec in job.inits:
            if bar is not None:
                bar.set_postfix_str(f"{target.info.name} {spec.name} seed {seed}")
            start = time.perf_counter()
            model = _initialized(target, spec, context, seed, job.device)
            if seed == result.seeds[0]:
                snapshot[spec.name] = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.dim() >= 2}
            scores = _finetune(model, job.task, job.eval_batches, result, seed, job.device)
            runs.append(RunResult(a, spec.name, seed, scores, seconds=time.perf_counter() - start))
            if bar is not None:
                bar.update()
    info = target.info
    logger.info("Evaluated %s (%s, %d parameters)", info.name, info.family, info.num_params)
    return runs, snapshot


def _initialized(target: _Target, spec: InitSpec, context: InitContext, seed: int, device: torch.device) -> nn.Module:
    """A fresh network with the family's init under a seed of (architecture, seed), then `spec` applied; built on
    CPU so the same seed gives the same network on every device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((int(target.info.hash[:8], 16) + 1_000_003 * seed) % 2**63)
        with torch.device("cpu"):
            model = target.build()
        spec.apply(model, context)
    return model.to(device)


def _finetune(
    model: nn.Module, task: TaskData, eval_batches: list, result: EvalResult, seed: int, device: torch.device
) -> list[dict[str, float]]:
    """`finetune` with dropout and augmentation seeded by `seed` (global RNG forked, so the caller's is kept)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        scores = finetune(model, task.train, eval_batches, recipe=result.recipe, grid=result.grid, seed=seed)
    return [add_bits_per_byte(s) for s in scores] if result.is_byte_level else scores


def _fill_targets(result: EvalResult, metric: MetricSpec) -> None:
    """Steps-to-target and speed-up of every run, against the random init of the same architecture and seed."""
    if "random" not in result.inits or result.steps[-1] == 0:
        return
    reference = {(r.arch, r.seed): r for r in result.runs if r.init == "random"}
    last = result.grid.index(result.steps[-1])
    for run in result.runs:
        target = reference[(run.arch, run.seed)].scores[last][metric.key]
        values = [s[metric.key] for s in run.scores]
        run.steps_to_target = steps_to_target(result.grid, values, target, metric)
    for run in result.runs:
        own, random_steps = run.steps_to_target, reference[(run.arch, run.seed)].steps_to_target
        if own is not None and random_steps:
            run.speedup = random_steps / max(own, 1)
