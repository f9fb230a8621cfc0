"""Does a verdict survive training again? Single-seed against certified phi_cnf, on fresh seeds.

A launched study (the shipped demo unless ``--study`` names another; launched first
when the workdir's store lacks it) marks trials feasible from one training seed, and certifies some of them
over further confirmation seeds. This benchmark trains every feasible trial again with
``--fresh-seeds`` new training seeds, the same hyperparameters, teacher and data, seeds
that neither the search nor confirmation used (``search seed + 100000 + k``; confirmation
uses ``search seed + 1000 k``), and counts how often phi_cnf (sigma <= kappa) still holds:

- ``single_seed_hold_rate``: over (feasible trial, fresh seed) pairs, what a user who
  trusts the search's one seed would see when training the recipe again;
- ``certified_hold_rate``: the same over the certified trials only (null when none is).

It also reports how far the search seed's sigma sits from the fresh seeds' mean (and the
confirmation seeds', where a trial has them). The feasible trials were chosen because
their search-seed sigma was low, so theirs is expected to sit low (selection). With
``--control`` the finished trials that fail kappa are retrained too: they were not chosen
for a low sigma, so a search seed that still sits low there points at the seed itself.

    python benchmarks/verdict_stability.py [--study demo] [--workdir runs] [--fresh-seeds 3] [--control]

Each retraining is stored in ``WORKDIR/studies/NAME/verdict_stability.jsonl`` as it
finishes: a second run goes on where the first stopped. The last line printed is one
JSON object with both rates, their pair counts and the per-trial figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna
from _common import fresh_seeds, json_line, study_copy

from kd_search.engine.hyperparameters import default_hyperparameters, training_params
from kd_search.engine.spec import Study
from kd_search.engine.trial import prepare, run_trial
from kd_search.service.search import Locations, launch, load_optuna_study
from kd_search.service.search.optuna_study import stored_study
from kd_search.service.search.records import TrialRecord, summarize
from kd_search.study_file import load_study


def stored_runs(path: Path) -> dict[tuple[int, int], dict]:
    if not path.exists():
        return {}
    runs = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(run["trial"], run["seed"]): run for run in runs}


def retrain(study: Study, setup, record: TrialRecord, seed: int) -> dict:
    """One feasible trial trained again with training seed ``seed``: its sigma and metric."""
    seeded = study_copy(study, distillation__seed=seed)
    defaults = default_hyperparameters(study, len(setup.pairs))
    started = time.perf_counter()
    result = run_trial(seeded, training_params(study, defaults, record.params), setup=setup)
    metric = study.objectives.task_metric
    return {"trial": record.number, "seed": seed, "sigma": float(result.metrics["sigma"]),
            metric: float(result.metrics[metric]), "seconds": round(time.perf_counter() - started, 1)}


def rate(holds: list[bool]) -> float | None:
    return sum(holds) / len(holds) if holds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo", help="a study file or a shipped study's name (default: demo)")
    parser.add_argument("--workdir", default="runs", help="where the study was launched (default: runs)")
    parser.add_argument("--fresh-seeds", type=int, default=3)
    parser.add_argument("--control", action="store_true",
                        help="also retrain the trials that fail kappa: is a search seed's low sigma selection or seed?")
    args = parser.parse_args()
    study = load_study(args.study)
    locations = Locations.resolve(study, args.workdir)
    if study.name not in {s.study_name for s in optuna.get_all_study_summaries(locations.storage, False)}:
        print(f"{study.name} is not in {locations.storage}: launching it (with its confirmation) first", flush=True)
        launch(study, locations=locations)
    optuna_study = load_optuna_study(study.name, locations.storage)
    study = stored_study(optuna_study)
    summary = summarize(optuna_study)
    feasible = [t for t in summary.trials if t.feasible]
    # The control: finished trials that fail kappa, so never chosen for a low search-seed sigma.
    control = [t for t in summary.trials if t.state == "COMPLETE" and not t.feasible] if args.control else []
    seeds = fresh_seeds(study, args.fresh_seeds)
    results_file = locations.study_dir(study.name) / "verdict_stability.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    done = stored_runs(results_file)
    todo = [(t, s) for t in feasible + control for s in seeds if (t.number, s) not in done]
    print(f"{study.name}: {len(feasible)} feasible trials ({sum(t.certified for t in feasible)} certified), "
          f"fresh seeds {seeds}; {len(todo)} retrainings to run, {len(done)} stored", flush=True)
    if todo:
        setup = prepare(study, locations.workdir)
        for i, (record, seed) in enumerate(todo, start=1):
            run = retrain(study, setup, record, seed)
            with results_file.open("a") as out:
                out.write(json.dumps(run) + "\n")
            done[(record.number, seed)] = run
            print(f"[{i}/{len(todo)}] trial {record.number} seed {seed}: sigma {run['sigma']:.4f} "
                  f"(kappa {record.kappa:.4f}, {'holds' if run['sigma'] <= record.kappa else 'fails'}; "
                  f"{run['seconds']:.0f} s)", flush=True)

    per_trial = [trial_figures(record, [done[(record.number, s)]["sigma"] for s in seeds]) for record in feasible]
    single = [holds for p in per_trial for holds in p["fresh_holds"]]
    certified = [holds for p in per_trial if p["verdict"] == "certified" for holds in p["fresh_holds"]]
    print(f"single-seed verdict holds on {sum(single)}/{len(single)} fresh retrainings; certified verdict on "
          f"{sum(certified)}/{len(certified)}")
    figures = {"study": study.name, "fresh_seeds": seeds,
               "single_seed_hold_rate": rate(single), "single_seed_pairs": len(single),
               "certified_hold_rate": rate(certified), "certified_pairs": len(certified)}
    figures |= seed_bias(per_trial, "feasible")
    if args.control:
        figures |= seed_bias([trial_figures(record, [done[(record.number, s)]["sigma"] for s in seeds])
                              for record in control], "control")
    json_line(figures | {"trials": per_trial})


def trial_figures(record: TrialRecord, fresh: list[float]) -> dict:
    """One retrained trial: its verdict, its sigma on each kind of seed, whether the fresh ones hold."""
    verdict = record.verdict
    figures = {"trial": record.number, "verdict": verdict.verdict.value, "search_sigma": record.sigma,
               "confirmation_sigmas": record.seed_sigmas[1:], "upper_bound": verdict.upper_bound,
               "kappa": record.kappa, "fresh_sigmas": fresh, "fresh_holds": [sigma <= record.kappa for sigma in fresh]}
    print(f"trial {record.number} ({verdict.verdict.value}, U {verdict.upper_bound:.4f}): search sigma "
          f"{record.sigma:.4f}, confirmations {' '.join(f'{s:.4f}' for s in figures['confirmation_sigmas']) or '-'}, "
          f"fresh {' '.join(f'{s:.4f}' for s in fresh)}; holds {sum(figures['fresh_holds'])}/{len(fresh)}")
    return figures


def seed_bias(per_trial: list[dict], group: str) -> dict:
    """How far the search's seed (and the confirmation seeds) sit from fresh seeds, in ``group``."""
    if not per_trial:
        return {}
    search = [p["search_sigma"] - statistics.mean(p["fresh_sigmas"]) for p in per_trial]
    confirmation = [c - statistics.mean(p["fresh_sigmas"]) for p in per_trial for c in p["confirmation_sigmas"]]
    below = sum(p["search_sigma"] < min(p["fresh_sigmas"]) for p in per_trial)
    print(f"{group}: search seed minus the fresh seeds' mean sigma {statistics.mean(search):+.4f} on average "
          f"(below every fresh seed in {below}/{len(per_trial)} trials)"
          + (f"; confirmation seeds {statistics.mean(confirmation):+.4f} ({len(confirmation)} runs)"
             if confirmation else ""))
    return {f"{group}_search_seed_bias": statistics.mean(search), f"{group}_search_below_all_fresh": below,
            f"{group}_trials": len(per_trial),
            f"{group}_confirmation_seed_bias": statistics.mean(confirmation) if confirmation else None}

if __name__ == "__main__":
    main()
