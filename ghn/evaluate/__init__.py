"""The evaluation protocol (issue 5): do a GHN's predicted parameters help, against random and orthogonal init, on
architectures it never saw? Scores with no training and after fine-tuning, steps-to-target and parameter diversity.

    >>> from ghn.evaluate import evaluate_ghn
    >>> result = evaluate_ghn("runs/digits_logah_tiny/lightning_logs/version_0/ghn", steps=(0, 100), seeds=2)
    >>> print(result.to_markdown())

Recipes are in `ghn/evaluate/recipe.py`, inits in `inits.py`, the measures in `measures.py`.
"""

from ghn.evaluate.inits import INITS, InitContext, InitSpec, orthogonal_init
from ghn.evaluate.measures import METRICS, MetricSpec, filter_similarity, parameter_diversity, steps_to_target
from ghn.evaluate.protocol import check_steps, evaluate_ghn, parse_archs
from ghn.evaluate.recipe import RECIPES, FinetuneRecipe, finetune
from ghn.evaluate.result import ArchInfo, EvalResult, RunResult, markdown_table

__all__ = [
    "INITS",
    "METRICS",
    "RECIPES",
    "ArchInfo",
    "EvalResult",
    "FinetuneRecipe",
    "InitContext",
    "InitSpec",
    "MetricSpec",
    "RunResult",
    "check_steps",
    "evaluate_ghn",
    "filter_similarity",
    "finetune",
    "markdown_table",
    "orthogonal_init",
    "parameter_diversity",
    "parse_archs",
    "steps_to_target",
]
