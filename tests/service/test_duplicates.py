"""No student is trained twice: the real ``Driver`` on SQLite storage and a SQLite MLflow
store, its Ray callbacks called directly (no Ray), as ``tiny.finished_study`` drives it."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient

from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
from kd_search.engine.spec import parse_study
from kd_search.service.search.confirmation_queue import trials_to_confirm
from kd_search.service.search.driver import Driver
from kd_search.service.search.locations import Locations
from kd_search.service.search.optuna_study import DUPLICATE_ATTR, create_or_resume
from kd_search.service.search.presenting import summary_table
from kd_search.service.search.records import finished_count, summarize
from kd_search.service.tracking import StudyTracker

KAPPA = 0.05
# Two prediction-only points that differ only where that recipe reads nothing: one student.
HINTON = {"epochs_intermediate": 0, "prediction_loss": "kl", "temperature": 4.0, "alpha": 0.1}
SAME_STUDENT = HINTON | {"gamma": 3.0}


def _driver(root, space, enqueue, trials):
    # Temperature 2: at 1, kl and soft_ce would be one student (config_key).
    study = parse_study({"name": "dup", "student": {"teacher_layers": [2, 4]},
                         "distillation": {"stages": [{"name": "intermediate"}, {"name": "prediction"}],
                                          "epochs_total": 2, "temperature": 2.0},
                         "objectives": {"confidence": {"kappa": KAPPA}},
                         "search": {"sampler": "random", "trials": trials, "enqueue_defaults": False,
                                    "space": space, "enqueue": enqueue},
                         "tracking": {"workdir": str(root)}})
    locations = Locations.resolve(study)
    optuna_study, _ = create_or_resume(study, locations.storage, num_mapped_layers=2)
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name)
    tracker.start_study(study.description, study.model_dump(mode="json"), {})
    shown: list[str] = []
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, 2),
                    default_hyperparameters(study, 2), [], trials, lambda message, *_: shown.append(message))
    return driver, optuna_study, tracker, shown


def _finish(driver, ray_id, accuracy, sigma):
    result = {"epoch": 2, "total_epochs": 2, "accuracy": accuracy, "sigma": sigma, "kappa": KAPPA,
              "phi_cnf": sigma <= KAPPA}
    driver.on_result(ray_id, result)
    driver.on_complete(ray_id, result, error=False)


def test_a_duplicate_proposal_is_neither_trained_nor_shown_twice(tmp_path):
    space = {"epochs_intermediate": {"choices": [0, 1]}, "prediction_loss": {"choices": ["soft_ce", "kl"]},
             "alpha": {"low": 0.0, "high": 0.5}, "temperature": {"low": 1.0, "high": 8.0},
             "gamma": {"low": 0.1, "high": 10.0, "log": True}}
    driver, optuna_study, tracker, shown = _driver(tmp_path, space, [HINTON, SAME_STUDENT, HINTON], trials=4)
    first = driver.suggest("ray-a")  # trial 0: Hinton's point
    assert first["number"] == 0 and "gamma" not in first["params"]
    # Trial 1 is trial 0's student while 0 still runs: recorded, not trained; Ray gets trial 2.
    second = driver.suggest("ray-b")
    assert second["number"] == 3  # trial 2, the third enqueued point, is trial 0's student too
    _finish(driver, "ray-a", 0.80, 0.03)  # trial 0 finished
    # Trials 0-3 are the budget (1 and 2 were duplicates): nothing new, but trial 3 still runs
    # and may join the front, so the driver says "not now" rather than finished.
    assert driver.suggest("ray-c") is None
    _finish(driver, "ray-b", 0.78, 0.02)
    assert driver.suggest("ray-c") == "FINISHED"
    tracker.close()

    trained = {0, 3}
    states = {t.number: (t.state.name, t.user_attrs.get(DUPLICATE_ATTR)) for t in optuna_study.trials}
    assert states == {0: ("COMPLETE", None), 1: ("PRUNED", 0), 2: ("PRUNED", 0), 3: ("COMPLETE", None)}
    assert "trial 1 is trial 0's student again (same effective configuration): not trained" in shown
    assert "trial 1: enqueued gamma dropped (its recipe does not read them)" in shown
    summary = summarize(optuna_study)
    assert {t.number for t in summary.front} <= trained and finished_count(optuna_study) == 4
    assert {t.number for t in optuna_study.best_trials} <= trained  # what optuna-dashboard lists as best
    assert {t.number for t in trials_to_confirm(summary, top=4)} <= trained
    table = summary_table(summary).set_index("trial")
    assert table.loc[1, "verdict"] == "duplicate of trial 0" and table.loc[1, "duplicate_of"] == 0
    runs = MlflowClient(driver.locations.tracking_uri).search_runs(
        [tracker.experiment_id], "tags.kd_search_duplicate_of = '0'")
    assert sorted(r.data.tags["optuna_trial_number"] for r in runs) == ["1", "2"]
    assert all(r.data.tags["pareto"] == "false" for r in runs)


@pytest.mark.slow  # a second fresh MLflow store: about 3 s on an idle 2-core machine
def test_a_sampler_that_keeps_proposing_trained_students_ends_the_budget(tmp_path):
    # Two students in all: the third and fourth trials can only repeat them.
    space = {"prediction_loss": {"choices": ["soft_ce", "kl"]}}
    driver, optuna_study, tracker, _ = _driver(tmp_path, space, [], trials=4)
    configs = []
    for index in range(4):
        config = driver.suggest(f"ray-{index}")
        if config == "FINISHED":
            break
        configs.append(config)
        _finish(driver, f"ray-{index}", 0.7 + index / 100, 0.04)
    tracker.close()
    assert len(configs) == 2 and {c["params"]["prediction_loss"] for c in configs} == {"soft_ce", "kl"}
    summary = summarize(optuna_study)
    assert len(summary.trials) == 4 and finished_count(optuna_study) == 4
    assert sorted(t.state for t in summary.trials) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    redrawn = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all("kd_search_redrawn" in t.user_attrs for t in redrawn)  # proposals set aside, never trials


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PartialFixedSampler
def test_a_sampler_stuck_on_a_trained_student_is_redrawn_at_random(tmp_path):
    driver, optuna_study, tracker, shown = _driver(tmp_path, {"temperature": {"low": 1.0, "high": 8.0}}, [], trials=3)
    # Proposes temperature 2 every time, as the demo's GP did once it converged to a corner.
    optuna_study.sampler = optuna.samplers.PartialFixedSampler({"temperature": 2.0}, optuna.samplers.RandomSampler(0))
    temperatures = []
    for index in range(3):
        config = driver.suggest(f"ray-{index}")
        temperatures.append(config["params"]["temperature"])
        _finish(driver, f"ray-{index}", 0.7 + index / 100, 0.04)
    tracker.close()
    assert temperatures[0] == 2.0 and len(set(temperatures)) == 3  # three students, none a duplicate
    assert not any("student again" in message for message in shown)
    assert type(optuna_study.sampler).__name__ == "PartialFixedSampler"  # the study's own sampler is back
