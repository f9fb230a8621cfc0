"""MLflow tracking of a study: one parent run, one nested child run per Optuna trial.

Only the search driver writes here (workers report through Ray), so a SQLite tracking
store never sees two writers. Runs are found again by their tags, which is what makes a
relaunched study re-open its parent run and its trials' runs instead of duplicating them:

- parent: ``kd_search_study=<name>``, ``kd_search_role=study``
- child:  ``mlflow.parentRunId=<parent>``, ``kd_search_role=trial``,
  ``optuna_trial_number=<n>``, ``ray_trial_id``, ``state``, ``pareto`` (``true``/``false``)

In the MLflow UI the filter ``tags.pareto = "true"`` shows the study's feasible front.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

FRONT_FILTER = 'tags.pareto = "true"'


class TrackingError(RuntimeError):
    """The study's MLflow runs cannot be found; the message is one line."""

# MLflow rejects param values longer than this; study parameters are short numbers.
_PARAM_LIMIT = 6000


def default_tracking_uri(workdir: str | Path) -> str:
    """The SQLite MLflow store kept beside the study's other files.

    Example:
        >>> default_tracking_uri("/tmp/runs")
        'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics MLflow can chart: numbers, and booleans as 0/1.

    Example:
        >>> numeric_metrics({"accuracy": 0.8, "phi_cnf": True, "stage": "prediction"})
        {'accuracy': 0.8, 'phi_cnf': 1.0}
    """
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class StudyTracker:
    """The MLflow runs of one study, re-opened by tag when the study is relaunched.

    Example:
        >>> tracker = StudyTracker("sqlite:///runs/mlflow.db", "kd-search", "demo")  # doctest: +SKIP
        >>> tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="a1b2")  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, experiment: str, study_name: str, artifact_root: str | Path | None = None,
                 create: bool = True):
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise TrackingError(f"{tracking_uri}: no MLflow experiment {experiment!r} (was study {study_name!r} "
                                "launched with this tracking URI?)")
        if found is None:
            location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        self.parent_id = self._find_or_create_parent(create)
        self._children: dict[int, str] = {
            int(run.data.tags["optuna_trial_number"]): run.info.run_id for run in self._child_runs()
        }

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

    def _child_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' and tags.kd_search_role = 'trial'",
            max_results=50000)

    # --- the study (parent run) ---

    def start_study(self, description: str, spec: dict[str, Any], settings: dict[str, Any]) -> None:
        """Mark the parent run running; record the study file and its settings (idempotent)."""
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.set_tag(self.parent_id, "mlflow.note.content", description or f"kd-search study {self.study_name}")
        existing = self.client.get_run(self.parent_id).data.params
        new = {k: str(v)[:_PARAM_LIMIT] for k, v in settings.items() if k not in existing}
        if new:
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in new.items()])
        self.client.log_dict(self.parent_id, spec, "study.json")

    def log_study_results(self, figures: dict[str, Any], summary: pd.DataFrame, metrics: dict[str, float]) -> None:
        """Pareto-front figure(s), the study summary table and headline metrics on the parent."""
        for name, figure in figures.items():
            self.client.log_figure(self.parent_id, figure, name)
        if not summary.empty:
            self.client.log_table(self.parent_id, data=summary, artifact_file="study_summary.json")
            self.client.log_text(self.parent_id, summary.to_csv(index=False), "study_summary.csv")
        self._log_metrics(self.parent_id, metrics, step=0)

    def log_study_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.parent_id, str(path))

    def end_study(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # --- the trials (nested runs) ---

    def start_trial(self, number: int, params: dict[str, float], ray_trial_id: str) -> str:
        """Open (or re-open, for a resumed trial) the trial's nested run and log its parameters."""
        run_id = self._children.get(number)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}", tags={
                "mlflow.parentRunId": self.parent_id, "kd_search_study": self.study_name,
                "kd_search_role": "trial", "optuna_trial_number": str(number)})
            run_id = self._children[number] = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        logged = self.client.get_run(run_id).data.params
        new_params = [Param(k, repr(float(v)) if isinstance(v, float) else str(v))
                      for k, v in params.items() if k not in logged]
        tags = [RunTag("ray_trial_id", ray_trial_id), RunTag("state", "RUNNING"), RunTag("pareto", "false")]
        self.client.log_batch(run_id, params=new_params, tags=tags)
        return run_id

    def log_epoch(self, number: int, metrics: dict[str, Any], step: int) -> None:
        """Per-epoch metrics of a running trial, with the epoch as the step."""
        self._log_metrics(self._children[number], numeric_metrics(metrics), step)

    def finish_trial(self, number: int, state: str, metrics: dict[str, Any], figures: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
        """Metrics measured after the last epoch, the state tag and figures (artifact name ->
        figure); the run ends FINISHED, KILLED or FAILED."""
        run_id = self._children.get(number)
        if run_id is None:  # a trial that never started (stopped while pending)
            run_id = self.start_trial(number, {}, ray_trial_id="")
        self._log_metrics(run_id, numeric_metrics(metrics), int(metrics.get("epoch", 0)))
        tags = [RunTag("state", state)]
        if error:
            tags.append(RunTag("error", error[:4000]))
        self.client.log_batch(run_id, tags=tags)
        for name, figure in (figures or {}).items():
            self.client.log_figure(run_id, figure, name)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status)

    def mark_front(self, front: Iterable[int]) -> None:
        """Keep ``pareto`` tags current: true on front members, false on every other trial."""
        front = set(front)
        for number, run_id in self._children.items():
            self.client.set_tag(run_id, "pareto", "true" if number in front else "false")

    def trial_run_id(self, number: int) -> str | None:
        return self._children.get(number)

    def front_url(self, host: str = "http://127.0.0.1:5000") -> str:
        """The MLflow UI runs table of this study's experiment, filtered to the front.

        MLflow 3 opens experiments on its GenAI overview page; this link goes to the runs.
        """
        return f"{host}/#/experiments/{self.experiment_id}/runs?searchFilter={quote(FRONT_FILTER, safe='')}"

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items() if not math.isnan(v)]
        for start in range(0, len(batch), 1000):  # MLflow's per-request limit
            self.client.log_batch(run_id, metrics=batch[start:start + 1000])


def ui_command(tracking_uri: str) -> str:
    """The shell command that serves the MLflow UI on this tracking store.

    Example:
        >>> ui_command("sqlite:////tmp/runs/mlflow.db")
        'mlflow ui --backend-store-uri sqlite:////tmp/runs/mlflow.db'
    """
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


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
    import tempfile

    from mlflow.exceptions import MlflowException

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
