"""The search driver's cost per trial event does not grow with the study.

The real ``Driver`` on SQLite storage and a SQLite MLflow store, driven without Ray
as a trainable that returns at once would drive it.
"""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy
from mlflow import MlflowClient
from optuna.trial import TrialState

from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
from kd_search.engine.spec import parse_study
from kd_search.service.search.driver import Driver
from kd_search.service.search.locations import Locations
from kd_search.service.search.optuna_study import DUPLICATE_ATTR, STOPPED_ATTR, create_or_resume
from kd_search.service.tracking import StudyTracker

KAPPA = 0.2


class CountingClient:
    """The tracker's MlflowClient, counting the calls made on it."""

    def __init__(self, client: MlflowClient, counts: Counter):
        self._client, self._counts = client, counts

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)

        def counted(*args, **kwargs):
            self._counts["mlflow"] += 1
            return attribute(*args, **kwargs)

        return counted if callable(attribute) else attribute


def result_of(number: int) -> dict:
    # Every 10th trial beats the last one on the front and pushes it out; the others are dominated.
    if number % 10 == 0:
        metric, sigma = 0.5 + number / 1000, 0.05
    else:
        metric, sigma = 0.4, 0.1 + (number % 3) / 100
    return {"accuracy": metric, "sigma": sigma, "kappa": KAPPA, "epoch": 1, "total_epochs": 1, "node_id": "ab" * 8}


@pytest.mark.slow  # 80 trials of SQLite writes: about 30 s on an idle 2-core machine, more under load
def test_storage_reads_and_mlflow_writes_per_event_do_not_grow(tmp_path):
    study = parse_study({"name": "flat", "student": {"teacher_layers": [2]},
                         "objectives": {"confidence": {"kappa": KAPPA}},
                         "search": {"sampler": "random", "trials": 80, "enqueue_defaults": False,
                                    "space": {"alpha": {"low": 0.0, "high": 0.5}}},
                         "tracking": {"workdir": str(tmp_path / "work")}})
    locations = Locations.resolve(study)  # SQLite storage and MLflow store in the work dir
    optuna_study, _ = create_or_resume(study, locations.storage, 1)
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name)
    counts: Counter = Counter()
    tracker.client = CountingClient(tracker.client, counts)

    @sqlalchemy.event.listens_for(optuna_study._storage._backend.engine, "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        counts["sql_read" if statement.lstrip().upper().startswith("SELECT") else "sql_write"] += 1

    storage = optuna_study._storage
    get_all_trials = storage.get_all_trials

    def count_trials_read(*args, **kwargs):
        trials = get_all_trials(*args, **kwargs)
        counts["trials_read"] += len(trials)
        return trials

    storage.get_all_trials = count_trials_read
    shown: list[tuple[str, int | None]] = []
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, 1),
                    default_hyperparameters(study, 1), [], 80, lambda message, done, _: shown.append((message, done)))
    windows = []
    for number in range(80):
        if number % 10 == 0:
            windows.append(Counter(counts))
        ray_trial_id = f"t{number}"
        driver.suggest(ray_trial_id)
        (locations.trial_dir(study.name, number) / "student").mkdir(parents=True)
        driver.on_result(ray_trial_id, result_of(number))
        driver.on_complete(ray_trial_id, result_of(number), error=False)
    windows.append(Counter(counts))
    per_window = [{k: after[k] - before[k] for k in ("sql_read", "sql_write", "mlflow", "trials_read")}
                  for before, after in zip(windows, windows[1:], strict=False)]
    # Trials 10-19 against trials 70-79: the same events, four times as many trials before them.
    early, late = per_window[1], per_window[7]
    assert late["mlflow"] == early["mlflow"] and late["sql_write"] == early["sql_write"], per_window
    assert late["sql_read"] <= early["sql_read"] and late["trials_read"] <= early["trials_read"], per_window

    # Behaviour: the front's last member alone is tagged and kept; the live view counts as storage does.
    tagged = MlflowClient(locations.tracking_uri).search_runs([tracker.experiment_id], "tags.pareto = 'true'")
    assert [r.data.tags["optuna_trial_number"] for r in tagged] == ["70"]
    kept = sorted(p.parent.name for p in locations.study_dir(study.name).glob("trials/*/student"))
    assert kept == ["70"]
    assert shown[-1] == ("trial 79 COMPLETE: accuracy 0.400, sigma 0.1100 vs kappa 0.2, holds on one seed (unconfirmed)", 80)
    assert dict(driver.live.counts) == {"COMPLETE": 80}


def test_a_confirmed_trial_keeps_its_student_after_it_leaves_the_front(tmp_path):
    # The best certified trial is chosen by its mean over seeds: it may leave the front
    # (on its search seed) after its confirmation began, and export must still find it.
    study = parse_study({"name": "kept", "student": {"teacher_layers": [2]},
                         "objectives": {"confidence": {"kappa": KAPPA}},
                         "search": {"sampler": "random", "trials": 3, "concurrency": 2, "enqueue_defaults": False,
                                    "confirm": {"top": 1, "seeds": 2},
                                    "space": {"alpha": {"low": 0.0, "high": 0.5}}},
                         "tracking": {"workdir": str(tmp_path / "work")}})
    locations = Locations.resolve(study)
    optuna_study, _ = create_or_resume(study, locations.storage, 1)
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name)
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, 1),
                    default_hyperparameters(study, 1), [], 3, None)

    def finish(ray_trial_id: str, accuracy: float, sigma: float) -> None:
        number = driver.trials[ray_trial_id].number
        (locations.trial_dir(study.name, number) / "student").mkdir(parents=True)
        result = {"accuracy": accuracy, "sigma": sigma, "kappa": KAPPA, "epoch": 1, "total_epochs": 1}
        driver.on_result(ray_trial_id, result)
        driver.on_complete(ray_trial_id, result, error=False)

    driver.suggest("t0")
    finish("t0", 0.6, 0.05)  # trial 0 joins the front
    confirmation = driver.suggest("c0")
    assert (confirmation["number"], confirmation["seed"]) == (0, 1000)  # confirmed beside the search
    driver.suggest("t1")
    finish("t1", 0.7, 0.04)  # trial 1 dominates trial 0, whose confirmation has begun
    driver.suggest("t2")
    finish("t2", 0.5, 0.1)  # dominated and never confirmed
    assert set(driver.live.front) == {1}
    kept = {int(p.parent.name) for p in locations.study_dir(study.name).glob("trials/*/student")}
    assert kept == {0, 1}


def test_an_adopted_trial_its_scheduler_had_stopped_is_pruned_not_trained_on(tmp_path):
    # A driver killed after its scheduler stopped a trial, before the trial ended, leaves it
    # RUNNING with the epoch it was stopped at; the next driver records it PRUNED.
    study = parse_study({"name": "stopped", "student": {"teacher_layers": [2]},
                         "objectives": {"confidence": {"kappa": KAPPA}},
                         "search": {"sampler": "random", "trials": 2, "concurrency": 2, "enqueue_defaults": False,
                                    "space": {"alpha": {"low": 0.0, "high": 0.5}}},
                         "tracking": {"workdir": str(tmp_path / "work")}})
    locations = Locations.resolve(study)
    optuna_study, _ = create_or_resume(study, locations.storage, 1)

    def driver(adopt: list, shown: list | None = None) -> Driver:
        tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name)
        return Driver(study, optuna_study, tracker, locations, search_distributions(study, 1),
                      default_hyperparameters(study, 1), adopt, 2,
                      None if shown is None else lambda message, done, _: shown.append(message))

    first = driver([])
    first.suggest("t0")
    epoch = {"accuracy": 0.6, "sigma": 0.05, "kappa": KAPPA, "total_epochs": 3, "done": False}
    first.on_result("t0", epoch | {"epoch": 1})
    assert STOPPED_ATTR not in optuna_study.trials[0].user_attrs  # an epoch it goes on from
    first.on_result("t0", epoch | {"epoch": 2, "done": True})  # Ray's mark: its scheduler stops it here
    # ... and the driver dies before the trial ends.
    stale = optuna_study.get_trials(states=(TrialState.RUNNING,))
    assert [t.user_attrs[STOPPED_ATTR] for t in stale] == [2]

    shown: list[str] = []
    second = driver(stale, shown)
    optuna_study.enqueue_trial(stale[0].params)  # its student, never trained to the end, asked for again
    config = second.suggest("t1")
    assert (config["number"], config["resume_from"]) == (1, None)  # a new trial; trial 0 is not continued
    assert DUPLICATE_ATTR not in optuna_study.trials[1].user_attrs  # trained, not a duplicate of trial 0
    stopped = optuna_study.trials[0]
    assert stopped.state == TrialState.PRUNED and stopped.values is None
    assert [score["epoch"] for score in stopped.user_attrs["epoch_scores"]] == [1, 2]
    assert second.live.budget_used == 1 and 0 not in second.live.front
    assert shown[0] == ("trial 0 PRUNED: its scheduler stopped it at epoch 2 before the last driver died "
                        "(not trained further)")
    runs = MlflowClient(locations.tracking_uri).search_runs([second.tracker.experiment_id],
                                                            "tags.optuna_trial_number = '0'")
    assert [(r.info.status, r.data.tags["state"]) for r in runs] == [("KILLED", "PRUNED")]  # one run, closed
