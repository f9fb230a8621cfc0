"""MLflow tracking of a study: one parent run, one nested child run per Optuna trial.

Only the search driver writes here (workers report through Ray), so a SQLite tracking
store never sees two writers. Runs are found again by their tags, which is what makes a
relaunched study re-open its parent run and its trials' runs instead of duplicating them:

- parent: ``kd_search_study=<name>``, ``kd_search_role=study``
- child:  ``mlflow.parentRunId=<parent>``, ``kd_search_role=trial``,
  ``optuna_trial_number=<n>``, ``ray_trial_id``, ``state``, ``pareto`` (``true``/``false``),
  ``phi_cnf`` (the trial's verdict over its seeds: ``certified``, ``unconfirmed`` or
  ``fails``; set when the trial finishes and again whenever a confirmation changes it)
- confirmation (trial ``n`` retrained with another seed), also nested under the parent:
  ``kd_search_role=confirmation``, ``kd_search_confirms=<n>``, ``seed``, ``ray_trial_id``,
  ``state``

The experiment is marked a classic ML experiment (``mlflow.experimentKind``) and carries,
per study, a saved runs-table view (``mlflow.sharedViewState.<key>``: MLflow's own "share
view" tag) that ``front_url`` opens: the study's front trials as a flat list, ordered by
accuracy, with accuracy, sigma, kappa and phi_cnf as columns.
``tags.phi_cnf = "certified"`` filters a study's certified trials.

A tracking server that is briefly unreachable does not stop a study. MLflow's client
retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, with backoff); a write that
still fails is buffered, in order, and replayed before the next one. Writes still
undelivered when the launch ends are saved to the study's ``mlflow-backlog.json``
(versioned JSON, see ``kd_search.service.backlog``; never a pickle) and replayed by the
next launch of the study, so no metric is lost.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException

from kd_search.errors import TrackingError
from kd_search.service.backlog import legacy_backlog, load_backlog, save_backlog
from kd_search.urls import display_url, error_reason

logger = logging.getLogger("kd_search")

# The experiment kind MLflow's own kind selector writes; "custom_model_development" is its
# classic training experiment (runs table), as opposed to "genai_development" (traces).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Saved runs-table views: the UI loads the JSON in this experiment tag for
# ``?viewStateShareKey=<key>`` (search facets and table state, as its "Share" button saves).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# The columns of the front view: what a user compares front members by.
FRONT_COLUMNS = ("accuracy", "sigma", "kappa", "phi_cnf")

# MLflow rejects param values longer than this; study parameters are short numbers.
_PARAM_LIMIT = 6000


def default_tracking_uri(workdir: str | Path) -> str:
    """The SQLite MLflow store kept beside the study's other files.

    Example:
        >>> default_tracking_uri("/tmp/runs")
        'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def check_tracking_uri(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail now, in one line, if the tracking server or database cannot be reached.

    MLflow's own client would retry a dead server for minutes (and a dead database for
    nearly an hour) before the first trial; a study should not start that way.

    Example:
        >>> check_tracking_uri("http://127.0.0.1:9", timeout=1)
        Traceback (most recent call last):
        kd_search.errors.TrackingError: MLflow tracking server http://127.0.0.1:9: unreachable (...)
    """
    if tracking_uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
        except requests.RequestException as error:
            raise TrackingError(f"MLflow tracking server {display_url(tracking_uri)}: unreachable "
                                f"({error_reason(error)[:200]})") from None
    elif not tracking_uri.startswith(("sqlite", "file:", "/", "databricks")) and "://" in tracking_uri:
        import sqlalchemy

        connect_args = {"connect_timeout": int(timeout)} if tracking_uri.startswith("postgresql") else {}
        try:
            with sqlalchemy.create_engine(tracking_uri, connect_args=connect_args).connect():
                pass
        except Exception as error:  # any driver's error: the user needs the URL and the reason
            raise TrackingError(f"MLflow backend {display_url(tracking_uri)}: cannot connect "
                                f"({error_reason(error)})") from None


def is_unreachable(error: BaseException) -> bool:
    """Whether an MLflow error means the server or its database is (briefly) out of reach.

    MLflow has already retried such a request; anything else (a bad request, a bug) is
    raised, never buffered.

    Example:
        >>> is_unreachable(MlflowException("API request to http://mlflow/api failed with exception ..."))
        True
        >>> is_unreachable(MlflowException("Invalid metric name"))
        False
    """
    if isinstance(error, RestException):
        return error.get_http_status_code() in (408, 429, 500, 502, 503, 504)
    if isinstance(error, MlflowException):
        return error.error_code == "TEMPORARILY_UNAVAILABLE" or str(error.message).startswith("API request to")
    return False


def front_view(study_name: str) -> dict[str, Any]:
    """The MLflow runs-table state listing a study's front trials, flat, most accurate first.

    A search filter with an order other than start time makes MLflow list matching child
    runs on their own rows instead of folding them under their parent run.

    Example:
        >>> view = front_view("demo")
        >>> view["searchFilter"]
        "tags.kd_search_study = 'demo' and tags.kd_search_role = 'trial' and tags.pareto = 'true'"
        >>> view["orderByKey"], view["selectedColumns"][:2]
        ('metrics.`accuracy`', ['metrics.`accuracy`', 'metrics.`sigma`'])
    """
    quoted = study_name.replace("'", "\\'")
    return {
        "searchFilter": f"tags.kd_search_study = '{quoted}' and tags.kd_search_role = 'trial' "
                        "and tags.pareto = 'true'",
        "orderByKey": f"metrics.`{FRONT_COLUMNS[0]}`", "orderByAsc": False, "lifecycleFilter": "Active",
        "selectedColumns": [f"metrics.`{name}`" for name in FRONT_COLUMNS] + ["tags.`optuna_trial_number`"],
        "viewMaximized": False, "runListHidden": False,
    }


def view_key(study_name: str) -> str:
    """The share key of a study's front view: characters MLflow allows in tag names and URLs.

    Example:
        >>> view_key("demo study #2")
        'kd-search-front-demo_study__2'
    """
    return "kd-search-front-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)


# The names of the buffered writes: the only methods a saved backlog may name.
BUFFERED_WRITES: set[str] = set()


def _buffered(write: Callable) -> Callable:
    """Run ``write`` after every write buffered before it; buffer it while MLflow is unreachable."""
    BUFFERED_WRITES.add(write.__name__)

    @functools.wraps(write)
    def buffered(self: StudyTracker, *args: Any, **kwargs: Any) -> None:
        self.backlog.append((write.__name__, args, kwargs))
        self.flush()

    return buffered


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics MLflow can chart: numbers, and booleans as 0/1.

    Example:
        >>> numeric_metrics({"accuracy": 0.8, "phi_cnf": True, "stage": "prediction"})
        {'accuracy': 0.8, 'phi_cnf': 1.0}
    """
    out = {}
    for name, value in metrics.items():
        if isinstance(value, (int, float)):  # bool is an int: True and False become 1.0 and 0.0
            out[name] = float(value)
    return out


class StudyTracker:
    """The MLflow runs of one study, re-opened by tag when the study is relaunched.

    Example:
        >>> tracker = StudyTracker("sqlite:///runs/mlflow.db", "kd-search", "demo")  # doctest: +SKIP
        >>> tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="a1b2")  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, experiment: str, study_name: str, artifact_root: str | Path | None = None,
                 create: bool = True, backlog_file: str | Path | None = None,
                 notify: Callable[[str], None] | None = None):
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        # Writes not yet delivered: (method name, args, kwargs), oldest first.
        self.backlog: list[tuple[str, tuple, dict]] = []
        self.backlog_file = Path(backlog_file) if backlog_file is not None else None
        self.notify = notify or logger.warning
        self._unreachable_since: float | None = None
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise TrackingError(f"{tracking_uri}: no MLflow experiment {experiment!r} (was study {study_name!r} "
                                "launched with this tracking URI?)")
        if found is None:
            # A tracking server keeps artifacts in its own store; a local database beside the work dir.
            local = not tracking_uri.startswith(("http://", "https://"))
            location = Path(artifact_root).resolve().as_uri() if artifact_root is not None and local else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        if create:  # also for an experiment an older kd-search (or a user) made
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG + view_key(study_name),
                                           json.dumps(front_view(study_name)))
        self.parent_id = self._find_or_create_parent(create)
        children = {int(run.data.tags["optuna_trial_number"]): run for run in self._child_runs("trial")}
        self._children: dict[int, str] = {number: run.info.run_id for number, run in children.items()}
        # Each run's pareto tag as MLflow holds it, so mark_front writes only the tags that change.
        self._pareto_tags: dict[int, str | None] = {number: run.data.tags.get("pareto")
                                                    for number, run in children.items()}
        self._confirmations: dict[tuple[int, int], str] = {
            (int(run.data.tags["kd_search_confirms"]), int(run.data.tags["seed"])): run.info.run_id
            for run in self._child_runs("confirmation")
        }
        # The verdict tag each trial run carries, so only changed verdicts are written.
        self._verdicts: dict[int, str] = {
            number: run.data.tags["phi_cnf"] for number, run in children.items() if "phi_cnf" in run.data.tags
        }
        if self.backlog_file is not None and (self.backlog_file.is_file()
                                             or legacy_backlog(self.backlog_file).exists()):
            self.backlog = load_backlog(self.backlog_file, BUFFERED_WRITES)
            self.notify(f"replaying {len(self.backlog)} MLflow writes a past launch could not deliver")
            if self.flush():
                self.backlog_file.unlink()

    # --- delivery: MLflow's retries, then a buffer replayed in order ---

    def flush(self) -> bool:
        """Deliver the buffered writes in order; False (and they stay buffered) while unreachable."""
        while self.backlog:
            name, args, kwargs = self.backlog[0]
            try:
                getattr(type(self), name).__wrapped__(self, *args, **kwargs)
            except Exception as error:
                if not is_unreachable(error):
                    self.backlog.pop(0)
                    raise
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                    reason = str(getattr(error, "message", error)).splitlines()[0][:160]
                    self.notify(f"MLflow at {display_url(self.tracking_uri)} unreachable ({reason}); "
                                "buffering its writes, the study goes on")
                return False
            self.backlog.pop(0)
        if self._unreachable_since is not None:
            self.notify(f"MLflow at {display_url(self.tracking_uri)} reachable again after "
                        f"{time.monotonic() - self._unreachable_since:.0f} s; buffered writes delivered")
            self._unreachable_since = None
        return True

    def close(self, grace_seconds: float = 60.0) -> int:
        """Deliver what is buffered, waiting up to ``grace_seconds``; save the rest for the
        next launch (``backlog_file``). Returns how many writes were saved."""
        deadline = time.monotonic() + grace_seconds
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if not self.backlog:
            return 0
        if self.backlog_file is None:
            raise TrackingError(f"MLflow at {display_url(self.tracking_uri)} unreachable: "
                                f"{len(self.backlog)} writes not delivered")
        save_backlog(self.backlog_file, self.backlog)
        self.notify(f"MLflow at {display_url(self.tracking_uri)} still unreachable: {len(self.backlog)} writes "
                    f"saved to {self.backlog_file}; the next launch of the study delivers them")
        return len(self.backlog)

    def _find_or_create_parent(self, create: bool) -> str:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.kd_search_study = '{self.study_name}' and tags.kd_search_role = 'study'",
            order_by=["attributes.start_time ASC"], max_results=1)
        if runs:
            return runs[0].info.run_id
        if not create:
            raise TrackingError(f"{self.tracking_uri}: no MLflow run of study {self.study_name!r}")
        run = self.client.create_run(self.experiment_id, run_name=self.study_name,
                                     tags={"kd_search_study": self.study_name, "kd_search_role": "study"})
        return run.info.run_id

    def _child_runs(self, role: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' and tags.kd_search_role = '{role}'",
            max_results=50000)

    # --- the study (parent run) ---

    @_buffered
    def start_study(self, description: str, spec: dict[str, Any], settings: dict[str, Any]) -> None:
        """Mark the parent run running; record the study file and its settings (idempotent)."""
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.set_tag(self.parent_id, "mlflow.note.content", description or f"kd-search study {self.study_name}")
        existing = self.client.get_run(self.parent_id).data.params
        new = {k: str(v)[:_PARAM_LIMIT] for k, v in settings.items() if k not in existing}
        if new:
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in new.items()])
        self.client.log_dict(self.parent_id, spec, "study.json")

    @_buffered
    def log_study_results(self, figures: dict[str, Any], summary: pd.DataFrame, metrics: dict[str, float]) -> None:
        """Pareto-front figure(s), the study summary table and headline metrics on the parent."""
        self._log_figures(self.parent_id, figures)
        if not summary.empty:
            self.client.log_table(self.parent_id, data=summary, artifact_file="study_summary.json")
            self.client.log_text(self.parent_id, summary.to_csv(index=False), "study_summary.csv")
        self._log_metrics(self.parent_id, metrics, step=0)

    @_buffered
    def log_study_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.parent_id, str(path))

    @_buffered
    def end_study(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # --- the trials and their confirmations (nested runs) ---
    # A ``seed`` names trial ``number``'s confirmation with that seed instead of the trial.

    @_buffered
    def start_trial(self, number: int, params: dict[str, Any], ray_trial_id: str, run_name: str | None = None) -> None:
        """Open (or re-open, for a resumed trial) the trial's nested run and log its parameters."""
        self._open_run(number, None, params, ray_trial_id, run_name)

    @_buffered
    def start_confirmation(self, number: int, seed: int, params: dict[str, Any], ray_trial_id: str) -> None:
        """Open (or re-open) the nested run of trial ``number`` retrained with ``seed``."""
        self._open_run(number, seed, params, ray_trial_id)

    def _run_id(self, number: int, seed: int | None) -> str | None:
        return self._children.get(number) if seed is None else self._confirmations.get((number, seed))

    def _open_run(self, number: int, seed: int | None, params: dict[str, Any], ray_trial_id: str,
                  run_name: str | None = None) -> str:
        run_id = self._run_id(number, seed)
        if run_id is None and seed is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name or f"trial-{number:03d}", tags={
                "mlflow.parentRunId": self.parent_id, "kd_search_study": self.study_name,
                "kd_search_role": "trial", "optuna_trial_number": str(number),
                "mlflow.note.content": f"Trial {number} of kd-search study {self.study_name}."})
            run_id = self._children[number] = run.info.run_id
        elif run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}-seed-{seed}", tags={
                "mlflow.parentRunId": self.parent_id, "kd_search_study": self.study_name,
                "kd_search_role": "confirmation", "kd_search_confirms": str(number), "seed": str(seed)})
            run_id = self._confirmations[number, seed] = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        logged = self.client.get_run(run_id).data.params
        new_params = [Param(k, repr(float(v)) if isinstance(v, float) else str(v))
                      for k, v in params.items() if k not in logged]
        tags = [RunTag("ray_trial_id", ray_trial_id), RunTag("state", "RUNNING")]
        if seed is None:  # the front is made of trials; a confirmation is never on it
            tags.append(RunTag("pareto", "false"))
        self.client.log_batch(run_id, params=new_params, tags=tags)
        self._pareto_tags[number] = "false"
        return run_id

    @_buffered
    def log_epoch(self, number: int, metrics: dict[str, Any], step: int, seed: int | None = None) -> None:
        """Per-epoch metrics of a running trial (or confirmation), with the epoch as the step."""
        self._log_metrics(self._run_id(number, seed), numeric_metrics(metrics), step)

    @_buffered
    def finish_trial(self, number: int, state: str, metrics: dict[str, Any], figures: dict[str, Any] | None = None,
                     error: str | None = None, seed: int | None = None) -> None:
        """Metrics measured after the last epoch, the state tag and figures (artifact name ->
        figure); the run ends FINISHED, KILLED or FAILED."""
        run_id = self._run_id(number, seed)
        if run_id is None:  # a trial that never started (stopped while pending)
            run_id = self._open_run(number, seed, {}, ray_trial_id="")
        self._log_metrics(run_id, numeric_metrics(metrics), int(metrics.get("epoch", 0)))
        tags = [RunTag("state", state)]
        if error:
            tags.append(RunTag("error", error[:4000]))
        self.client.log_batch(run_id, tags=tags)
        self._log_figures(run_id, figures or {})
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status)

    @_buffered
    def mark_front(self, front: Iterable[int]) -> None:
        """Keep ``pareto`` tags current: true on front members, false on every other trial.

        Only the runs whose tag changes are written: a study's front moves by a trial or
        two per event, and one request per trial per event would grow with the study.
        """
        front = set(front)
        for number, run_id in self._children.items():
            tag = "true" if number in front else "false"
            if self._pareto_tags.get(number) != tag:
                self.client.set_tag(run_id, "pareto", tag)
                self._pareto_tags[number] = tag

    @_buffered
    def set_verdicts(self, verdicts: dict[int, str]) -> None:
        """Tag each trial's run ``phi_cnf=<verdict>`` (trial number -> ``certified``,
        ``unconfirmed`` or ``fails``), writing only the verdicts that changed."""
        for number, verdict in verdicts.items():
            run_id = self._children.get(number)
            if run_id is not None and self._verdicts.get(number) != verdict:
                self.client.set_tag(run_id, "phi_cnf", verdict)
                self._verdicts[number] = verdict

    @_buffered
    def mark_duplicate(self, number: int, original: int) -> None:
        """Tag trial ``number``'s run ``kd_search_duplicate_of=<original>``: never trained,
        it shares trial ``original``'s student (and is never on the front)."""
        run_id = self._children.get(number)
        if run_id is not None:
            self.client.set_tag(run_id, "kd_search_duplicate_of", str(original))

    def trial_run_id(self, number: int) -> str | None:
        return self._children.get(number)

    def front_url(self, host: str = "http://127.0.0.1:5000") -> str:
        """The MLflow UI runs table of this study's front (see ``front_view``).

        ``workflowType=machine_learning`` keeps MLflow 3's UI off its GenAI pages (its
        default), whatever the browser last used.
        """
        return (f"{host}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
                f"&viewStateShareKey={quote(view_key(self.study_name), safe='')}")

    def _log_figures(self, run_id: str, figures: dict[str, Any]) -> None:
        for name, figure in figures.items():
            if not isinstance(figure, bytes):
                self.client.log_figure(run_id, figure, name)
                continue
            # A figure replayed from a saved backlog: the PNG it was rendered to, logged as is.
            with tempfile.TemporaryDirectory() as staging:
                local, folder = Path(staging) / Path(name).name, Path(name).parent.as_posix()
                local.write_bytes(figure)
                self.client.log_artifact(run_id, str(local), None if folder == "." else folder)

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items() if not math.isnan(v)]
        for start in range(0, len(batch), 1000):  # MLflow's per-request limit
            self.client.log_batch(run_id, metrics=batch[start:start + 1000])


class StudentClassifier(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc model around the exported Hugging Face directory.

    ``predict`` takes a list of texts and returns one ``{"label", "score"}`` per text, as
    ``pipeline("text-classification")`` does.
    """

    def load_context(self, context) -> None:
        from transformers import pipeline

        self.pipeline = pipeline("text-classification", model=context.artifacts["student"])

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.pipeline(list(model_input))


def register_student(tracking_uri: str, run_id: str, student_dir: str | Path, model_name: str, alias: str) -> str:
    """Log the student on its trial's run as a pyfunc model, register it and set ``alias``.

    Returns the registered version. Load it back with
    ``mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")``.

    Example:
        >>> register_student("sqlite:///runs/mlflow.db", run_id, "out/student", "demo-student", "best")  # doctest: +SKIP
        '1'
    """
    # Client calls only: the fluent API would set the process-wide tracking URI (and the
    # MLFLOW_TRACKING_URI environment variable every child process inherits).
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as staging:
        model_dir = Path(staging) / "student"
        mlflow.pyfunc.save_model(str(model_dir), python_model=StudentClassifier(),
                                 artifacts={"student": str(student_dir)},
                                 pip_requirements=["kd-search", "transformers", "torch"])
        client.log_artifacts(run_id, str(model_dir), "student")
    try:
        client.create_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/student"
    version = client.create_model_version(model_name, source=source, run_id=run_id)
    client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)
