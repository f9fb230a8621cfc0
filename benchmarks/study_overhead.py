"""The service's overhead: where a trial slot's wall time goes besides its training loops.

The teacher is prepared and its outputs cached first (once per study, timed apart), then
one ``launch`` runs the study: Ray start-up, worker start-up, data loading in each
worker, per-epoch evaluation and checkpoints, Optuna and MLflow writes are all in the
study's wall time; only the training loops are in the trials' sum. With concurrent
trials the study's ratio can drop below 1 (trials overlap). The study's confirmation
(``search.confirm``) is left out: its retrainings are not trials of the search.

Per trial, the slot is the time from the driver's proposal (Optuna's start) to its
result (Optuna's completion); the worker's ``timings.json`` splits it into start-up
(proposal to the worker's first line), the trial's phases, and the rest (the driver's
handling of results, Ray's bookkeeping).

    python benchmarks/study_overhead.py [--study smoke] [--trials 4]

The last line is one JSON object with ``study_seconds``, ``trial_seconds_sum``,
``overhead_ratio``, ``slot_ratio`` (mean slot wall over mean training) and ``phases``
(mean seconds per trial).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import json_line, search_only

from kd_search.engine.trial import prepare, teacher_layers, teacher_outputs
from kd_search.service.search import Locations, launch, load_optuna_study
from kd_search.study_file import load_study


def slot_phases(trial, trial_dir: Path) -> dict[str, float]:
    """One finished trial's slot split into phases (seconds): ``startup``, the worker's
    phases, ``other`` (the slot's remainder) and ``slot`` itself."""
    slot = (trial.datetime_complete - trial.datetime_start).total_seconds()
    recorded = json.loads((trial_dir / "timings.json").read_text())
    phases = {"startup": recorded["started_at"] - trial.datetime_start.timestamp()} | recorded["seconds"]
    return phases | {"other": slot - sum(phases.values()), "slot": slot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="A study file or a shipped study's name.")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    study = load_study(args.study)
    # The search alone: a confirmation's retrainings would be in the wall time but not in the
    # trials' training sum.
    study = search_only(study)
    with tempfile.TemporaryDirectory() as workdir:
        locations = Locations.resolve(study, workdir)
        started = time.perf_counter()
        setup = prepare(study, locations.workdir)
        teacher_outputs(setup, teacher_layers(setup))
        teacher_seconds = time.perf_counter() - started
        started = time.perf_counter()
        summary = launch(study, locations=locations, trials=args.trials)
        study_seconds = time.perf_counter() - started
        trials = load_optuna_study(study.name, locations.storage).trials
        trial_seconds = sum(t.user_attrs.get("train_seconds", 0.0) for t in trials)
        finished = [t for t in trials if t.datetime_complete and (locations.trial_dir(study.name, t.number)
                                                                   / "timings.json").is_file()]
        per_trial = [slot_phases(t, locations.trial_dir(study.name, t.number)) for t in finished]
    names = sorted({name for phases in per_trial for name in phases}, key=lambda n: (n in ("other", "slot"), n))
    mean = {name: statistics.fmean(p.get(name, 0.0) for p in per_trial) for name in names}
    ratio = study_seconds / trial_seconds
    slot_ratio = mean["slot"] / mean["train"]
    print(f"teacher preparation {teacher_seconds:.1f} s (once, not counted)")
    print(f"study of {len(trials)} trials ({summary.counts()}), concurrency {study.search.concurrency}: "
          f"wall {study_seconds:.1f} s, trials' training {trial_seconds:.1f} s, ratio {ratio:.2f}")
    print(f"mean per trial over {len(per_trial)} trials (seconds):")
    for name in names:
        print(f"  {name:<22} {mean[name]:8.2f}")
    print(f"trial slot wall / training: {slot_ratio:.2f}")
    json_line({"study_seconds": round(study_seconds, 2), "trial_seconds_sum": round(trial_seconds, 2),
               "overhead_ratio": round(ratio, 3), "slot_ratio": round(slot_ratio, 3),
               "trials": len(trials), "concurrency": study.search.concurrency,
               "teacher_seconds": round(teacher_seconds, 2),
               "phases": {name: round(value, 3) for name, value in mean.items()}})


if __name__ == "__main__":
    main()
