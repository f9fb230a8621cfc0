"""Samplers against each other on the same trial budget, by feasible hypervolume.

For each seed, one study per sampler with the same budget runs real distillation trials
(the smoke study's task and models unless ``--study`` says otherwise): by default
multivariate TPE with a constant liar, Optuna 5's constrained multi-objective GP (the
default sampler, chosen by this benchmark) and Optuna's RandomSampler, each with a
quarter of the budget as random start-up trials.
Each is scored by the hypervolume of its feasible front (task metric up, sigma down,
sigma <= kappa) against the reference point (0.5 = chance accuracy on a balanced binary
task, kappa). Every study starts from the same enqueued trials (the study's defaults and
``search.enqueue``), so the samplers differ in the trials they propose after those. The
searches run alone (no ``search.confirm``): confirmation retrains students and adds
nothing to the search's front.

    python benchmarks/search_quality.py [--study smoke] [--trials 16] [--seeds 4] [--samplers tpe gp random] [--workdir DIR]

Given a ``--workdir`` that already holds some of these studies (the same settings), the
finished ones are read back, not trained again (``launch`` resumes a stored study).

The last line is one JSON object: per sampler the mean and standard deviation of the
hypervolume over the seeds (``null`` sd for one seed), its ratio to random search, how
many seeds it won, and the per-seed values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import typing
from pathlib import Path

from _common import format_mean_sd, json_line, mean_sd, reference_kappa, search_only

from kd_search.engine.search_settings import SearchSpec
from kd_search.service.pareto import hypervolume
from kd_search.service.search import Locations, launch
from kd_search.study_file import load_study

SAMPLERS = typing.get_args(SearchSpec.model_fields["sampler"].annotation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="A study file or a shipped study's name.")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--samplers", nargs="+", default=["tpe", "gp", "random"], choices=SAMPLERS)
    parser.add_argument("--workdir", help="Keep the studies here (default: a temporary directory).")
    args = parser.parse_args()
    base = load_study(args.study)
    kappa = reference_kappa(parser, base, args.study)
    reference = (0.5, kappa)
    scores: dict[str, list[float]] = {sampler: [] for sampler in args.samplers}
    with tempfile.TemporaryDirectory() as scratch:
        locations = Locations.resolve(base, Path(args.workdir or scratch))
        for seed in range(args.seeds):
            for sampler in args.samplers:
                study = search_only(base, name=f"{base.name}-{sampler}-seed{seed}", seed=seed,
                                    search__sampler=sampler, search__trials=args.trials)
                started = time.perf_counter()
                summary = launch(study, locations=locations)
                feasible = [(t.metric, t.sigma) for t in summary.trials if t.feasible]
                volume = hypervolume(feasible, reference)
                scores[sampler].append(volume)
                print(f"seed {seed} {sampler:7s}: {len(feasible)}/{len(summary.trials)} feasible, "
                      f"front {len(summary.front)}, hypervolume {volume:.6f} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    figures = {}
    for sampler, values in scores.items():
        mean, sd = mean_sd(values)
        wins = sum(1 for seed, value in enumerate(values)
                   if all(value >= scores[other][seed] for other in scores))
        figures[sampler] = {"hypervolume": mean, "hypervolume_sd": sd, "seeds_won": wins, "per_seed": values}
    random = figures.get("random", {}).get("hypervolume")
    for sampler, entry in figures.items():
        entry["ratio_to_random"] = entry["hypervolume"] / random if random else None
        ratio = f", {entry['ratio_to_random']:.2f}x random" if entry["ratio_to_random"] is not None else ""
        print(f"{sampler:7s} hypervolume {format_mean_sd(entry['hypervolume'], entry['hypervolume_sd'], 6)} over "
              f"{args.seeds} seeds, {args.trials} trials each{ratio}; best on {entry['seeds_won']} seeds")
    json_line({"study": base.name, "trials": args.trials, "seeds": args.seeds, "kappa": kappa,
               "samplers": figures})


if __name__ == "__main__":
    main()
