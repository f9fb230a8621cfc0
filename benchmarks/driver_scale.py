"""The search driver's cost per trial event as a study grows: wall time, storage statements, MLflow requests.

The real ``Driver`` is driven directly, without Ray. A study of N trials is made by
writing its first N - 10 trials straight to Optuna storage and MLflow (finished, with
the pareto tags and kept students a driver would have left; not measured), then a new
``Driver`` (as a relaunch opens one) drives the last 10: for each, ``suggest``, one
``on_result`` (its only epoch) and ``on_complete``, with synthetic results as a
trainable that returns at once would produce them (every 7th trial is stopped by the
scheduler, every 11th has a non-finite loss; the rest are COMPLETE, feasible when
sigma <= kappa). Each trial leaves a ``student/`` directory, as a worker does, so the
keep policy has something to delete. Optuna storage is SQLite with the random sampler,
so the sampler's own model-fitting does not hide the driver's cost.

How the figures are counted, per trial event (averaged over the 30 events of the last
10 trials; ``opening`` is the driver's one-off cost when it is created):

- ``ms``: the driver's wall time (suggest + on_result + on_complete, divided by 3).
- ``sql``: every statement the driver's process sends to Optuna storage, counted with a
  SQLAlchemy ``before_cursor_execute`` listener on the storage engine (``sql_read``:
  the SELECTs among them).
- ``mlflow_calls``: every method call on the tracker's ``MlflowClient`` (a counting proxy
  replaces ``tracker.client``); with a server each is one request or more.
- ``http``: every HTTP request this process sends on the wire, counted in urllib3's
  ``HTTPConnectionPool._make_request`` (retries included; 0 with a local tracking URI).

Modes: ``server`` starts ``mlflow server`` (SQLite backend, loopback, a free port) from
this interpreter's environment and stops it at the end; ``local`` uses a
``sqlite:///`` MLflow URI in process.

    python benchmarks/driver_scale.py [--mode server|local|both] [--checkpoints 10,100,1000]

At the end a digest of what the study left (front, pareto tags, kept students, live view
text, state counts) shows whether two versions of the driver behave the same. The last
line is one JSON object: per mode, per checkpoint, the per-event figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
import urllib3
import yaml
from _common import json_line
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
from kd_search.engine.spec import Study
from kd_search.service.search.driver import Driver
from kd_search.service.search.locations import Locations, trial_dir
from kd_search.service.search.optuna_study import create_or_resume
from kd_search.service.search.records import RECORDED_METRICS, summarize
from kd_search.service.tracking import StudyTracker
from kd_search.study_file import resolve_study_file

NUM_MAPPED = 3  # smoke.yaml maps three teacher layers
KAPPA = 0.2
WINDOW = 10  # trials averaged at each checkpoint


class Counts:
    """Running totals of what the driver sent, read before and after each window."""

    def __init__(self) -> None:
        self.sql = self.sql_read = self.mlflow_calls = self.http = 0

    def snapshot(self) -> dict[str, int]:
        return {"sql": self.sql, "sql_read": self.sql_read, "mlflow_calls": self.mlflow_calls, "http": self.http}


class CountingClient:
    """Passes every call to the wrapped MlflowClient, counting it."""

    def __init__(self, client: Any, counts: Counts):
        self._client, self._counts = client, counts

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts.mlflow_calls += 1
            return attribute(*args, **kwargs)

        return counted


class FakeGauges:
    """Stands in for the Prometheus gauges: remembers the counts the driver set."""

    def __init__(self) -> None:
        self.history: list[dict[str, int]] = []

    def set_counts(self, counts: dict[str, int]) -> None:
        self.history.append({k: v for k, v in sorted(counts.items()) if v})


@contextmanager
def counting_http(counts: Counts):
    """Count every HTTP request this process sends, retries included."""
    pool = urllib3.connectionpool.HTTPConnectionPool
    original = pool._make_request

    def counted(self, *args, **kwargs):
        counts.http += 1
        return original(self, *args, **kwargs)

    pool._make_request = counted
    try:
        yield
    finally:
        pool._make_request = original


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(root: Path):
    """``mlflow server`` on loopback (SQLite backend); stopped, with its children, on exit."""
    port = free_port()
    log = open(root / "mlflow-server.log", "wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow-server.db'}", "--artifacts-destination", str(root / "mlartifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"mlflow server did not start (log: {root / 'mlflow-server.log'})") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def bench_study(workdir: Path, trials: int) -> Study:
    spec = yaml.safe_load(resolve_study_file("smoke").read_text())
    spec["name"] = "scale"
    spec["objectives"]["confidence"]["kappa"] = KAPPA
    spec["search"] |= {"sampler": "random", "concurrency": 1, "enqueue_defaults": False}
    # One experiment per study size: the tracking server is shared by them all.
    spec["tracking"] = {"workdir": str(workdir), "experiment": f"scale-{trials}"}
    return Study.model_validate(spec)


def synthetic_result(number: int, rng: np.random.Generator) -> dict[str, Any]:
    result = {"accuracy": float(rng.uniform(0.5, 0.9)), "sigma": float(rng.uniform(0.01, 0.3)), "kappa": KAPPA,
              "epoch": 1, "total_epochs": 1, "node_id": "f00dcafe" * 4, "train_seconds": 1.0}
    if number % 7 == 6:
        result["total_epochs"] = 2  # stopped by the scheduler after its first epoch
    elif number % 11 == 10:
        result |= {"nonfinite": True, "error": "non-finite loss"}
    return result


def seed(study: Study, optuna_study, tracker: StudyTracker, study_dir: Path, count: int,
         rng: np.random.Generator) -> None:
    """``count`` finished trials written straight to storage and MLflow, as past events left them."""
    distributions = search_distributions(study, NUM_MAPPED)
    params = {name: d.choices[0] if isinstance(d, CategoricalDistribution) else d.low
              for name, d in distributions.items()}
    trials = []
    for number in range(count):
        result = synthetic_result(number, rng)
        state, values = outcome(result)
        trials.append(optuna.trial.create_trial(
            state=state, values=values, params=params, distributions=distributions,
            user_attrs={k: v for k, v in result.items() if k in RECORDED_METRICS}))
    optuna_study.add_trials(trials)
    front = {t.number for t in summarize(optuna_study).front}
    for number in range(count):
        tracker.client.create_run(tracker.experiment_id, run_name=f"trial-{number:03d}", tags={
            "mlflow.parentRunId": tracker.parent_id, "kd_search_study": study.name, "kd_search_role": "trial",
            "optuna_trial_number": str(number), "ray_trial_id": f"seed_{number:05d}",
            "state": trials[number].state.name, "pareto": "true" if number in front else "false"})
        if number in front:
            write_student(trial_dir(study_dir, number))


def outcome(result: dict[str, Any]) -> tuple[TrialState, list[float] | None]:
    if result.get("nonfinite"):
        return TrialState.FAIL, None
    if result["epoch"] < result["total_epochs"]:
        return TrialState.PRUNED, None
    return TrialState.COMPLETE, [result["accuracy"], result["sigma"]]


def write_student(directory: Path) -> None:
    student = directory / "student"
    student.mkdir(parents=True, exist_ok=True)
    (student / "model.safetensors").write_bytes(b"0" * 64)


def run_checkpoint(tracking_uri: str, workdir: Path, trials: int, counts: Counts) -> tuple[dict, str]:
    """Seed a study with all but the last ``WINDOW`` trials, then drive those through a new driver."""
    study = bench_study(workdir, trials)
    locations = Locations.resolve(study, workdir, tracking_uri=tracking_uri)
    study_dir = locations.study_dir(study.name)
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna_study, _ = create_or_resume(study, locations.storage, NUM_MAPPED)
    rng = np.random.default_rng(trials)
    driven = min(WINDOW, trials)
    seed(study, optuna_study, StudyTracker(locations.tracking_uri, locations.experiment, study.name),
         study_dir, trials - driven, rng)
    engine = optuna_study._storage._backend.engine

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def count_sql(conn, cursor, statement, parameters, context, executemany):
        counts.sql += 1
        counts.sql_read += statement.lstrip().upper().startswith("SELECT")

    messages: list[str] = []
    start, started = counts.snapshot(), time.perf_counter()
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name)
    tracker.client = CountingClient(tracker.client, counts)
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, NUM_MAPPED),
                    default_hyperparameters(study, NUM_MAPPED), [], trials,
                    lambda message, done, total: messages.append(f"{message} [{done}/{total}]"))
    driver.gauges = FakeGauges()
    opening = {"ms": round(1000 * (time.perf_counter() - started), 1)} | {
        k: v - start[k] for k, v in counts.snapshot().items()}
    start, seconds = counts.snapshot(), 0.0
    for index in range(trials - driven, trials):
        ray_trial_id = f"bench_{index:05d}"
        started = time.perf_counter()
        config = driver.suggest(ray_trial_id)
        seconds += time.perf_counter() - started
        write_student(trial_dir(study_dir, config["number"]))
        result = synthetic_result(config["number"], rng)
        started = time.perf_counter()
        driver.on_result(ray_trial_id, result)
        driver.on_complete(ray_trial_id, result, error=False)
        seconds += time.perf_counter() - started
    events = 3 * driven
    row = {"ms": round(1000 * seconds / events, 2)} | {
        k: round((v - start[k]) / events, 2) for k, v in counts.snapshot().items()}
    row["opening"] = opening
    digest = behaviour_digest(driver.refresh_front(), tracker, study_dir, messages, driver.gauges.history)
    tracker.end_study("FINISHED")
    tracker.close()
    return row, digest


def behaviour_digest(summary, tracker: StudyTracker, study_dir: Path, messages: list[str],
                     gauges: list[dict[str, int]]) -> str:
    """One hash of what the study left: front, pareto tags, kept students, live text, counts."""
    client = tracker.client._client
    # Tags of every run of the study, not just this launch's: the seeded runs are relaunched ones.
    tagged = sorted(int(run.data.tags["optuna_trial_number"]) for run in client.search_runs(
        [tracker.experiment_id], filter_string="tags.pareto = 'true'", max_results=50000))
    front = sorted(t.number for t in summary.front)
    kept = sorted(int(p.parent.name.split("-")[-1]) for p in study_dir.glob("trials/*/student"))
    print(f"front {front}; pareto tags match: {tagged == front}; kept students match: {kept == front}; "
          f"states {dict(Counter(t.state for t in summary.trials))}")
    text = json.dumps([front, tagged, kept, messages, gauges])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["server", "local", "both"], default="both")
    parser.add_argument("--checkpoints", default="10,100,1000")
    args = parser.parse_args()
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    results: dict[str, Any] = {}
    modes = ["server", "local"] if args.mode == "both" else [args.mode]
    for mode in modes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            started, counts, rows, digests = time.perf_counter(), Counts(), {}, []
            with counting_http(counts), (mlflow_server(root) if mode == "server" else nullcontext()) as url:
                for trials in checkpoints:
                    uri = url or f"sqlite:///{root / f'mlflow-{trials}.db'}"
                    rows[str(trials)], digest = run_checkpoint(uri, root / f"work-{trials}", trials, counts)
                    digests.append(digest)
                    print(f"{mode:6s} {trials:5d} trials, per event: " + ", ".join(
                        f"{k} {v}" for k, v in rows[str(trials)].items()), flush=True)
            print(f"{mode}: {time.perf_counter() - started:.0f} s in all; behaviour digests {digests}", flush=True)
            results[mode] = {"per_event": rows, "digests": digests}
    json_line(results)


if __name__ == "__main__":
    main()
