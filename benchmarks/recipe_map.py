"""Named recipes trained once each on a study's data and teacher: where its front lies.

A map of the search space beside a search: each recipe is the study's defaults with a
few overrides, trained once by the engine's ``run_trial`` (the training a search trial
runs, with the study's search seed, on this process's threads), and scored by accuracy,
sigma and the feasible hypervolume it would hold alone from (0.5, kappa). The default
recipes are those the demo's README discusses: the TinyBERT defaults, Hinton's start,
prediction-only soft cross-entropy at alpha 0 over temperatures and learning rates, a
hard-label share, and two-stage recipes whose intermediate weights differ by a common
factor (AdamW with clipped gradients trains the same student when every step is clipped).

    python benchmarks/recipe_map.py [--study demo] [--workdir DIR] [--recipe NAME:KEY=VALUE,KEY=VALUE ...]

The last line is one JSON object: per recipe its overrides, accuracy, sigma, feasibility,
hypervolume alone and seconds, and the hypervolume of all recipes' feasible front.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import json_line, reference_kappa

from kd_search.cli._options import parse_overrides
from kd_search.engine.compatibility import check_models
from kd_search.engine.hyperparameters import with_overrides
from kd_search.engine.setup import prepare
from kd_search.engine.trial import run_trial
from kd_search.errors import StudyFileError
from kd_search.service.pareto import hypervolume
from kd_search.study_file import load_study

PREDICTION_ONLY = "epochs_intermediate=0,alpha=0"
RECIPES = [
    "tinybert-defaults:",
    "hinton-start:epochs_intermediate=0,prediction_loss=kl,temperature=4,alpha=0.1,learning_rate_prediction=1.5e-4",
    f"prediction-T1-lr1e-4:{PREDICTION_ONLY},temperature=1,learning_rate_prediction=1e-4",
    f"prediction-T1-lr3e-4:{PREDICTION_ONLY},temperature=1,learning_rate_prediction=3e-4",
    f"prediction-T1.5-lr3e-4:{PREDICTION_ONLY},temperature=1.5,learning_rate_prediction=3e-4",
    f"prediction-T2-lr2e-4:{PREDICTION_ONLY},temperature=2,learning_rate_prediction=2e-4",
    f"prediction-T2-lr3e-4:{PREDICTION_ONLY},temperature=2,learning_rate_prediction=3e-4",
    f"prediction-T3-lr3e-4:{PREDICTION_ONLY},temperature=3,learning_rate_prediction=3e-4",
    "prediction-T2-lr3e-4-alpha0.2:epochs_intermediate=0,alpha=0.2,temperature=2,learning_rate_prediction=3e-4",
    "two-stage-lr3e-4:learning_rate_prediction=3e-4",
    "two-stage-lr3e-4-beta10-gamma10:learning_rate_prediction=3e-4,beta=10,gamma=10",
    "two-stage-lr3e-4-beta0.1-gamma0.1:learning_rate_prediction=3e-4,beta=0.1,gamma=0.1",
    "two-stage-lr3e-4-weights2:learning_rate_prediction=3e-4,layer_weight_1=2,layer_weight_2=2,layer_weight_3=2",
    "two-stage-lr3e-4-beta2-gamma2-weights0.5:learning_rate_prediction=3e-4,beta=2,gamma=2,"
    "layer_weight_1=0.5,layer_weight_2=0.5,layer_weight_3=0.5",
]


def parse_recipe(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,...`` as the name and its overrides (flat hyperparameter names, each
    pair read by the rule of ``kd-search distill --set``).

    Example:
        >>> parse_recipe("hot:temperature=4,alpha=0.1")
        ('hot', {'temperature': '4', 'alpha': '0.1'})
        >>> parse_recipe("defaults:")
        ('defaults', {})
    """
    name, _, pairs = text.partition(":")
    return name, parse_overrides(tuple(pair for pair in pairs.split(",") if pair))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo", help="A study file or a shipped study's name.")
    parser.add_argument("--workdir", help="The teacher and its cache (default: a temporary directory).")
    parser.add_argument("--recipe", nargs="+", default=RECIPES, help="NAME:KEY=VALUE,... (default: the README's map)")
    args = parser.parse_args()
    study = load_study(args.study)
    kappa = reference_kappa(parser, study, args.study)
    mapped_layers = len(check_models(study).pairs)
    recipes = []
    for text in args.recipe:  # every recipe checked against the study before the teacher's fine-tune
        try:
            recipes.append(parse_recipe(text))
            with_overrides(study, mapped_layers, recipes[-1][1])
        except StudyFileError as error:
            parser.error(f"--recipe {text!r}: {error}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        setup = prepare(study, args.workdir or scratch)
        for name, overrides in recipes:
            started = time.perf_counter()
            metrics = run_trial(study, overrides, setup=setup).metrics
            accuracy, sigma = float(metrics[study.objectives.task_metric]), float(metrics["sigma"])
            feasible = sigma <= kappa
            rows.append({"recipe": name, "overrides": overrides, "accuracy": accuracy, "sigma": sigma,
                         "feasible": feasible,
                         "hypervolume_alone": hypervolume([(accuracy, sigma)] if feasible else [], (0.5, kappa)),
                         "seconds": time.perf_counter() - started})
            print(f"{name:36s} accuracy {accuracy:.4f}  sigma {sigma:.8f}  {'feasible' if feasible else 'infeasible'}"
                  f"  hypervolume alone {rows[-1]['hypervolume_alone']:.6f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
    together = hypervolume([(r["accuracy"], r["sigma"]) for r in rows if r["feasible"]], (0.5, kappa))
    print(f"all recipes' feasible front: hypervolume {together:.6f} (reference 0.5, kappa {kappa})")
    json_line({"study": study.name, "kappa": kappa, "recipes": rows, "hypervolume_together": together})


if __name__ == "__main__":
    main()
