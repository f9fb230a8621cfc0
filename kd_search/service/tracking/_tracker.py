"""The MLflow runs of one study (``StudyTracker``): one parent run, one nested child run per
Optuna trial, and one per confirmation.

Runs are found again by their tags, which is what makes a relaunched study re-open its
parent run and its trials' runs instead of duplicating them:

- parent: ``kd_search_study=<name>``, ``kd_search_role=study``
- child:  ``mlflow.parentRunId=<parent>``, ``kd_search_role=trial``,
  ``optuna_trial_number=<n>``, ``ray_trial_id``, ``state``, ``pareto`` (``true``/``false``),
  ``phi_cnf`` (the trial's verdict over its seeds: ``certified``, ``unconfirmed`` or
  ``fails``; set when the trial finishes and again whenever a confirmation changes it)
- confirmation (trial ``n`` retrained with another seed), also nested under the parent:
  ``kd_search_role=confirmation``, ``kd_search_confirms=<n>``, ``seed``, ``ray_trial_id``,
  ``state``

Its logging and tagging methods are ``@buffered``: ``BufferedWriter`` (see ``_delivery``)
delivers them in order through a briefly unreachable server. Opening the tracker finds
the runs, so it needs MLflow reachable.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from kd_search.errors import TrackingError
from kd_search.service.tracking._delivery import BufferedWriter, buffered
from kd_search.service.tracking._front_view import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    SHARED_VIEW_TAG,
    front_view,
    view_key,
)

# MLflow rejects param values longer than this; study parameters are short numbers.
_PARAM_LIMIT = 6000


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


class StudyTracker(BufferedWriter):
    """The MLflow runs of one study, re-opened by tag when the study is relaunched.

    Example:
        >>> tracker = StudyTracker("sqlite:///runs/mlflow.db", "kd-search", "demo")  # doctest: +SKIP
        >>> tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="a1b2")  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, experiment: str, study_name: str, artifact_root: str | Path | None = None,
                 create: bool = True, backlog_file: str | Path | None = None,
                 notify: Callable[[str], None] | None = None):
        super().__init__(tracking_uri, backlog_file, notify)
        self.client = MlflowClient(tracking_uri)
        self.study_name = study_name
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
        self._replay_saved()

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

    @buffered
    def start_study(self, description: str, spec: dict[str, Any], settings: dict[str, Any]) -> None:
        """Mark the parent run running; record the study file and its settings (idempotent)."""
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.set_tag(self.parent_id, "mlflow.note.content", description or f"kd-search study {self.study_name}")
        existing = self.client.get_run(self.parent_id).data.params
        new = {k: str(v)[:_PARAM_LIMIT] for k, v in settings.items() if k not in existing}
        if new:
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in new.items()])
        self.client.log_dict(self.parent_id, spec, "study.json")

    @buffered
    def log_study_results(self, figures: dict[str, Any], summary: pd.DataFrame, metrics: dict[str, float]) -> None:
        """Pareto-front figure(s), the study summary table and headline metrics on the parent."""
        self._log_figures(self.parent_id, figures)
        if not summary.empty:
            self.client.log_table(self.parent_id, data=summary, artifact_file="study_summary.json")
            self.client.log_text(self.parent_id, summary.to_csv(index=False), "study_summary.csv")
        self._log_metrics(self.parent_id, metrics, step=0)

    @buffered
    def log_study_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.parent_id, str(path))

    @buffered
    def end_study(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # --- the trials and their confirmations (nested runs) ---
    # A ``seed`` names trial ``number``'s confirmation with that seed instead of the trial.

    @buffered
    def start_trial(self, number: int, params: dict[str, Any], ray_trial_id: str, run_name: str | None = None) -> None:
        """Open (or re-open, for a resumed trial) the trial's nested run and log its parameters."""
        self._open_run(number, None, params, ray_trial_id, run_name)

    @buffered
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

    @buffered
    def log_epoch(self, number: int, metrics: dict[str, Any], step: int, seed: int | None = None) -> None:
        """Per-epoch metrics of a running trial (or confirmation), with the epoch as the step."""
        self._log_metrics(self._run_id(number, seed), numeric_metrics(metrics), step)

    @buffered
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

    @buffered
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

    @buffered
    def set_verdicts(self, verdicts: dict[int, str]) -> None:
        """Tag each trial's run ``phi_cnf=<verdict>`` (trial number -> ``certified``,
        ``unconfirmed`` or ``fails``), writing only the verdicts that changed."""
        for number, verdict in verdicts.items():
            run_id = self._children.get(number)
            if run_id is not None and self._verdicts.get(number) != verdict:
                self.client.set_tag(run_id, "phi_cnf", verdict)
                self._verdicts[number] = verdict

    @buffered
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
