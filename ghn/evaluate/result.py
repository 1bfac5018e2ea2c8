"""`EvalResult`: every number an evaluation measured, as a Markdown table, JSON and PNG curves."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghn.evaluate.measures import METRICS, MetricSpec, is_better, is_clearly_behind
from ghn.evaluate.recipe import FinetuneRecipe

__all__ = ["ArchInfo", "RunResult", "EvalResult", "markdown_table"]


@dataclass(frozen=True)
class ArchInfo:
    """One evaluated architecture."""

    name: str
    """'heldout:<i>' / 'train:<i>' for the i-th held-out / training draw, else the spec it was named by."""
    family: str
    hash: str
    num_params: int
    coverage: float | None = None
    """Fraction of its trainable parameters the GHN predicts (None without a GHN)."""


@dataclass
class RunResult:
    """One (architecture, init, seed) run: scores on the evaluation grid and how fast it reached the target."""

    arch: int
    """Index into `EvalResult.archs`."""
    init: str
    seed: int
    scores: list[dict[str, float]]
    """One {metric: value} per step count of `EvalResult.grid`."""
    steps_to_target: int | None = None
    """First grid step reaching the random init's primary metric after the last step (same arch and seed)."""
    speedup: float | None = None
    """random init's steps-to-target / max(this run's, 1); None when either did not reach it or random needed 0."""
    seconds: float = 0.0


@dataclass
class EvalResult:
    """The outcome of `evaluate_ghn`; `runs` hold every number, the methods summarize them."""

    ghn: str
    task: str
    kind: str
    archs: list[ArchInfo]
    inits: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: tuple[int, ...]
    grid: tuple[int, ...]
    recipe: FinetuneRecipe
    runs: list[RunResult] = field(default_factory=list)
    diversity: dict[str, float | None] = field(default_factory=dict)
    """`parameter_diversity` of each init's parameters with no training (first seed)."""
    similarity: dict[str, float | None] = field(default_factory=dict)
    """`filter_similarity` of each init's parameters with no training (first seed)."""
    is_byte_level: bool = False

    # -- access ---------------------------------------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """Reported metrics; the first is the primary one. Bits per byte only for byte-level text."""
        return tuple(m for m in METRICS[self.kind] if m.key != "bpb" or self.is_byte_level)

    def run(self, arch: int, init: str, seed: int) -> RunResult:
        for run in self.runs:
            if (run.arch, run.init, run.seed) == (arch, init, seed):
                return run
        raise KeyError((arch, init, seed))

    def values(self, arch: int, init: str, metric: str, step: int) -> list[float]:
        """The metric after `step` steps, one value per seed."""
        index = self.grid.index(step)
        return [self.run(arch, init, seed).scores[index][metric] for seed in self.seeds]

    def averaged(self, init: str, metric: str, step: int) -> list[float]:
        """The metric after `step` steps averaged over architectures, one value per seed."""
        index = self.grid.index(step)
        return [
            statistics.fmean(self.run(a, init, seed).scores[index][metric] for a in range(len(self.archs)))
            for seed in self.seeds
        ]

    def versus(self, init: str = "ghn", reference: str = "random", archs: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """`init` against `reference` on the primary metric, one dict per reported step: 'step', 'init' and
        'reference' (mean over `archs` and seeds), 'gap' and 'gap_se' (how much better `init` is on that mean,
        positive: better, and its standard error over seeds, paired on the same batches), 'wins' (architectures
        where `init`, averaged over seeds, is at least as good), 'behind' (architectures where it is worse by more
        than `BEHIND_SE` standard errors of the paired gap, `paired_gap`) and 'num_archs'. The floor a GHN must
        meet: at least as good on the mean and on most archs."""
        primary = self.metrics[0]
        archs = list(range(len(self.archs))) if archs is None else list(archs)
        rows = []
        for step in self.steps:
            ours = [statistics.fmean(self.values(a, init, primary.key, step)) for a in archs]
            theirs = [statistics.fmean(self.values(a, reference, primary.key, step)) for a in archs]
            wins = sum(is_better(o, t, primary) for o, t in zip(ours, theirs))
            behind = sum(is_clearly_behind(*self.paired_gap(a, init, reference, step)) for a in archs)
            gap, gap_se = _mean_and_stderr(self._seed_gaps(archs, init, reference, step))
            rows.append({"step": step, "init": statistics.fmean(ours), "reference": statistics.fmean(theirs),
                         "gap": gap, "gap_se": gap_se, "wins": wins, "behind": behind, "num_archs": len(archs)})  # fmt: skip
        return rows

    def _seed_gaps(self, archs: Sequence[int], init: str, reference: str, step: int) -> list[float]:
        """Per seed, the mean over `archs` of how much better `init` is than `reference` (primary metric)."""
        primary, index = self.metrics[0], self.grid.index(step)
        sign = 1.0 if primary.higher_is_better else -1.0

        def score(arch: int, which: str, seed: int) -> float:
            return self.run(arch, which, seed).scores[index][primary.key]

        return [statistics.fmean(sign * (score(a, init, s) - score(a, reference, s)) for a in archs) for s in self.seeds]

    def paired_gap(self, arch: int, init: str, reference: str, step: int) -> tuple[float, float]:
        """How much better `init` is than `reference` on the primary metric after `step` steps (positive: better),
        as (mean over seeds, its standard error); each seed pairs the two inits on the same batches, so the gap's
        spread is the inits' and not the batches'. NaN mean when `init` diverged on a seed (+inf when only the
        reference did); SE NaN with one seed."""
        if any(math.isnan(v) for v in self.values(arch, init, self.metrics[0].key, step)):
            return math.nan, math.nan
        gaps = self._seed_gaps([arch], init, reference, step)
        if any(math.isnan(g) for g in gaps):  # the reference diverged where `init` did not
            return math.inf, math.nan
        return _mean_and_stderr(gaps)

    # -- tables ---------------------------------------------------------------------------------------------------
    def column(self, step: int, metric: MetricSpec) -> str:
        """Column name of a metric after `step` steps: 'no training: acc (%)', 'after 100 steps: loss'."""
        return f"{'no training' if step == 0 else f'after {step} steps'}: {metric.label}"

    def summary(self) -> list[dict[str, Any]]:
        """The numbers of the averaged table, one dict per init: 'init'; per reported step and metric, the per-seed
        means over architectures ('scores': {column: [value per seed]}, unscaled); 'steps_to_target' (steps of the
        runs that reach the target), 'num_runs', 'speedup' (geometric mean, None if no run reaches the target),
        'diversity' and 'similarity'."""
        rows = []
        for init in self.inits:
            runs = [r for r in self.runs if r.init == init]
            speedups = [r.speedup for r in runs if r.speedup is not None]
            rows.append({
                "init": init,
                "scores": {self.column(s, m): self.averaged(init, m.key, s) for s in self.steps for m in self.metrics},
                "steps_to_target": [r.steps_to_target for r in runs if r.steps_to_target is not None],
                "num_runs": len(runs),
                "speedup": math.exp(statistics.fmean(map(math.log, speedups))) if speedups else None,
                "diversity": self.diversity.get(init),
                "similarity": self.similarity.get(init),
            })  # fmt: skip
        return rows

    def summary_table(self) -> tuple[list[str], list[list[str]]]:
        """(headers, rows) of the table averaged over architectures, one row per init (mean ± std over seeds)."""
        columns = [(self.column(s, m), m) for s in self.steps for m in self.metrics]
        has_target = "random" in self.inits and self.steps[-1] > 0
        headers = ["init"] + [name for name, _ in columns] + (["steps to target", "speed-up"] if has_target else [])
        headers += ["diversity", "filter |cos|"]
        rows = []
        for item in self.summary():
            row = [item["init"]] + [_mean_std(item["scores"][name], m.scale) for name, m in columns]
            if has_target:
                row.append(_reached(item["steps_to_target"], item["num_runs"]))
                row.append("n/a" if item["speedup"] is None else f"{item['speedup']:.2f}x")
            row += ["n/a" if item[key] is None else f"{item[key]:.3f}" for key in ("diversity", "similarity")]
            rows.append(row)
        return headers, rows

    def arch_table(self) -> tuple[list[str], list[list[str]]]:
        """(headers, rows) per architecture and init, with the primary metric (mean ± std over seeds)."""
        primary = self.metrics[0]
        headers = ["architecture", "family", "init", "params"] + [self.column(s, primary) for s in self.steps]
        has_target = "random" in self.inits and self.steps[-1] > 0
        headers += ["steps to target"] if has_target else []
        rows = []
        for a, arch in enumerate(self.archs):
            for init in self.inits:
                row = [arch.name, arch.family, init, f"{arch.num_params:,}"]
                row += [_mean_std(self.values(a, init, primary.key, s), primary.scale) for s in self.steps]
                if has_target:
                    found = [self.run(a, init, seed).steps_to_target for seed in self.seeds]
                    row.append(_reached([f for f in found if f is not None], len(found)))
                rows.append(row)
        return headers, rows

    def to_markdown(self) -> str:
        """The averaged table, then the per-architecture table, with what the columns mean."""
        primary, last = self.metrics[0], self.steps[-1]
        seeds = ", ".join(map(str, self.seeds))
        coverage = [a.coverage for a in self.archs if a.coverage is not None]
        lines = [
            f"GHN `{self.ghn}` on `{self.task}` (test split): {len(self.archs)} architectures, seeds {seeds}; "
            f"mean ± std over seeds. 'no training' is the network as initialized; 'after N steps' after N "
            f"fine-tuning steps ({_recipe_text(self.recipe)}).",
        ]
        if "random" in self.inits and last > 0:
            lines.append(
                f"Steps to target: the first step (scored at {_grid_text(self.grid)}) at which a run reaches "
                f"the random init's {primary.label} after {last} steps, same architecture and seed; mean over the "
                f"runs that reach it (how many in brackets). Speed-up: random's steps / the init's steps, geometric "
                f"mean over runs."
            )
        lines.append(
            "Diversity: mean 1 - |cos| between same-shape weight tensors of different architectures (higher is more "
            "diverse). Filter |cos|: mean |cos| between the rows (output units) of each weight tensor (near 1 means "
            "collapsed units, which fine-tune slowly). Both with no training, first seed."
        )
        if coverage:
            lines.append(f"The GHN predicts {100 * min(coverage):.1f}-{100 * max(coverage):.1f}% of the parameters.")
        summary = markdown_table(*self.summary_table())
        per_arch = markdown_table(*self.arch_table(), num_text_columns=3)
        return "\n".join(lines) + f"\n\n{summary}\n\nPer architecture ({primary.label}):\n\n{per_arch}\n"

    # -- files ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (NaN becomes None)."""
        data = {
            "ghn": self.ghn,
            "task": self.task,
            "kind": self.kind,
            "metrics": [m.key for m in self.metrics],
            "inits": list(self.inits),
            "seeds": list(self.seeds),
            "steps": list(self.steps),
            "grid": list(self.grid),
            "recipe": dataclasses.asdict(self.recipe),
            "archs": [dataclasses.asdict(a) for a in self.archs],
            "diversity": self.diversity,
            "similarity": self.similarity,
            "runs": [dataclasses.asdict(r) for r in self.runs],
        }
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def plot(self, directory: str | Path) -> list[Path]:
        """One PNG per metric of the metric against fine-tuning steps, a line per init (mean over architectures,
        shaded ± std over seeds), plus '<primary>_per_arch.png' with one panel per architecture."""
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for metric in self.metrics:
            figure = Figure(figsize=(5.5, 4), layout="constrained")
            self._draw(figure.add_subplot(), metric, range(len(self.archs)))
            figure.suptitle(f"{self.task}: {len(self.archs)} architectures, {len(self.seeds)} seeds")
            paths.append(_save(figure, directory / f"{metric.key}.png"))
        primary, num = self.metrics[0], len(self.archs)
        cols = min(num, 4)
        figure = Figure(figsize=(3.2 * cols, 2.6 * math.ceil(num / cols)), layout="constrained")
        for a, arch in enumerate(self.archs):
            axes = figure.add_subplot(math.ceil(num / cols), cols, a + 1)
            self._draw(axes, primary, [a], legend=a == 0)
            axes.set_title(f"{arch.name} ({arch.family})", fontsize=8)
        paths.append(_save(figure, directory / f"{primary.key}_per_arch.png"))
        return paths

    def _draw(self, axes, metric: MetricSpec, archs: Sequence[int], *, legend: bool = True) -> None:
        for init in self.inits:
            per_seed = [  # (S, len(grid)): mean over `archs` for each seed
                [statistics.fmean(self.run(a, init, s).scores[i][metric.key] for a in archs) * metric.scale
                 for i in range(len(self.grid))]
                for s in self.seeds
            ]
            mean = [statistics.fmean(v) for v in zip(*per_seed)]
            std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*per_seed)]
            axes.plot(self.grid, mean, marker=".", label=init)
            axes.fill_between(self.grid, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              alpha=0.2)
        axes.set_xlabel("fine-tuning steps")
        axes.set_ylabel(metric.label)
        axes.grid(alpha=0.3)
        if legend:
            axes.legend(fontsize=8)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write 'results.md', 'results.json' and the plots into `directory`; returns {kind: path}."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "results.md").write_text(self.to_markdown())
        (directory / "results.json").write_text(self.to_json())
        files = {"markdown": directory / "results.md", "json": directory / "results.json"}
        files.update({path.stem: path for path in self.plot(directory)})
        return files


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, num_text_columns: int = 1) -> str:
    """A GitHub Markdown table; the first `num_text_columns` columns are left-aligned, the others (numbers) right."""
    rule = ["---"] * num_text_columns + ["---:"] * (len(headers) - num_text_columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _mean_std(values: Sequence[float], scale: float) -> str:
    values = [v * scale for v in values]
    if any(math.isnan(v) for v in values):
        return "diverged"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with one value; both NaN when a value is)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    if len(values) < 2:
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def _reached(steps: Sequence[int], total: int) -> str:
    if not steps:
        return f"not reached (0/{total})"
    mean = f"{statistics.fmean(steps):.0f}"
    return mean if len(steps) == total else f"{mean} ({len(steps)}/{total})"


def _grid_text(grid: Sequence[int]) -> str:
    if len(grid) <= 8:
        return f"steps {', '.join(map(str, grid))}"
    return f"steps {grid[0]}, {grid[1]}, {grid[2]}, ..., {grid[-1]}"


def _recipe_text(recipe: FinetuneRecipe) -> str:
    clip = f", grad clip {recipe.grad_clip}" if recipe.grad_clip else ""
    augment = "with" if recipe.augment else "no"
    return (
        f"{recipe.optimizer} lr {recipe.lr:g} constant, weight decay {recipe.weight_decay:g}, batch "
        f"{recipe.batch_size}{clip}, {augment} augmentation"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path
