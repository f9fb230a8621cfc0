"""Cluster mode on real servers on loopback: PostgreSQL for Optuna and MLflow, an MLflow
tracking server process, and a Ray cluster of two nodes started with ``ray start``.

Each server is stopped mid-study once, the way it happens on a cluster, and the study
must end with every trial finished and nothing already stored lost.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from servers import BIN, PG_PASSWORD, mlflow_server, postgres_server, ray_cluster
from tiny import search_study, tiny_task_files, write_study

from kd_search.cli import main
from kd_search.engine.spec import parse_study
from kd_search.errors import SearchError
from kd_search.service.search import CONSTRAINT, Locations, launch, load_optuna_study

pytestmark = [pytest.mark.cluster, pytest.mark.ray]


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def study_runs(tracking_uri: str, name: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.kd_search_study = '{name}'", max_results=100)
    return client, [r for r in runs if r.data.tags["kd_search_role"] == "study"], \
        [r for r in runs if r.data.tags["kd_search_role"] == "trial"]


@contextmanager
def postgres_study(tmp_path, monkeypatch, patience_seconds: int):
    """A 4-trial tiny study on a PostgreSQL server (Optuna and MLflow databases), the password
    from the environment as on a cluster (the URLs carry none), the driver's storage patience set."""
    with postgres_server() as pg:
        pg.create_database("optuna")
        pg.create_database("mlflow")
        monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
        monkeypatch.setenv("KD_SEARCH_STORAGE_PATIENCE", str(patience_seconds))
        locations = Locations.resolve(workdir=tmp_path / "work", storage=pg.url("optuna", password=False),
                                      tracking_uri=pg.url("mlflow", password=False))
        yield pg, locations, parse_study(search_study(tmp_path, trials=4))


def test_study_on_postgresql_waits_out_a_server_restart(tmp_path, local_ray, monkeypatch):
    with postgres_study(tmp_path, monkeypatch, patience_seconds=120) as (pg, locations, study):
        events: list[str] = []
        restarted = threading.Event()

        def restart_after_first_trial(message: str, finished: int | None, target: int) -> None:
            events.append(message)
            if finished == 1 and not restarted.is_set():
                restarted.set()
                pg.stop()  # the driver meets the outage with its next storage call
                threading.Timer(8, pg.start).start()

        summary = launch(study, locations=locations, on_event=restart_after_first_trial)
        assert summary.counts() == {"COMPLETE": 4}, [t.attrs.get("failure") for t in summary.trials]
        waited = [e for e in events if e.startswith("storage ")]
        assert any("unreachable" in e and "retrying for up to 120 s" in e for e in waited), events
        assert any("reachable again" in e for e in waited), events
        assert not any(PG_PASSWORD in e for e in events)
        _, parents, children = study_runs(locations.tracking_uri, "tiny")
        assert len(parents) == 1 and len(children) == 4


def test_study_on_postgresql_survives_a_server_stop(tmp_path, local_ray, monkeypatch):
    # A driver that does not wait: the launch ends at the outage, the relaunch goes on.
    with postgres_study(tmp_path, monkeypatch, patience_seconds=0) as (pg, locations, study):
        events: list[str] = []

        def stop_after_first_trial(message: str, finished: int | None, target: int) -> None:
            events.append(message)
            if finished == 1 and not stopped.is_set():
                stopped.set()
                pg.stop()

        stopped = threading.Event()
        with pytest.raises(SearchError) as lost:
            launch(study, locations=locations, on_event=stop_after_first_trial)
        message = str(lost.value)
        assert "\n" not in message and PG_PASSWORD not in message
        assert "relaunch" in message

        pg.start()
        before = {t.number: t for t in load_optuna_study("tiny", locations.storage).trials if t.state.is_finished()}
        assert len(before) >= 1
        summary = launch(study, locations=locations)
        assert summary.counts() == {"COMPLETE": 4}, [t.attrs.get("failure") for t in summary.trials]
        stored = load_optuna_study("tiny", locations.storage)
        assert stored.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
        # A relaunch's sampler, seeded as the first launch's, may propose a finished trial's point
        # again: that proposal is redrawn (told FAIL, hidden from every view), never trained.
        complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 4
        assert all(t.user_attrs.get("kd_search_redrawn") for t in stored.trials if t not in complete)
        assert all(t.constraints[CONSTRAINT] == pytest.approx(t.values[1] - t.user_attrs["kappa"]) for t in complete)
        for number, first in before.items():  # nothing stored before the stop changed
            again = stored.trials[number]
            assert (again.state, again.values, again.datetime_complete) == (first.state, first.values,
                                                                           first.datetime_complete)

        _, parents, children = study_runs(locations.tracking_uri, "tiny")
        assert len(parents) == 1 and len(children) == 4
        for run in [*parents, *children]:
            assert not any(PG_PASSWORD in str(v) for v in [*run.data.params.values(), *run.data.tags.values()])

        # A stopped server: every command fails in one line, before any work, password masked.
        pg.stop()
        monkeypatch.delenv("PGPASSWORD")
        study_file = write_study(tmp_path, search_study(tmp_path))
        urls = ["--storage", pg.url("optuna"), "--tracking-uri", pg.url("mlflow"), "--workdir", str(tmp_path / "w2")]
        for command in (["launch", str(study_file)], ["status"], ["pareto", "tiny"]):
            result = CliRunner().invoke(main, [*command, *urls])
            assert result.exit_code == 2, result.output
            assert result.output.startswith("error: storage postgresql+psycopg://kd:***@127.0.0.1")
            assert result.output.count("\n") == 1 and PG_PASSWORD not in result.output
        assert not (tmp_path / "w2" / "teachers").exists()


def test_study_logs_through_an_mlflow_server_that_goes_away(tmp_path, local_ray, monkeypatch):
    # MLflow's own retries, shortened so the outage reaches kd-search's buffer quickly.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with mlflow_server(tmp_path / "mlflow") as server:
        locations = Locations.resolve(workdir=tmp_path / "work", tracking_uri=server.url)
        study = parse_study(search_study(tmp_path, trials=3, prediction_epochs=2))
        events: list[str] = []
        stopped = threading.Event()

        def stop_at_first_start(message: str, finished: int | None, target: int) -> None:
            events.append(message)
            if "started" in message and not stopped.is_set():
                stopped.set()
                server.stop()
                threading.Timer(3.0, server.start).start()  # back while the study runs on

        summary = launch(study, locations=locations, on_event=stop_at_first_start)
        assert summary.counts() == {"COMPLETE": 3} and summary.tracking_backlog == 0
        assert any("unreachable" in e and "the study goes on" in e for e in events)
        assert any("reachable again" in e for e in events)

        client, parents, children = study_runs(server.url, "tiny")
        assert len(parents) == 1 and len(children) == 3
        for run in children:  # every epoch's metrics, the figures, the final state
            assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
            assert {"confidence.png", "layer_cka.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
            assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE"
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert "pareto_front.png" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        assert list((tmp_path / "mlflow" / "artifacts").rglob("confidence.png"))  # in the server's store


def test_undelivered_mlflow_writes_are_saved_and_replayed(tmp_path, monkeypatch):
    from kd_search.errors import TrackingError
    from kd_search.service.tracking import StudyTracker, check_tracking_uri

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    backlog = tmp_path / "mlflow-backlog.json"
    with mlflow_server(tmp_path / "mlflow") as server:
        tracker = StudyTracker(server.url, "kd-search", "offline", backlog_file=backlog, notify=lambda m: None)
        tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="r0")
        server.stop()
        with pytest.raises(TrackingError, match="unreachable"):
            check_tracking_uri(server.url, timeout=2)
        for epoch in (1, 2):
            tracker.log_epoch(0, {"sigma": 0.1 / epoch}, step=epoch)
        tracker.finish_trial(0, "COMPLETE", {"accuracy": 0.8})
        assert len(tracker.backlog) == 3
        assert tracker.close(grace_seconds=0) == 3 and backlog.is_file()

        server.start()
        replayed = StudyTracker(server.url, "kd-search", "offline", backlog_file=backlog, notify=lambda m: None)
        assert not backlog.exists() and not replayed.backlog
        run_id = replayed.trial_run_id(0)
        history = replayed.client.get_metric_history(run_id, "sigma")
        assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.05)]
        run = replayed.client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["accuracy"] == 0.8


def test_writes_wait_for_a_health_check_while_mlflow_is_down(tmp_path, monkeypatch):
    # MLflow's retries (here a few seconds a request; about two minutes by default) are paid
    # by the write that finds the outage, not by every write after it: the driver goes on.
    from kd_search.service.tracking import StudyTracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    with mlflow_server(tmp_path / "mlflow") as server:
        tracker = StudyTracker(server.url, "kd-search", "outage", notify=lambda m: None)
        tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="r0")
        server.stop()
        started = time.monotonic()
        tracker.log_epoch(0, {"sigma": 0.1}, step=1)  # finds the outage through MLflow's retries
        found = time.monotonic() - started
        started = time.monotonic()
        for epoch in (2, 3, 4):
            tracker.log_epoch(0, {"sigma": 0.1 / epoch}, step=epoch)
        buffered = time.monotonic() - started
        assert found > 1.0 and buffered < 1.0 and len(tracker.backlog) == 4, (found, buffered)
        server.start()
        assert tracker.close(grace_seconds=30) == 0  # delivered once a health check passes
        history = tracker.client.get_metric_history(tracker.trial_run_id(0), "sigma")
        assert [m.step for m in history] == [1, 2, 3, 4]


def node_ids(address: str, env: dict[str, str]) -> dict[int, str]:
    """Node-manager port -> short node id, asked by a short-lived driver of its own."""
    code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps({n['NodeManagerPort']: n['NodeID'][:8] for n in ray.nodes() if n['Alive']}))")
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120, env=env)
    return {int(port): node for port, node in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def test_two_node_ray_cluster_loses_a_node_mid_study(tmp_path):
    with ray_cluster(tmp_path) as cluster:
        worker_port = cluster.add_worker(num_cpus=1)
        worker = node_ids(cluster.address, cluster.env)[worker_port]
        # Long enough epochs (1,500 sentences) that the kill lands mid-trial.
        raw = search_study(tmp_path, trials=4, prediction_epochs=3)
        tiny_task_files(tmp_path, train_rows=1500)
        storage = f"sqlite:///{tmp_path / 'work' / 'optuna.db'}"
        # The driver is `kd-search launch --ray-address`, the command `ray job submit` runs.
        log = open(tmp_path / "driver.log", "w")
        driver = subprocess.Popen([str(BIN / "kd-search"), "launch", str(write_study(tmp_path, raw)), "--ray-address",
                                   cluster.address, "--workdir", str(tmp_path / "work")], stdout=log,
                                  stderr=subprocess.STDOUT, env=cluster.env)
        killed, exported = None, ""
        try:
            while driver.poll() is None:
                time.sleep(0.5)
                page = cluster.metrics()
                if "ray_kd_search_trials{" in page and "ray_kd_search_trial_epoch{" in page:
                    exported = page  # while the driver runs: it exports the study's counts
                if killed is None and (tmp_path / "work" / "optuna.db").exists():
                    running = [t for t in optuna_trials(storage) if t.state == optuna.trial.TrialState.RUNNING]
                    on_worker = [t for t in running if t.user_attrs.get("nodes", [None])[-1] == worker
                                 and t.user_attrs.get("epoch", 0) >= 1]
                    if on_worker:  # mid-trial, on the second node: lose the node
                        killed = on_worker[0].number
                        cluster.kill_worker(worker_port)
        finally:
            if driver.poll() is None:
                driver.kill()
            log.close()
    output = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, output[-3000:]
    assert killed is not None, "no trial ran on the second node"
    trials = {t.number: t for t in optuna_trials(storage)}
    assert [t.state.name for t in trials.values()] == ["COMPLETE"] * 4, output[-3000:]
    assert len({node for t in trials.values() for node in t.user_attrs["nodes"]}) == 2
    moved = trials[killed]
    # It ran on the lost node, then went on from its last checkpoint on the head node.
    assert moved.user_attrs["nodes"][0] == worker and len(moved.user_attrs["nodes"]) == 2, moved.user_attrs
    assert moved.user_attrs["resumed_from_epoch"] >= 1, moved.user_attrs
    # The study's own Prometheus metrics, as the compose stack's Prometheus scrapes them.
    assert re.search(r'ray_kd_search_trials\{[^}]*study="tiny"', exported)
    assert re.search(r'ray_kd_search_trial_epoch\{[^}]*study="tiny"[^}]*trial="\d+"', exported)


def optuna_trials(storage: str) -> list:
    # Read only once the driver has written the schema: two processes creating a fresh
    # SQLite schema at once race on alembic_version, and the observer must not be one.
    path = storage.removeprefix("sqlite:///")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            if not db.execute("SELECT 1 FROM studies WHERE study_name = 'tiny'").fetchone():
                return []
    except sqlite3.OperationalError:  # no file or no tables yet
        return []
    return optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)


def test_launch_against_a_stopped_tracking_server_fails_in_one_line(tmp_path):
    from servers import free_port

    study_file = write_study(tmp_path, search_study(tmp_path))
    dead = f"http://kd:mlflow-Secret@127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(main, ["launch", str(study_file), "--workdir", str(tmp_path / "work"),
                                       "--tracking-uri", dead])
    assert result.exit_code == 2
    assert result.output.startswith("error: MLflow tracking server http://kd:***@127.0.0.1:")
    assert "unreachable" in result.output and result.output.count("\n") == 1
    assert "mlflow-Secret" not in result.output
    assert not (tmp_path / "work" / "teachers").exists()  # nothing was prepared


def test_launch_beside_a_running_ray_head_starts_its_own_ray_unless_told_to_join(tmp_path):
    """With `ray start --head` running on the machine: without --ray-address a launch runs
    on a Ray instance of its own (a bare ray.init() would join the head and refuse the CPU
    count); with it, the trials run on the head's node."""
    with ray_cluster(tmp_path) as cluster:
        head = set(node_ids(cluster.address, cluster.env).values())
        study_file = write_study(tmp_path, search_study(tmp_path, trials=2))
        nodes = {}
        for how, extra in (("own", []), ("joined", ["--ray-address", cluster.address])):
            workdir = tmp_path / how
            result = subprocess.run([str(BIN / "kd-search"), "launch", str(study_file), "--workdir", str(workdir),
                                     *extra], capture_output=True, text=True, timeout=600, env=cluster.env)
            assert result.returncode == 0, result.stderr[-3000:]
            trials = load_optuna_study("tiny", f"sqlite:///{workdir / 'optuna.db'}").trials
            assert [t.state.name for t in trials] == ["COMPLETE"] * 2, result.stderr[-3000:]
            nodes[how] = {node for t in trials for node in t.user_attrs["nodes"]}
    assert nodes["joined"] == head
    assert len(nodes["own"]) == 1 and not nodes["own"] & head
