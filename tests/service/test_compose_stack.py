"""The compose stack for real: docker/compose.yaml up with PostgreSQL, MLflow, a Ray head and
two Ray worker containers, every image built here from the Debian base (`make image`).

A study is submitted from the host as a Ray job (`ray job submit ... -- kd-search launch`),
runs its trials in the worker containers and is read back from the host against the
stack's PostgreSQL and MLflow server. Then one container at a time dies under a study, as
they do on a cluster: a Ray worker is killed mid-trial, the PostgreSQL container and the
MLflow container are stopped and started again. Every study must end with exactly its
trials finished, nothing lost and nothing trained twice to completion.
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from docker_host import ComposeStack, compose_stack
from mlflow import MlflowClient

from kd_search.study_file import resolve_study_file

pytestmark = [pytest.mark.docker, pytest.mark.cluster]

TRIALS = 4


@pytest.fixture(scope="module")
def stack(image, tmp_path_factory) -> Iterator[ComposeStack]:
    with compose_stack(tmp_path_factory.mktemp("stack"), workers=2) as running:
        yield running


def study_file(stack: ComposeStack, name: str, train_limit: int | None = None) -> Path:
    """The smoke study under another name, in the work dir every container mounts (with
    ``train_limit`` training examples: longer epochs)."""
    data = yaml.safe_load(resolve_study_file("smoke").read_text())
    data["name"] = name
    if train_limit is not None:
        data["task"]["train_limit"] = train_limit
    path = stack.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    return path


@functools.cache
def storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) for the whole module: the tests poll the study
    every few seconds, and a storage per poll held a connection each until garbage
    collection, up to PostgreSQL's 100 clients."""
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def stored(stack: ComposeStack, name: str) -> optuna.Study:
    url = stack.host_env["KD_SEARCH_STORAGE"].replace("kd@", f"kd:{stack.settings['POSTGRES_PASSWORD']}@")
    return optuna.load_study(study_name=name, storage=storage(url))


def tracked_runs(stack: ComposeStack, name: str):
    client = MlflowClient(stack.host_env["KD_SEARCH_TRACKING_URI"])
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.kd_search_study = '{name}'", max_results=100)
    return (client, [r for r in runs if r.data.tags["kd_search_role"] == "study"],
            [r for r in runs if r.data.tags["kd_search_role"] == "trial"])


def assert_finished_once(stack: ComposeStack, name: str) -> optuna.Study:
    """Exactly TRIALS finished trials, each epoch scored once, one MLflow parent, a child each."""
    study = stored(stack, name)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    for trial in study.trials:
        epochs = [score["epoch"] for score in trial.user_attrs.get("epoch_scores", [])]
        assert epochs == sorted(set(epochs)), (trial.number, epochs)  # never trained twice to the end
    client, parents, children = tracked_runs(stack, name)
    assert len(parents) == 1 and len(children) == TRIALS
    assert {r.info.status for r in [*parents, *children]} == {"FINISHED"}
    for child in children:  # every epoch's accuracy arrived once
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "accuracy")]
        assert steps == sorted(set(steps)) and steps, (child.data.tags, steps)
    return study


def wait_for_trial_mid_way(stack: ComposeStack, name: str, timeout: float = 600) -> optuna.trial.FrozenTrial:
    """A RUNNING trial past its first epoch and not yet past its last, with a checkpoint to
    resume from."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for trial in stored(stack, name).get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                if trial.user_attrs.get("checkpoint") and trial.user_attrs.get("nodes") \
                        and trial.user_attrs.get("epoch") == 1:
                    return trial
        except KeyError:  # the study is not created until the teacher is ready
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no trial of {name} reached its first checkpoint in {timeout:.0f} s")


def test_a_study_runs_as_a_ray_job_across_two_worker_containers(stack, tmp_path):
    stack.submit("smoke-job", "kd-search", "launch", "smoke", "--trials", str(TRIALS))
    stack.wait_for_job("smoke-job")
    study = assert_finished_once(stack, "smoke")
    # The head offers no CPU to trials: every trial ran in a worker container, and both served.
    workers = {n["node_id"][:8] for n in stack.ray_nodes() if not n["is_head_node"]}
    nodes = [node for trial in study.trials for node in trial.user_attrs["nodes"]]
    assert set(nodes) == workers and len(workers) == 2
    # The teacher was prepared once and its outputs cached once, in the shared work dir.
    assert len(list((stack.workdir / "teachers").iterdir())) == 1
    assert len([p for p in (stack.workdir / "cache").iterdir() if p.is_dir() and p.name != "data"]) == 1

    # From the host: status, the front and the export, against the same PostgreSQL and MLflow.
    status = stack.kd_search("status")
    assert status.returncode == 0 and "smoke" in status.stdout, status.stdout + status.stderr
    front = stack.kd_search("pareto", "smoke", "--json")
    assert front.returncode == 0, front.stderr
    exported = stack.kd_search("export", "smoke", "--best", "--allow-unconfirmed", "--out", str(tmp_path / "student"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (tmp_path / "student" / "config.json").is_file()


def test_a_worker_container_killed_mid_trial(stack):
    name = "smoke-worker-killed"
    # Epochs of about 40 s: the kill lands inside the second epoch, not after its report (a
    # worker killed between its last report and its end trains that epoch again).
    stack.submit("worker-killed", "kd-search", "launch", str(study_file(stack, name, train_limit=1024)))
    trial = wait_for_trial_mid_way(stack, name)
    node = trial.user_attrs["nodes"][0]
    ip = next(n["node_ip"] for n in stack.ray_nodes() if n["node_id"].startswith(node))
    victim = next(c for c in (stack.container("ray-worker", i) for i in (1, 2)) if stack.container_ip(c) == ip)
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=60)
    try:
        stack.wait_for_job("worker-killed")
        study = assert_finished_once(stack, name)
        moved = study.trials[trial.number]
        # It went on in the surviving container, from the checkpoint the killed one left.
        assert len(moved.user_attrs["nodes"]) == 2 and moved.user_attrs["nodes"][0] == node
    finally:
        subprocess.run(["docker", "start", victim], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 120
        while sum(n["state"] == "ALIVE" and not n["is_head_node"] for n in stack.ray_nodes()) < 2:
            assert time.monotonic() < deadline, "the restarted worker did not rejoin the cluster"
            time.sleep(2)


def epochs_scored(stack: ComposeStack, name: str) -> int:
    return sum(len(t.user_attrs.get("epoch_scores", [])) for t in stored(stack, name).trials)


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(2)


def test_the_postgres_container_stopped_and_started_mid_study(stack):
    name = "smoke-postgres-restarted"
    stack.submit("postgres-restarted", "kd-search", "launch", str(study_file(stack, name)))
    wait_for_trial_mid_way(stack, name)
    container = stack.container("postgres")
    subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=120)
    try:
        # Kept down until the driver has met the outage (its next epoch result), well inside
        # its patience (300 s): the job's logs come from Ray, not from PostgreSQL.
        wait_until(lambda: "unreachable" in stack.job("postgres-restarted")[1], 240, "the driver met the outage")
    finally:  # whatever happens, the next tests get their database back
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=120)
    logs = stack.wait_for_job("postgres-restarted")
    assert_finished_once(stack, name)
    waited = [line for line in logs.splitlines() if "storage postgresql" in line]
    assert any("unreachable" in line for line in waited) and any("reachable again" in line for line in waited), logs
    assert stack.settings["POSTGRES_PASSWORD"] not in logs
    print("\n".join(waited))


def test_the_mlflow_container_stopped_and_started_mid_study(stack):
    name = "smoke-mlflow-restarted"
    stack.submit("mlflow-restarted", "kd-search", "launch", str(study_file(stack, name)))
    wait_for_trial_mid_way(stack, name)
    container = stack.container("mlflow")
    before = epochs_scored(stack, name)
    subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=120)
    try:
        # Kept down until an epoch result has been logged meanwhile (it goes to MLflow too).
        wait_until(lambda: epochs_scored(stack, name) > before, 240, "an epoch result while MLflow was stopped")
        meanwhile = epochs_scored(stack, name) - before
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=120)
    stack.wait_for_job("mlflow-restarted")
    assert_finished_once(stack, name)  # and every epoch's metrics arrived, once
    print(f"{meanwhile} epoch results logged while MLflow was stopped")
