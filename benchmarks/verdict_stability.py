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

It also reports the search seed's bias: the search's own sigma minus the mean sigma of the
fresh seeds, per trial and on average. The search seed is the study's seed, which also
fine-tuned the teacher; confirmation and fresh seeds share nothing with it.

    python benchmarks/verdict_stability.py [--study demo] [--workdir runs] [--fresh-seeds 3]

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

from kd_search.engine.spec import Study, load_study
from kd_search.engine.trial import prepare, run_trial
from kd_search.service.search import Locations, launch, load_optuna_study
from kd_search.service.search.driver import trial_hyperparameters
from kd_search.service.search.optuna_study import stored_study
from kd_search.service.search.records import TrialRecord, summarize

FRESH_SEED_OFFSET = 100_000  # confirmation uses search seed + 1000 k: never reaches it for k < 100


def fresh_seeds(study: Study, n: int) -> list[int]:
    """Training seeds no search or confirmation of ``study`` uses."""
    search_seed = study.seed if study.distillation.seed is None else study.distillation.seed
    return [search_seed + FRESH_SEED_OFFSET + k for k in range(n)]


def stored_runs(path: Path) -> dict[tuple[int, int], dict]:
    if not path.exists():
        return {}
    runs = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(run["trial"], run["seed"]): run for run in runs}


def retrain(study: Study, setup, record: TrialRecord, seed: int) -> dict:
    """One feasible trial trained again with training seed ``seed``: its sigma and metric."""
    seeded = study.model_copy(update={"distillation": study.distillation.model_copy(update={"seed": seed})})
    defaults = study.default_hyperparameters(len(setup.pairs))
    started = time.perf_counter()
    result = run_trial(seeded, trial_hyperparameters(study, defaults, record.params), setup=setup)
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
    seeds = fresh_seeds(study, args.fresh_seeds)
    results_file = locations.study_dir(study.name) / "verdict_stability.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    done = stored_runs(results_file)
    todo = [(t, s) for t in feasible for s in seeds if (t.number, s) not in done]
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

    per_trial, single, certified, biases = [], [], [], []
    for record in feasible:
        fresh = [done[(record.number, s)]["sigma"] for s in seeds]
        holds = [sigma <= record.kappa for sigma in fresh]
        single += holds
        if record.certified:
            certified += holds
        bias = record.sigma - statistics.mean(fresh)
        biases.append(bias)
        verdict = record.verdict
        per_trial.append({"trial": record.number, "verdict": verdict.verdict.value, "search_sigma": record.sigma,
                          "confirmation_sigmas": record.seed_sigmas[1:], "upper_bound": verdict.upper_bound,
                          "kappa": record.kappa, "fresh_sigmas": fresh, "fresh_holds": sum(holds),
                          "search_seed_bias": bias})
        print(f"trial {record.number} ({verdict.verdict.value}, U {verdict.upper_bound:.4f}): search sigma "
              f"{record.sigma:.4f}, fresh {' '.join(f'{s:.4f}' for s in fresh)}; holds {sum(holds)}/{len(holds)}")
    single_rate, certified_rate = rate(single), rate(certified)
    below = sum(p["search_sigma"] < min(p["fresh_sigmas"]) for p in per_trial)
    print(f"single-seed verdict holds on {sum(single)}/{len(single)} fresh retrainings; certified verdict on "
          f"{sum(certified)}/{len(certified)}")
    if biases:
        print(f"search seed minus fresh-seed mean sigma: {statistics.mean(biases):+.4f} on average; the search's "
              f"sigma is below every fresh seed's in {below}/{len(per_trial)} trials")
    print(json.dumps({"study": study.name, "fresh_seeds": seeds, "single_seed_hold_rate": single_rate, "single_seed_pairs": len(single),
                      "certified_hold_rate": certified_rate, "certified_pairs": len(certified),
                      "mean_search_seed_bias": statistics.mean(biases) if biases else None,
                      "search_sigma_below_all_fresh": below, "trials": per_trial}))


if __name__ == "__main__":
    main()
