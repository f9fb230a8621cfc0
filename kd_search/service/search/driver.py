"""The driver of a search: Optuna and MLflow, fed by Ray Tune.

One ``Driver`` holds the state of one launch. Ray calls it through
``ConstrainedOptunaSearcher`` (Optuna's ask/tell behind Ray's Searcher API) and
``TrialEvents`` (trial starts and checkpoints); it is the only writer of the Optuna
storage and of MLflow, so workers never contend for either.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.search import Searcher

from kd_search.engine import analysis
from kd_search.engine.spec import Study
from kd_search.service import figures
from kd_search.service.search.locations import Locations, trial_dir
from kd_search.service.search.optuna_study import CONSTRAINT, FRONT_ATTR
from kd_search.service.search.records import (
    RECORDED_METRICS,
    StudySummary,
    counts_against_budget,
    summarize,
)
from kd_search.service.telemetry import StudyGauges
from kd_search.service.tracking import StudyTracker

# (message, done or None when unknown, total): the teacher's preparation and the trials' events.
ProgressCallback = Callable[[str, int | None, int], None]
# Node ids are shown by this many leading hex characters, as `ray status` does.
NODE_ID_CHARS = 8
# Keys Ray adds to every result; the trial's own metrics are the rest.
RAY_RESULT_KEYS = {"done", "pid", "timestamp", "training_iteration", "time_this_iter_s", "time_total_s",
                   "time_since_restore", "iterations_since_restore", "should_checkpoint", "date", "hostname",
                   "node_ip", "trial_id", "experiment_tag", "checkpoint_dir_name", "node_id"}


class Driver:
    """Driver-side state of one launch: the single writer of Optuna storage and MLflow."""

    def __init__(self, study: Study, optuna_study: optuna.Study, tracker: StudyTracker, locations: Locations,
                 distributions: dict[str, BaseDistribution], defaults: dict[str, float], adopt: list[FrozenTrial],
                 target: int, progress: ProgressCallback | None):
        self.study, self.optuna_study, self.tracker, self.locations = study, optuna_study, tracker, locations
        self.distributions, self.defaults, self.adopt = distributions, defaults, adopt
        self.target, self.progress = target, progress
        self.metric_name = study.objectives.task_metric
        self.trials: dict[str, optuna.Trial] = {}  # Ray trial id -> Optuna trial
        self.ray_trials: dict[str, Any] = {}  # Ray trial id -> Ray's Trial (for its error file)
        self.nodes: dict[int, list[str]] = {}  # trial number -> the Ray nodes it ran on, in order
        self.gauges: StudyGauges | None = None  # Prometheus, once Ray is up

    def suggest(self, ray_trial_id: str) -> dict[str, Any]:
        if self.adopt:
            frozen = self.adopt.pop(0)
            trial = optuna.Trial(self.optuna_study, frozen._trial_id)
            resume_from = frozen.user_attrs.get("checkpoint")
        else:
            trial = self.optuna_study.ask(self.distributions)
            resume_from = None
        self.trials[ray_trial_id] = trial
        trial.set_user_attr("ray_trial_id", ray_trial_id)
        params = self.defaults | {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in trial.params.items()}
        self.tracker.start_trial(trial.number, params, ray_trial_id)
        self._show(f"trial {trial.number} started" + (" (resumed)" if resume_from else ""))
        return {"number": trial.number, "params": params, "resume_from": resume_from}

    def on_result(self, ray_trial_id: str, result: dict[str, Any]) -> None:
        trial = self.trials.get(ray_trial_id)
        if trial is None or "epoch" not in result:
            return
        trial.set_user_attr("epoch", int(result["epoch"]))
        node = str(result.get("node_id", ""))[:NODE_ID_CHARS]
        if trial.number not in self.nodes:  # an adopted trial already ran somewhere
            self.nodes[trial.number] = list(trial.user_attrs.get("nodes", []))
        if node and node not in self.nodes[trial.number]:  # a retried trial may move to another node
            self.nodes[trial.number].append(node)
            trial.set_user_attr("nodes", self.nodes[trial.number])
        metrics = {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS and not k.startswith("config/")}
        self.tracker.log_epoch(trial.number, metrics, step=int(result["epoch"]))
        self._show(f"trial {trial.number} epoch {result['epoch']}/{result.get('total_epochs')} on node {node}: "
                   f"{self.metric_name} {result.get(self.metric_name, float('nan')):.3f}, "
                   f"sigma {result.get('sigma', float('nan')):.4f}")

    def on_checkpoint(self, ray_trial_id: str, path: str) -> None:
        trial = self.trials.get(ray_trial_id)
        if trial is not None:
            trial.set_user_attr("checkpoint", path)

    def on_start(self, ray_trial: Any) -> None:
        self.ray_trials[ray_trial.trial_id] = ray_trial

    def _error_message(self, ray_trial_id: str) -> str:
        # Ray writes the worker's traceback to the trial's error file; its last line says why.
        error_file = getattr(self.ray_trials.get(ray_trial_id), "error_file", None)
        if error_file and os.path.isfile(error_file):
            lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return "the trial's worker failed"

    def on_complete(self, ray_trial_id: str, result: dict[str, Any] | None, error: bool, reason: str = "") -> None:
        trial = self.trials.pop(ray_trial_id, None)
        if trial is None:
            return
        state, values, why = self._outcome(ray_trial_id, result, error)
        reason = reason or why
        metrics = {k: result[k] for k in RECORDED_METRICS if result and k in result}
        for name, value in metrics.items():
            trial.set_user_attr(name, value)
        if reason:
            trial.set_user_attr("failure", reason)
        if state == TrialState.COMPLETE:
            constraint = float(result["sigma"]) - float(result["kappa"])
            trial.set_constraint(CONSTRAINT, constraint)
            trial.set_user_attr(CONSTRAINT, constraint)  # for readers of user attributes only
            for name, value in self._trial_outputs(trial.number, result, with_figures=False)[1].items():
                trial.set_user_attr(name, value)
        self.optuna_study.tell(trial, values=values, state=state)
        pictures, extra = self._trial_outputs(trial.number, result) if state == TrialState.COMPLETE else ({}, {})
        # Per-epoch metrics are already on the run; only what the trial measured after its
        # last epoch is new.
        self.tracker.finish_trial(trial.number, state.name, extra, pictures, error=reason)
        self.refresh_front()
        self._show(f"trial {trial.number} {state.name}" + (f": {reason}" if reason else ""))

    def _outcome(self, ray_trial_id: str, result: dict[str, Any] | None, error: bool):
        if error:
            return TrialState.FAIL, None, self._error_message(ray_trial_id)
        if not result or "epoch" not in result and "nonfinite" not in result:
            return TrialState.FAIL, None, "stopped before its first epoch finished"
        if result.get("nonfinite"):
            return TrialState.FAIL, None, str(result.get("error", "non-finite loss"))
        if int(result["epoch"]) < int(result["total_epochs"]):
            # Stopped by the scheduler: its values are under-trained and must never reach the front.
            return TrialState.PRUNED, None, ""
        metric, sigma = float(result[self.metric_name]), float(result["sigma"])
        if math.isnan(metric) or math.isnan(sigma):
            return TrialState.FAIL, None, "sigma undefined: no training example is right for both teacher and student"
        return TrialState.COMPLETE, [metric, sigma], ""

    def _trial_outputs(self, number: int, result: dict[str, Any], with_figures: bool = True):
        """Figures and the metrics measured after the last epoch, from the arrays the trial saved."""
        arrays = self.locations.trial_dir(self.study.name, number) / "confidence.npz"
        pictures: dict[str, Any] = {}
        extra: dict[str, float] = {}
        if not arrays.is_file():
            return pictures, extra
        with np.load(arrays) as data:
            extra |= analysis.structure_metrics(data)
            if with_figures:
                pictures = figures.trial_figures(data["teacher_probs"], data["student_probs"], data["labels"],
                                                 self.study.objectives.confidence.convention,
                                                 float(result["kappa"]), data.get("cka_matrix"),
                                                 title=f"{self.study.name} trial {number}")
        return pictures, extra

    def refresh_front(self) -> StudySummary:
        """Recompute the feasible front, keep MLflow's pareto tags and the kept students current."""
        summary = summarize(self.optuna_study)
        self.tracker.mark_front([t.number for t in summary.front])
        self.optuna_study.set_user_attr(FRONT_ATTR, sorted(t.number for t in summary.front))
        apply_keep_policy(summary, self.study.search.keep_checkpoints, self.locations.study_dir(self.study.name))
        return summary

    def _show(self, message: str) -> None:
        trials = self.optuna_study.get_trials(deepcopy=False)  # one storage read per event
        if self.gauges is not None:
            self.gauges.set_counts(Counter(t.state.name for t in trials))
        if self.progress:
            self.progress(message, sum(map(counts_against_budget, trials)), self.target)


def apply_keep_policy(summary: StudySummary, policy: str, study_dir: Path) -> None:
    """Delete kept students the policy does not keep; a dominated trial never rejoins the front."""
    if policy == "all":
        return
    keep = {t.number for t in summary.front} if policy == "pareto" else set()
    for trial in summary.trials:
        if trial.state != "RUNNING" and trial.number not in keep:
            shutil.rmtree(trial_dir(study_dir, trial.number) / "student", ignore_errors=True)


class ConstrainedOptunaSearcher(Searcher):
    """Optuna ask/tell behind Ray's Searcher API, with the constraint and PRUNED states.

    It only forwards to the driver. It is not picklable state: Tune pickles its
    searcher for ``Tuner.restore``, which kd-search replaces by resuming from storage.
    """

    def __init__(self, driver: Driver):
        super().__init__(metric=None, mode=None)  # Ray must not demand the metric in every result
        self._driver = driver

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_driver"}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return self._driver.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._driver.on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._driver.on_complete(trial_id, result, error)


class TrialEvents(tune.Callback):
    """Remembers each Ray trial (for its error file) and its last checkpoint (to continue
    it after a driver crash)."""

    def __init__(self, driver: Driver):
        self._driver = driver

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._driver.on_start(trial)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._driver.on_checkpoint(trial.trial_id, checkpoint.path)
