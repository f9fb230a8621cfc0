"""The search on tiny random BERTs with real Ray (local, 2 CPUs), Optuna on SQLite and MLflow.

Faults are real: a worker process is SIGKILLed, a trial's loss becomes NaN, a Ray
scheduler stops a trial, and the driver itself is SIGKILLed and relaunched.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from tiny import search_study, tiny_task_files, write_study

from kd_search.cli import main
from kd_search.engine.search_settings import SearchSpec
from kd_search.engine.spec import parse_study
from kd_search.errors import SearchError
from kd_search.service import pareto
from kd_search.service.search import (
    CONSTRAINT,
    Locations,
    launch,
    load_optuna_study,
    read_lease,
    summarize,
)
from kd_search.service.search.driver import Driver
from kd_search.service.search.optuna_study import (
    STOPPED_ATTR,
    create_or_resume,
    make_sampler,
    startup_trials,
)
from kd_search.study_file import load_study, shipped_studies


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def mlflow_runs(locations: Locations, name: str):
    client = MlflowClient(locations.tracking_uri)
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.kd_search_study = '{name}'", max_results=1000)
    parents = [r for r in runs if r.data.tags["kd_search_role"] == "study"]
    children = [r for r in runs if r.data.tags["kd_search_role"] == "trial"]
    return client, parents, children


# --- the front, pure ---

def test_front_matches_optuna_best_trials_under_the_constraint():
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    points, feasible = [], []
    for _ in range(40):
        metric, sigma, kappa = float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.0, 0.1)), 0.05
        trial = study.ask()
        trial.set_constraint(CONSTRAINT, sigma - kappa)
        study.tell(trial, [metric, sigma])
        points.append((metric, sigma))
        feasible.append(sigma <= kappa)
    ours = sorted(pareto.pareto_front(points, feasible))
    assert ours == sorted(t.number for t in study.best_trials)
    assert all(feasible[i] for i in ours) and len(ours) >= 2


def test_hypervolume_of_a_staircase_by_hand():
    # Rectangles from the reference (0.5, 0.1): 0.3 x 0.08, plus 0.1 x (0.02 - 0.01) below it.
    assert pareto.hypervolume([(0.8, 0.02), (0.6, 0.01), (0.55, 0.05)], (0.5, 0.1)) == pytest.approx(0.3 * 0.08 + 0.1 * 0.01)
    assert pareto.hypervolume([(0.4, 0.01)], (0.5, 0.1)) == 0.0


# --- faults inside one launch ---

class StopAndKill(FIFOScheduler):
    """A real Ray scheduler: SIGKILLs trial 0's worker after its second epoch (once; by
    then Ray has registered the first epoch's checkpoint) and stops trial 2 after its
    first epoch."""

    def __init__(self):
        super().__init__()
        self.killed = False

    def on_trial_result(self, tune_controller, trial, result):
        number = trial.config["number"]
        if number == 0 and result.get("epoch") == 2 and not self.killed:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)
        if number == 2 and result.get("epoch") == 1:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


@pytest.mark.ray
def test_killed_worker_is_retried_nan_fails_stopped_trial_is_pruned(tmp_path, ray_cluster, monkeypatch):
    # mo_asha in the study file: the workers measure sigma after every epoch (the
    # scheduler itself is StopAndKill), so every epoch has scores to store.
    study = parse_study(search_study(tmp_path, prediction_epochs=2, scheduler="mo_asha"))
    locations = Locations.resolve(study, tmp_path / "work")
    optuna_study, resumed = create_or_resume(study, locations.storage, num_mapped_layers=1)
    assert not resumed
    optuna_study.enqueue_trial({"temperature": 1e-40})  # trial 1: the prediction loss overflows to NaN

    # What storage holds when each checkpoint is recorded: a driver killed right after
    # must find that checkpoint's epoch scored (a relaunch resumes after it).
    at_checkpoint = []
    record_checkpoint = Driver.on_checkpoint

    def on_checkpoint(driver, ray_trial_id, path):
        trial = driver.trials[ray_trial_id]
        attrs = driver.optuna_study._storage.get_trial(trial._trial_id).user_attrs
        at_checkpoint.append((trial.number, attrs.get("epoch"), [s["epoch"] for s in attrs.get("epoch_scores", [])]))
        record_checkpoint(driver, ray_trial_id, path)

    monkeypatch.setattr(Driver, "on_checkpoint", on_checkpoint)
    scheduler = StopAndKill()
    summary = launch(study, locations=locations, scheduler=scheduler)

    assert scheduler.killed
    states = {t.number: t.state for t in summary.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "PRUNED", 3: "COMPLETE"}
    stored = {t.number: t for t in load_optuna_study(study.name, locations.storage).trials}
    assert stored[0].user_attrs["resumed_from_epoch"] >= 1  # continued from a checkpoint, not from scratch
    assert stored[0].user_attrs["epoch"] == 3
    assert "non-finite" in stored[1].user_attrs["failure"]
    assert stored[2].values is None and stored[2].user_attrs["epoch"] == 1
    # The epoch a scheduler stops a trial at is stored before its checkpoint is.
    assert (2, 1, [1]) in at_checkpoint and stored[2].user_attrs["epoch_scores"][-1]["epoch"] == 1
    # Ray marks only that result done: the stop is stored for a relaunch, and no other trial has one.
    assert {n: t.user_attrs.get(STOPPED_ATTR) for n, t in stored.items()} == {0: None, 1: None, 2: 1, 3: None}
    assert all(scored and scored[-1] == epoch for _, epoch, scored in at_checkpoint), at_checkpoint
    front = {t.number for t in summary.front}
    assert front and front <= {0, 3}
    for number in (0, 3):
        assert len(stored[number].values) == 2 and CONSTRAINT in stored[number].constraints

    client, parents, children = mlflow_runs(locations, study.name)
    assert len(parents) == 1 and len(children) == 4
    by_number = {int(r.data.tags["optuna_trial_number"]): r for r in children}
    assert {n: r.data.tags["state"] for n, r in by_number.items()} == states
    assert {n: r.info.status for n, r in by_number.items()} == {0: "FINISHED", 1: "FAILED", 2: "KILLED", 3: "FINISHED"}
    assert {n for n, r in by_number.items() if r.data.tags["pareto"] == "true"} == front
    assert "non-finite" in by_number[1].data.tags["error"]
    assert by_number[2].data.metrics["epoch"] == 1  # the epoch it was stopped at is on its run too
    # Kept students: the front only (the default policy).
    kept = {int(p.parent.name) for p in locations.study_dir(study.name).glob("trials/*/student")}
    assert kept == front


# --- the driver killed and relaunched ---

def _poll(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


def _launch_command(tmp_path, storage: str | None = None, train_rows: int = 64,
                    **search) -> tuple[list[str], Locations]:
    """``kd-search launch`` of the tiny study in a subprocess, with epochs long enough (a
    second or more, one example per step) for a poll to see a trial mid-way."""
    spec = search_study(tmp_path, trials=4, prediction_epochs=4, **search)
    spec["distillation"]["batch_size"] = 1
    tiny_task_files(tmp_path, train_rows=train_rows)
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "kd_search.cli", "launch", str(write_study(tmp_path, spec)),
               "--workdir", str(workdir), *(["--storage", storage] if storage else [])]
    return command, Locations.resolve(None, workdir, storage)


def _launch_env(**extra: str) -> dict[str, str]:
    # The study's locations come from the options alone, whatever this process's environment says.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KD_SEARCH_STORAGE",
                                                            "KD_SEARCH_TRACKING_URI", "RAY_ADDRESS",
                                                            "KD_SEARCH_DRIVER_GRACE")}
    return env | extra


@functools.cache
def _polling_storage(url: str) -> optuna.storages.RDBStorage:
    # One storage (one connection pool) per database for the polls: a storage per poll held
    # a connection each until garbage collection, up to PostgreSQL's 100 clients.
    return optuna.storages.RDBStorage(url)


def _stored_trials(storage: str):
    try:
        return optuna.load_study(study_name="tiny", storage=_polling_storage(storage)).trials
    except Exception:  # the study (or the database) is not created yet
        return None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.cluster)])
def storage_url(request):
    if request.param == "sqlite":
        yield None
        return
    from servers import postgres_server

    with postgres_server() as pg:
        pg.create_database("optuna")
        yield pg.url("optuna")


@pytest.mark.ray
def test_second_launch_while_the_first_runs_is_refused_and_the_first_finishes(tmp_path, storage_url):
    # Epochs of several seconds (1,200 steps): the first launch outlives the second ones' start-up.
    command, locations = _launch_command(tmp_path, storage_url, train_rows=1200)
    env = _launch_env()
    log = (tmp_path / "driver.log").open("w")
    first = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=log, env=env)
    try:
        _poll(lambda: [t for t in _stored_trials(locations.storage) or []
                       if t.state.name == "RUNNING" and t.user_attrs.get("epoch", 0) >= 1], timeout=240)
        # At once, while the first trains: a plain relaunch, a budget extension, a short grace
        # (which still sees a live driver) and a confirmation.
        attempts = [command, command + ["--trials", "6"], command + ["--driver-grace", "1"],
                    [*command[:3], "confirm", "tiny", *command[5:]]]
        seconds = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                   for args in attempts]
        refusals = [(second.wait(timeout=180), second.communicate()[1]) for second in seconds]
        assert first.poll() is None, "the first launch ended before the second ones were refused"
        for returncode, stderr in refusals:
            assert returncode == 2, stderr[-3000:]
            lines = stderr.splitlines()
            assert stderr.count("\n") == 1 and lines[0].startswith("error: study 'tiny' is being run by another driver "), lines
            assert f"(pid {first.pid} on {socket.gethostname()}, started " in lines[0] and "last seen" in lines[0]
            assert "status tiny --workdir " in lines[0]
        assert first.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    trials = load_optuna_study("tiny", locations.storage).trials
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    # Nothing adopted, nothing trained twice: every trial ran once, from its first epoch.
    assert [t.user_attrs.get("resumed_from_epoch") for t in trials] == [0] * 4
    assert len({t.user_attrs["ray_trial_id"] for t in trials}) == 4
    assert len(list((locations.study_dir("tiny") / "ray").iterdir())) == 1  # one Tune run: the first launch's
    _, parents, children = mlflow_runs(locations, "tiny")
    assert len(parents) == 1 and len(children) == 4
    assert read_lease(locations.storage, "tiny") is None  # released when the first launch ended


@pytest.mark.ray
@pytest.mark.parametrize("scheduler", ["fifo", "mo_asha"])
def test_driver_sigkill_and_relaunch_finishes_the_study_without_rerunning(tmp_path, scheduler, runner):
    command, locations = _launch_command(tmp_path, scheduler=scheduler)
    grace = 20
    env = _launch_env(KD_SEARCH_DRIVER_GRACE=str(grace))
    log = (tmp_path / "driver.log").open("w")  # a file, not a pipe nobody reads (it would fill and block)
    driver = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=log, env=env)

    # Multi-objective ASHA may stop every trial but one at a rung: a stopped (PRUNED) trial
    # has ended too, and must be kept as it is.
    finished = ("COMPLETE", "PRUNED") if scheduler == "mo_asha" else ("COMPLETE",)

    def one_complete_one_checkpointed():
        trials = _stored_trials(locations.storage) or []
        complete = [t for t in trials if t.state.name in finished]
        # Mid-way (epoch 1-3 of 5), so it cannot finish in the instant before the kill.
        running = [t for t in trials if t.state.name == "RUNNING" and "checkpoint" in t.user_attrs
                   and t.user_attrs.get("epoch", 0) <= 3]
        return (complete, running) if complete and running else None

    try:
        complete, running = _poll(one_complete_one_checkpointed, timeout=240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait()
    killed_at = time.monotonic()
    before = {t.number: (t.values, t.datetime_complete) for t in complete}

    # Inside the grace period the dead driver cannot be told from a live one: refused, nothing touched.
    refused = runner.invoke(main, [*command[3:], "--driver-grace", str(grace)])
    assert time.monotonic() - killed_at < grace
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith(f"error: study 'tiny' is being run by another driver (pid {driver.pid} on ")
    assert refused.output.count("\n") == 1
    assert [t.state.name for t in load_optuna_study("tiny", locations.storage).trials].count("RUNNING") >= 1

    time.sleep(max(0.0, grace + 1 - (time.monotonic() - killed_at)))
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stderr.split())  # the live view wraps its lines
    assert f"the driver pid {driver.pid} on {socket.gethostname()} was last seen " in said
    assert "is taken as dead: its RUNNING trials are adopted" in said
    trials = load_optuna_study("tiny", locations.storage).trials
    # Exactly the asked number, all finished (a tiny random teacher can leave sigma undefined:
    # FAIL; multi-objective ASHA stops trials at its rungs: PRUNED).
    ended = ("COMPLETE", "FAIL", "PRUNED") if scheduler == "mo_asha" else ("COMPLETE", "FAIL")
    assert len(trials) == 4 and all(t.state.name in ended for t in trials)
    assert not [t for t in trials if t.user_attrs.get("kd_search_interrupted")]
    for number, (values, completed_at) in before.items():  # kept, not re-run
        assert trials[number].values == values and trials[number].datetime_complete == completed_at
    for interrupted in running:  # adopted and continued from its checkpoint, not from scratch
        assert trials[interrupted.number].user_attrs["resumed_from_epoch"] >= 1
    if scheduler == "mo_asha":  # every epoch's scores stored once, for the next relaunch to replay
        for t in trials:
            epochs = [score["epoch"] for score in t.user_attrs.get("epoch_scores", [])]
            assert epochs == sorted(set(epochs)) and len(epochs) == t.user_attrs.get("epoch", 0)
        assert {t.state.name for t in trials if t.user_attrs.get("epoch", 0) < 5} <= {"PRUNED", "FAIL"}
    _, parents, children = mlflow_runs(locations, "tiny")
    assert len(parents) == 1 and len(children) == 4

    again = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)  # nothing left to do
    assert again.returncode == 0
    assert len(load_optuna_study("tiny", locations.storage).trials) == 4


# --- the CLI around a finished study ---

def test_relaunch_with_a_changed_study_file_is_refused(tmp_path, runner):
    workdir = tmp_path / "work"
    study = parse_study(search_study(tmp_path))
    create_or_resume(study, Locations.resolve(study, workdir).storage, num_mapped_layers=1)
    changed = search_study(tmp_path)
    changed["distillation"]["alpha"] = 0.3
    result = runner.invoke(main, ["launch", str(write_study(tmp_path, changed)), "--workdir", str(workdir)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: study 'tiny' in sqlite:///")
    assert "distillation.alpha" in result.output


def test_commands_on_unknown_studies_fail_in_one_line(tmp_path, runner):
    workdir = str(tmp_path / "work")
    study = parse_study(search_study(tmp_path))
    create_or_resume(study, Locations.resolve(study, workdir).storage, num_mapped_layers=1)
    for args in (["pareto", "nope"], ["export", "nope", "--best", "--out", str(tmp_path / "x")],
                 ["report", "nope", "--out", str(tmp_path / "r.html")], ["status", "nope"],
                 ["export", "tiny", "--best", "--out", str(tmp_path / "x")],
                 ["export", "tiny", "--trial", "0", "--best", "--out", str(tmp_path / "x")],
                 ["pareto", "tiny", "--storage", "nosuchdb://x"]):
        result = runner.invoke(main, [*args, "--workdir", workdir])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert not (tmp_path / "x").exists()


def test_launch_with_a_bad_storage_url_fails_before_any_work(tmp_path, runner):
    study_file = write_study(tmp_path, search_study(tmp_path))
    workdir = tmp_path / "work"
    result = runner.invoke(main, ["launch", str(study_file), "--workdir", str(workdir),
                                  "--storage", "postgresql+nosuchdriver://kd:secret@db/optuna"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: storage postgresql+nosuchdriver://kd:***@db/optuna")
    assert "secret" not in result.output
    assert not (workdir / "teachers").exists()  # nothing was prepared


def test_sampler_choice_and_budget_scaled_startup(tmp_path):
    study = parse_study(search_study(tmp_path, trials=16))
    assert startup_trials(study) == 4
    for kind, name in (("tpe", "TPESampler"), ("gp", "GPSampler"), ("nsga2", "NSGAIISampler"),
                       ("random", "RandomSampler")):
        assert type(make_sampler(kind, seed=0, startup_trials=4)).__name__ == name
    assert make_sampler("nsga2", seed=0, startup_trials=4)._population_size == 4
    # benchmarks/search_quality.py chose the GP sampler; every shipped study uses the default.
    assert SearchSpec().sampler == "gp"
    studies = [name for name in shipped_studies() if name != "compare_methods"]
    assert len(studies) == 14
    for name in studies:
        assert load_study(name).search.sampler == "gp", name


def test_reading_a_study_does_not_import_ray():
    # status, pareto, export and report only read the storage: they must not pay Ray's import.
    code = ("import sys, kd_search.cli, kd_search.service.report, kd_search.service.search.optuna_study; "
            "from kd_search.service.search import Locations, SearchError, summarize; print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.ray
def test_pareto_json_matches_storage(tmp_path, runner, ray_cluster):
    study = parse_study(search_study(tmp_path, trials=3))
    workdir = tmp_path / "work"
    launch(study, locations=Locations.resolve(study, workdir))
    locations = Locations.resolve(None, workdir)
    result = runner.invoke(main, ["pareto", "tiny", "--json", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    front = json.loads(result.output.strip().splitlines()[-1])
    trials = [t for t in load_optuna_study("tiny", locations.storage).trials if t.state.name == "COMPLETE"]
    expected = [trials[i] for i in pareto.pareto_front([tuple(t.values) for t in trials],
                                                        [t.values[1] <= t.user_attrs["kappa"] for t in trials])]
    assert sorted(item["trial"] for item in front) == sorted(t.number for t in expected)
    for item in front:
        assert set(item) >= {"trial", "accuracy", "sigma", "kappa", "phi_cnf", "params"} and item["phi_cnf"]
    with pytest.raises(SearchError, match="no study named"):
        load_optuna_study("other", locations.storage)
    summary = summarize(load_optuna_study("tiny", locations.storage))
    assert summary.counts() == {"COMPLETE": 3}
    # Two at a time: the third trial ran in a worker process one of the first two left.
    pids = [json.loads((locations.trial_dir("tiny", n) / "timings.json").read_text())["pid"] for n in range(3)]
    assert pids[0] != pids[1] and pids[2] in pids[:2]
