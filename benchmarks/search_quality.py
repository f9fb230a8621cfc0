"""The default sampler against random search, on the same trial budget, by feasible hypervolume.

For each seed, two studies with the same budget run real distillation trials (the smoke
study's task and models unless ``--study`` says otherwise): one with the default sampler
(TPE, multivariate, constant liar, a quarter of the budget as random start-up trials),
one with Optuna's RandomSampler. Each is scored by the hypervolume of its feasible front
(task metric up, sigma down, sigma <= kappa) against the reference point
(0.5 = chance accuracy on a balanced binary task, kappa).

    python benchmarks/search_quality.py [--study smoke] [--trials 12] [--seeds 3]

The last line is one JSON object with ``default_hypervolume`` and ``random_hypervolume``
(means over the seeds) and the per-seed values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from kd_search.engine.spec import load_study
from kd_search.service.pareto import hypervolume
from kd_search.service.search import Locations, launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="A study file or a shipped study's name.")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--default-sampler", default="tpe", choices=["tpe", "gp", "nsga2"])
    args = parser.parse_args()
    base = load_study(args.study)
    kappa = float(base.objectives.confidence.kappa)
    reference = (0.5, kappa)
    scores: dict[str, list[float]] = {"default": [], "random": []}
    with tempfile.TemporaryDirectory() as workdir:
        locations = Locations.resolve(base, workdir)
        for seed in range(args.seeds):
            for label, sampler in (("default", args.default_sampler), ("random", "random")):
                study = base.model_copy(update={
                    "name": f"{base.name}-{label}-seed{seed}", "seed": seed,
                    "search": base.search.model_copy(update={"sampler": sampler, "trials": args.trials})})
                started = time.perf_counter()
                summary = launch(study, locations=locations)
                feasible = [(t.metric, t.sigma) for t in summary.trials if t.feasible]
                volume = hypervolume(feasible, reference)
                scores[label].append(volume)
                print(f"seed {seed} {label:7s} ({sampler}): {len(feasible)}/{len(summary.trials)} feasible, "
                      f"front {len(summary.front)}, hypervolume {volume:.6f} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    default, random = statistics.mean(scores["default"]), statistics.mean(scores["random"])
    print(f"mean hypervolume over {args.seeds} seeds, {args.trials} trials each: default {default:.6f}, "
          f"random {random:.6f} (ratio {default / random if random else float('inf'):.2f})")
    print(json.dumps({"default_hypervolume": default, "random_hypervolume": random,
                      "default_sampler": args.default_sampler, "trials": args.trials, "seeds": args.seeds,
                      "per_seed": scores}))


if __name__ == "__main__":
    main()
