"""Confirmation over seeds on tiny random BERTs with real Ray (local, 2 CPUs), Optuna on
SQLite and MLflow: the best trials retrained with further seeds, a worker SIGKILLed
mid-confirmation, a relaunch that repeats nothing."""

from __future__ import annotations

import os
import re
import signal

import pytest
from mlflow import MlflowClient
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from tiny import search_study

from kd_search.engine.spec import parse_study
from kd_search.service.search import Locations, confirm, launch, load_optuna_study
from kd_search.service.search._confirm import confirmation_key
from kd_search.service.search.records import CONFIRMATION_ATTR_PREFIX


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def confirmation_study(tmp_path, trials: int, prediction_epochs: int, **confirm_spec):
    spec = search_study(tmp_path, trials=trials, prediction_epochs=prediction_epochs, concurrency=min(trials, 2),
                        confirm=confirm_spec)
    # A teacher that learnt the task (a random one can leave sigma undefined), and every
    # finished trial feasible.
    spec["teacher"]["fine_tune"] = {"epochs": 6, "learning_rate": 5e-3, "batch_size": 16}
    spec["objectives"] = {"confidence": {"kappa": 1.0}}
    return parse_study(spec)


def stored_confirmations(locations: Locations, name: str) -> dict[str, dict]:
    attrs = load_optuna_study(name, locations.storage).user_attrs
    return {key: value for key, value in attrs.items() if key.startswith(CONFIRMATION_ATTR_PREFIX)}


def confirmation_runs(locations: Locations, name: str):
    client = MlflowClient(locations.tracking_uri)
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.kd_search_study = '{name}'", max_results=1000)
    parent = next(r for r in runs if r.data.tags["kd_search_role"] == "study")
    return client, parent, [r for r in runs if r.data.tags["kd_search_role"] == "confirmation"]


@pytest.mark.ray
def test_launch_confirms_the_best_trial_with_further_seeds_and_a_relaunch_repeats_nothing(tmp_path, ray_cluster):
    # Every seed, even once the verdict is decided (kappa 1 certifies after one confirmation).
    study = confirmation_study(tmp_path, trials=2, prediction_epochs=1, top=1, seeds=2, decide_early=False)
    locations = Locations.resolve(study, tmp_path / "work")
    summary = launch(study, locations=locations)

    trials = load_optuna_study(study.name, locations.storage).trials
    assert len(trials) == 2  # never counted against the budget, never asked of the sampler
    best = summary.best_feasible()
    stored = stored_confirmations(locations, study.name)
    best_keys = {confirmation_key(best.number, seed) for seed in (1000, 2000)}
    # The trial that finished first was the front's best when its slot freed: it may have
    # had one or both seeds confirmed before the other overtook it (a seed not yet started
    # then is passed over), never another trial's.
    other_keys = {confirmation_key(1 - best.number, seed) for seed in (1000, 2000)}
    assert best_keys <= set(stored) and set(stored) - best_keys <= other_keys
    for seed in (1000, 2000):
        record = stored[confirmation_key(best.number, seed)]
        assert record["state"] == "COMPLETE" and record["seed"] == seed and record["trial"] == best.number
        assert record["epoch"] == 2 and record["resumed_from_epoch"] == 0
        assert record["sigma"] != best.sigma  # another training seed, another student
        assert {"flip_rate", "kl_teacher_student", "brier", "nll", "sigma_eval"} <= set(record)  # trust beyond sigma
        confidence = locations.trial_dir(study.name, best.number) / "seeds" / str(seed)
        assert (confidence / "confidence.npz").is_file() and not (confidence / "student").exists()
    assert stored[confirmation_key(best.number, 1000)]["sigma"] != stored[confirmation_key(best.number, 2000)]["sigma"]

    client, parent, runs = confirmation_runs(locations, study.name)
    assert len(runs) == len(stored)
    for run in (r for r in runs if r.data.tags["kd_search_confirms"] == str(best.number)):
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["kd_search_confirms"] == str(best.number)
        assert tags["state"] == "COMPLETE" and run.info.status == "FINISHED"
        assert run.info.run_name == f"trial-{best.number:03d}-seed-{tags['seed']}"
        # Under fifo only the last epoch measures the training split (sigma); every epoch logs accuracy.
        assert len(client.get_metric_history(run.info.run_id, "sigma")) == 1
        assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 2
        assert {"flip_rate", "flip_rate_teacher_correct", "brier_teacher", "nll_teacher"} <= set(run.data.metrics)
    epochs_logged = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "epoch")) for r in runs}

    events: list[str] = []
    records = confirm(study, locations=locations, on_event=lambda message, done, total: events.append(message))
    assert events == ["confirmations: 0 to run, 2 already stored"]
    assert {(r["trial"], r["seed"]) for r in records} == {(best.number, 1000), (best.number, 2000)}
    assert stored_confirmations(locations, study.name) == stored
    client, _, again = confirmation_runs(locations, study.name)
    assert {r.info.run_id: len(client.get_metric_history(r.info.run_id, "epoch")) for r in again} == epochs_logged
    assert len(load_optuna_study(study.name, locations.storage).trials) == 2


@pytest.mark.ray
def test_confirmations_take_free_slots_during_the_search_in_one_tune_run(tmp_path, ray_cluster):
    study = confirmation_study(tmp_path, trials=3, prediction_epochs=1, top=1, seeds=3)
    locations = Locations.resolve(study, tmp_path / "work")
    events: list[str] = []
    summary = launch(study, locations=locations, on_event=lambda message, done, total: events.append(message))

    # The first trial to finish joins the front and is confirmed while the search still runs:
    # the third search trial takes a slot after the confirmation has.
    first_confirmation = next(i for i, e in enumerate(events) if e.startswith("confirm trial") and "started" in e)
    last_search_trial = max(i for i, e in enumerate(events) if re.fullmatch(r"trial \d+ COMPLETE.*", e))
    assert first_confirmation < last_search_trial, events
    assert len(load_optuna_study(study.name, locations.storage).trials) == 3
    # kappa 1: a seed or two more certify the best (which seeds a decided verdict spares is
    # test_confirmation_queue.py's).
    best = summary.best_feasible()
    assert best.certified
    stored = stored_confirmations(locations, study.name)
    assert confirmation_key(best.number, 1000) in stored
    # A relaunch finds nothing left to confirm.
    again: list[str] = []
    launch(study, locations=locations, on_event=lambda message, done, total: again.append(message))
    assert not any(e.startswith("confirm trial") for e in again)
    assert stored_confirmations(locations, study.name) == stored


class KillAtSecondEpoch(FIFOScheduler):
    """SIGKILLs the first confirmation's worker after its second epoch (once; by then Ray
    has registered the first epoch's checkpoint)."""

    def __init__(self):
        super().__init__()
        self.killed = False

    def on_trial_result(self, tune_controller, trial, result):
        if result.get("epoch") == 2 and not self.killed:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)
        return TrialScheduler.CONTINUE


@pytest.mark.ray
def test_a_killed_confirmation_worker_is_retried_from_its_checkpoint(tmp_path, ray_cluster):
    study = confirmation_study(tmp_path, trials=1, prediction_epochs=2)  # search.confirm.top 0: none at launch
    locations = Locations.resolve(study, tmp_path / "work")
    launch(study, locations=locations)
    assert stored_confirmations(locations, study.name) == {}

    scheduler = KillAtSecondEpoch()
    records = confirm(study, locations=locations, top=1, seeds=1, scheduler=scheduler)

    assert scheduler.killed
    assert [(r["trial"], r["seed"], r["state"]) for r in records] == [(0, 1000, "COMPLETE")]
    assert records[0]["resumed_from_epoch"] >= 1 and records[0]["epoch"] == 3
    assert len(load_optuna_study(study.name, locations.storage).trials) == 1
    _, _, runs = confirmation_runs(locations, study.name)
    assert [(r.data.tags["seed"], r.info.status) for r in runs] == [("1000", "FINISHED")]


def test_confirm_on_an_unknown_study_and_a_bad_confirm_spec_fail_in_one_line(tmp_path, runner):
    from kd_search.cli import main
    from kd_search.errors import StudyFileError
    from kd_search.service.search.optuna_study import create_or_resume

    workdir = str(tmp_path / "work")
    study = confirmation_study(tmp_path, trials=2, prediction_epochs=1)
    create_or_resume(study, Locations.resolve(study, workdir).storage, num_mapped_layers=1)
    result = runner.invoke(main, ["confirm", "nope", "--workdir", workdir])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no study named 'nope'")
    with pytest.raises(StudyFileError, match="search.confirm.top"):
        parse_study(search_study(tmp_path, confirm={"top": -1}))
