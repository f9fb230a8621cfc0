"""The service's overhead: a study's wall time against the sum of its trials' own training times.

The teacher is prepared and its outputs cached first (once per study, timed apart), then
one ``launch`` runs the study: Ray start-up, worker start-up, data loading in each
worker, per-epoch evaluation and checkpoints, Optuna and MLflow writes are all in the
study's wall time; only the training loops are in the trials' sum. With concurrent
trials the ratio can drop below 1 (trials overlap).

    python benchmarks/study_overhead.py [--study smoke] [--trials 4]

The last line is one JSON object with ``study_seconds``, ``trial_seconds_sum`` and
``overhead_ratio``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from kd_search.engine.spec import load_study
from kd_search.engine.trial import prepare, teacher_layers, teacher_outputs
from kd_search.service.search import Locations, launch, load_optuna_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="A study file or a shipped study's name.")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    study = load_study(args.study)
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
    ratio = study_seconds / trial_seconds
    print(f"teacher preparation {teacher_seconds:.1f} s (once, not counted)")
    print(f"study of {len(trials)} trials ({summary.counts()}), concurrency {study.search.concurrency}: "
          f"wall {study_seconds:.1f} s, trials' training {trial_seconds:.1f} s, ratio {ratio:.2f}")
    print(json.dumps({"study_seconds": round(study_seconds, 2), "trial_seconds_sum": round(trial_seconds, 2),
                      "overhead_ratio": round(ratio, 3), "trials": len(trials),
                      "concurrency": study.search.concurrency, "teacher_seconds": round(teacher_seconds, 2)}))


if __name__ == "__main__":
    main()
