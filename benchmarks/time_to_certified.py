"""How long until the first certified student? Read from finished studies' MLflow runs.

A certified verdict needs a trial's search run and confirmation runs (see
``kd-search confirm``). For each work dir given, this benchmark reads the study's MLflow
runs (the study's run: when the launch began; each confirmation run: when it ended) and its
stored trials and confirmations (their sigma and its standard error), replays the
confirmations in the order they ended and finds when the first trial became certified.
It prints, per work dir, the minutes from the study's start to the first certified trial
and to the study's last run, and, for two work dirs, the ratios of the second to the
first (e.g. a study launched by an earlier kd-search against the same study launched now).

    python benchmarks/time_to_certified.py BEFORE_WORKDIR [AFTER_WORKDIR] [--study demo]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import json_line
from mlflow import MlflowClient

from kd_search.engine.measures import certify
from kd_search.service.search import Locations, load_optuna_study
from kd_search.service.search.records import summarize
from kd_search.study_file import load_study


def first_certified(trial_seeds: dict[int, list[tuple[float, dict]]], kappa_of: dict[int, float],
                    search_runs: dict[int, dict]) -> tuple[float, int] | None:
    """(time, trial) at which a trial's verdict first became certified, replaying each
    trial's confirmations (time ended, record) in order after its search run ``search_runs``.

    Example:
        >>> run = lambda sigma: {"sigma": sigma, "sigma_se": 0.002}
        >>> first_certified({0: [(5.0, run(0.051)), (9.0, run(0.049))], 1: [(7.0, run(0.03))]},
        ...                 {0: 0.07, 1: 0.07}, {0: run(0.05), 1: run(0.2)})
        (5.0, 0)
    """
    found: list[tuple[float, int]] = []
    for number, confirmations in trial_seeds.items():
        seeds = [search_runs[number]]
        for ended, record in sorted(confirmations, key=lambda item: item[0]):
            seeds.append(record)
            verdict = certify([s["sigma"] for s in seeds], [s.get("sigma_se") or 0.0 for s in seeds],
                              kappa_of[number])
            if verdict.verdict.value == "certified":
                found.append((ended, number))
                break
    return min(found) if found else None


def study_times(workdir: Path, study_name: str) -> dict[str, Any]:
    """Minutes from the study's start to its first certified trial and to its last run's end."""
    locations = Locations.resolve(load_study(study_name), workdir)
    summary = summarize(load_optuna_study(study_name, locations.storage))
    client = MlflowClient(locations.tracking_uri)
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.kd_search_study = '{study_name}'",
                              max_results=10_000)
    start = next(r for r in runs if r.data.tags["kd_search_role"] == "study").info.start_time / 1000
    ended = {(int(r.data.tags["kd_search_confirms"]), int(r.data.tags["seed"])): r.info.end_time / 1000
             for r in runs if r.data.tags["kd_search_role"] == "confirmation" and r.info.end_time}
    last = max(r.info.end_time / 1000 for r in runs if r.info.end_time and r.data.tags["kd_search_role"] != "study")
    trial_seeds: dict[int, list[tuple[float, dict]]] = {}
    for record in summary.trials:
        for confirmation in record.confirmations:
            key = (record.number, int(confirmation["seed"]))
            if confirmation.get("state") == "COMPLETE" and key in ended:
                trial_seeds.setdefault(record.number, []).append((ended[key] - start, confirmation))
    trials = {t.number: t for t in summary.trials}
    first = first_certified(trial_seeds, {n: trials[n].kappa for n in trial_seeds},
                            {n: trials[n].attrs | {"sigma": trials[n].sigma} for n in trial_seeds})
    return {"workdir": str(workdir), "first_certified_minutes": first[0] / 60 if first else None,
            "first_certified_trial": first[1] if first else None, "study_minutes": (last - start) / 60,
            "confirmation_runs": len(ended), "certified_trials": sum(t.certified for t in summary.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="work dirs holding a launched study")
    parser.add_argument("--study", default="demo")
    args = parser.parse_args()
    results = [study_times(workdir, args.study) for workdir in args.workdirs]
    for result in results:
        first = result["first_certified_minutes"]
        print(f"{result['workdir']}: first certified trial "
              + (f"{result['first_certified_trial']} after {first:.1f} min" if first is not None else "none")
              + f"; study {result['study_minutes']:.1f} min, {result['confirmation_runs']} confirmation runs, "
              f"{result['certified_trials']} certified trials")
    figures: dict[str, Any] = {"study": args.study, "studies": results}
    if len(results) == 2 and None not in (results[0]["first_certified_minutes"], results[1]["first_certified_minutes"]):
        figures["first_certified_ratio"] = results[1]["first_certified_minutes"] / results[0]["first_certified_minutes"]
        figures["study_ratio"] = results[1]["study_minutes"] / results[0]["study_minutes"]
        print(f"second / first: time to the first certified trial x{figures['first_certified_ratio']:.2f}, "
              f"study x{figures['study_ratio']:.2f}")
    json_line(figures)


if __name__ == "__main__":
    main()
