"""The search: Ray Tune runs distillation trials, Optuna proposes their hyperparameters.

One ``launch`` is one driver process. It prepares the teacher and its output cache once,
then a Ray Tune ``Tuner`` runs ``run_trial`` as one worker per trial (the study's
resources each, at most ``search.concurrency`` at a time) while an Optuna study in SQL
storage proposes the parameters and receives the results. The driver is the only writer
of the Optuna storage and of MLflow: workers report through Ray.

Gaps in the stock Ray/Optuna glue this module closes:

- constraints: ``sigma - kappa <= 0`` is set on every finished trial
  (``Trial.set_constraint``), so every sampler and ``Study.best_trials`` see it;
- a trial a scheduler stops early is told to Optuna as PRUNED (Ray reports it to the
  searcher like a finished one, with its last, under-trained result);
- a trial that raises, loses its worker more often than ``search.max_failures`` or has
  a non-finite loss becomes FAIL and the study goes on;
- no Optuna trial is left RUNNING: a relaunch adopts the trials a killed driver left
  RUNNING and continues them from their last epoch checkpoint.

Example:
    >>> summary = launch(load_study("studies/smoke.yaml"), workdir="runs")  # doctest: +SKIP
    >>> [t.number for t in summary.front]  # doctest: +SKIP
    [0, 2]
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from kd_search.engine import analysis
from kd_search.engine.spec import ParameterRange, Study, expand_search_space, parse_study
from kd_search.service import figures, pareto
from kd_search.service.telemetry import StudyGauges, TrialGauges
from kd_search.service.tracking import StudyTracker, check_tracking_uri, default_tracking_uri
from kd_search.urls import display_url, error_reason

# (message, done or None when unknown, total)
ProgressCallback = Callable[[str, int | None, int], None]
CONSTRAINT = "sigma_minus_kappa"
SPEC_ATTR = "kd_search_spec"
# Trials a killed driver left RUNNING and a later launch could not continue (budget met).
INTERRUPTED_ATTR = "kd_search_interrupted"
# Study-file fields that may change between launches of one study.
RELAUNCH_MUTABLE = {("search", "trials"), ("search", "concurrency"), ("search", "max_failures"),
                    ("search", "resources"), ("search", "scheduler"), ("tracking",), ("description",),
                    ("device",)}
# Node ids are shown by this many leading hex characters, as `ray status` does.
NODE_ID_CHARS = 8
# Keys Ray adds to every result; the trial's own metrics are the rest.
RAY_RESULT_KEYS = {"done", "pid", "timestamp", "training_iteration", "time_this_iter_s", "time_total_s",
                   "time_since_restore", "iterations_since_restore", "should_checkpoint", "date", "hostname",
                   "node_ip", "trial_id", "experiment_tag", "checkpoint_dir_name", "node_id"}
RECORDED_METRICS = ("accuracy", "teacher_accuracy", "sigma", "mean_delta", "n_both", "kappa", "phi_cnf",
                    "sigma_train", "sigma_eval", "ece", "ece_teacher", "classwise_ece", "agreement",
                    "agreement_train", "train_seconds", "epoch", "resumed_from_epoch",
                    "sigma_ci_low", "sigma_ci_high", "sigma_se", "accuracy_ci_low", "accuracy_ci_high",
                    "f1_ci_low", "f1_ci_high", "mcc_ci_low", "mcc_ci_high")


class SearchError(RuntimeError):
    """A study cannot be found, opened or resumed as asked; the message is one line."""


@dataclass(frozen=True)
class Locations:
    """Where a study's files live: work dir, Optuna storage URL, MLflow tracking URI.

    Example:
        >>> Locations.resolve(workdir="/tmp/runs").storage
        'sqlite:////tmp/runs/optuna.db'
    """

    workdir: Path
    storage: str
    tracking_uri: str
    experiment: str = "kd-search"

    @classmethod
    def resolve(cls, study: Study | None = None, workdir: str | Path | None = None, storage: str | None = None,
                tracking_uri: str | None = None) -> Locations:
        """Command-line/environment values first, then the study file, then the defaults."""
        tracking = study.tracking if study is not None else None
        root = Path(workdir or (tracking and tracking.workdir) or "runs").expanduser().resolve()
        return cls(
            workdir=root,
            storage=storage or (tracking and tracking.storage) or f"sqlite:///{root / 'optuna.db'}",
            tracking_uri=tracking_uri or (tracking and tracking.tracking_uri) or default_tracking_uri(root),
            experiment=(tracking and tracking.experiment) or "kd-search",
        )

    def study_dir(self, name: str) -> Path:
        """Per-study files: kept students, confidence arrays, Ray's trial directories."""
        return self.workdir / "studies" / name

    def trial_dir(self, name: str, number: int) -> Path:
        """One trial's files: ``student/`` (when kept) and ``confidence.npz``."""
        return trial_dir(self.study_dir(name), number)


def trial_dir(study_dir: str | Path, number: int) -> Path:
    return Path(study_dir) / "trials" / str(number)


@dataclass
class TrialRecord:
    """One Optuna trial as the CLI and the report show it."""

    number: int
    state: str
    metric: float | None
    sigma: float | None
    kappa: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return self.state == "COMPLETE" and self.sigma is not None and self.kappa is not None \
            and self.sigma <= self.kappa

    def as_dict(self, metric_name: str) -> dict[str, Any]:
        # Trials recorded before the intervals existed have none: null in JSON.
        intervals = ("sigma_ci_low", "sigma_ci_high", f"{metric_name}_ci_low", f"{metric_name}_ci_high")
        return {"trial": self.number, metric_name: self.metric, "accuracy": self.attrs.get("accuracy", self.metric),
                "sigma": self.sigma, "kappa": self.kappa, "phi_cnf": self.feasible, "params": self.params} \
            | {name: self.attrs.get(name) for name in intervals}


@dataclass
class StudySummary:
    """The state of a study after a launch (or as read from storage)."""

    name: str
    metric_name: str
    trials: list[TrialRecord]
    front: list[TrialRecord] = field(default_factory=list)
    ui_url: str = ""
    # MLflow writes a launch could not deliver (saved for the next launch).
    tracking_backlog: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.trials:
            out[trial.state] = out.get(trial.state, 0) + 1
        return out

    def pareto_figure(self, kappa: float | None, title: str = ""):
        """Task metric against sigma for the finished trials, the front joined (see figures)."""
        complete = [t for t in self.trials if t.state == "COMPLETE"]
        front = {t.number for t in self.front}
        return figures.pareto_figure([t.metric for t in complete], [t.sigma for t in complete],
                                     [t.feasible for t in complete],
                                     [i for i, t in enumerate(complete) if t.number in front], kappa,
                                     metric_name=self.metric_name, labels=[str(t.number) for t in complete],
                                     title=title)

    def best_feasible(self) -> TrialRecord | None:
        """The most accurate trial that satisfies phi_cnf (sigma <= kappa)."""
        feasible = [t for t in self.trials if t.feasible]
        return max(feasible, key=lambda t: (t.metric, -t.sigma)) if feasible else None


# --- Optuna: storage, samplers, search space -----------------------------------------

def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's SQL storage for ``url`` (SQLite by default, PostgreSQL on a cluster).

    Server databases get a pool that survives a long study: connections are checked
    before use (a restarted server costs no trial) and recycled, and connecting gives up
    after 10 s instead of hanging. A password may come in the URL or, better, from
    ``PGPASSWORD``/``~/.pgpass``; it is never printed.

    Example:
        >>> storage = open_storage("sqlite:////tmp/kd-search-doc.db")  # doctest: +SKIP
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine_options = None
    if not url.startswith("sqlite"):
        engine_options = {"pool_pre_ping": True, "pool_recycle": 1800}
        if url.startswith("postgresql"):
            engine_options["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_options)
    except Exception as error:  # SQLAlchemy raises many types; users need the URL and the reason
        raise storage_error(url, error, "cannot open") from None


def storage_error(url: str, error: BaseException, what: str) -> SearchError:
    """A one-line SearchError for a storage failure, the password masked everywhere."""
    reason = error_reason(error).replace(url, display_url(url))
    return SearchError(f"storage {display_url(url)}: {what} ({reason})")


def is_storage_outage(error: BaseException) -> bool:
    """Whether ``error`` means the storage server went away (not a bug, not bad data)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    while error is not None:
        if isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated):
            return True
        error = error.__cause__ or error.__context__
    return False


def load_optuna_study(name: str, storage: str) -> optuna.Study:
    """An existing study from storage, or a one-line error listing the studies there."""
    store = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False))
        known = f" (studies there: {', '.join(names)})" if names else " (it holds no studies)"
        raise SearchError(f"no study named {name!r} in {display_url(storage)}{known}") from None


def make_sampler(kind: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The multi-objective sampler for a study; constraints come from ``Trial.set_constraint``.

    ``startup_trials`` random trials come first (NSGA-II: the population size), so a small
    budget still leaves room for guided proposals.

    Example:
        >>> type(make_sampler("tpe", seed=0, startup_trials=4)).__name__
        'TPESampler'
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            # constant_liar: concurrent trials do not all get the same proposal.
            return optuna.samplers.TPESampler(n_startup_trials=startup_trials, multivariate=True,
                                              constant_liar=True, seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(n_startup_trials=startup_trials, seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(2, startup_trials), seed=seed)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}")


def startup_trials(study: Study) -> int:
    """The study's ``search.startup_trials``, or a quarter of its budget (at least 2)."""
    return study.search.startup_trials or max(2, study.search.trials // 4)


def distribution(name: str, rng: ParameterRange) -> BaseDistribution:
    """The Optuna distribution of one search-space entry (``epochs_*`` are integers).

    Example:
        >>> distribution("alpha", ParameterRange(low=0.0, high=0.5))
        FloatDistribution(high=0.5, log=False, low=0.0, step=None)
    """
    if rng.choices is not None:
        return CategoricalDistribution(rng.choices)
    if name.startswith("epochs_"):
        return IntDistribution(int(rng.low), int(rng.high), log=rng.log, step=int(rng.step or 1))
    return FloatDistribution(rng.low, rng.high, log=rng.log, step=rng.step)


def search_distributions(study: Study, num_mapped_layers: int) -> dict[str, BaseDistribution]:
    return {name: distribution(name, rng)
            for name, rng in expand_search_space(study.search.space, num_mapped_layers).items()}


def _relaunch_view(spec: dict[str, Any]) -> dict[str, Any]:
    view = json.loads(json.dumps(spec))
    for path in RELAUNCH_MUTABLE:
        node = view
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return view


def _changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new))
                for c in _changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []


def create_or_resume(study: Study, storage: str, num_mapped_layers: int) -> tuple[optuna.Study, bool]:
    """Create the Optuna study (directions: task metric up, sigma down) or re-open it.

    Re-opening checks that the stored study file matches (only the budget, resources,
    scheduler and tracking may change) so results of different set-ups never mix.
    """
    store = open_storage(storage)
    spec = study.model_dump(mode="json")
    sampler = make_sampler(study.search.sampler, study.seed, startup_trials(study))
    try:
        existing = optuna.load_study(study_name=study.name, storage=store, sampler=sampler)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get(SPEC_ATTR)
        if stored is not None:
            changed = _changed_fields(_relaunch_view(stored), _relaunch_view(spec))
            if changed:
                raise SearchError(f"study {study.name!r} in {display_url(storage)} was launched with a different study file "
                                  f"(changed: {', '.join(changed[:5])}); give this one a new name")
        return existing, True
    created = optuna.create_study(study_name=study.name, storage=store, sampler=sampler,
                                  directions=["maximize", "minimize"])
    with warnings.catch_warnings():  # experimental in Optuna, stable in use since 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        created.set_metric_names([study.objectives.task_metric, "sigma"])
    created.set_user_attr(SPEC_ATTR, spec)
    if study.search.enqueue_defaults:
        defaults = study.default_hyperparameters(num_mapped_layers)
        searched = search_distributions(study, num_mapped_layers)
        created.enqueue_trial({name: defaults[name] for name in searched if name in defaults},
                              user_attrs={"kd_search_baseline": True})
    return created, False


def trial_record(trial: FrozenTrial) -> TrialRecord:
    metric = sigma = None
    if trial.state == TrialState.COMPLETE and trial.values:
        metric, sigma = trial.values
    return TrialRecord(number=trial.number, state=trial.state.name, metric=metric, sigma=sigma,
                       kappa=trial.user_attrs.get("kappa"), params=dict(trial.params), attrs=dict(trial.user_attrs))


def summarize(optuna_study: optuna.Study) -> StudySummary:
    """Every trial and the feasible Pareto front, recomputed from the stored values.

    Example:
        >>> summarize(load_optuna_study("demo", "sqlite:///runs/optuna.db")).front  # doctest: +SKIP
    """
    records = [trial_record(t) for t in optuna_study.get_trials(deepcopy=False)]
    complete = [r for r in records if r.state == "COMPLETE"]
    front = [complete[i] for i in pareto.pareto_front([(r.metric, r.sigma) for r in complete],
                                                      [r.feasible for r in complete])]
    metric_names = optuna_study.metric_names or ["accuracy", "sigma"]
    return StudySummary(optuna_study.study_name, metric_names[0], records, sorted(front, key=lambda r: -r.metric))


def _counts_against_budget(trial: FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) \
        or (trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED_ATTR))


def finished_count(optuna_study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE, PRUNED and FAIL (not interrupted)."""
    return sum(map(_counts_against_budget, optuna_study.get_trials(deepcopy=False)))


def select_trial(summary: StudySummary, number: int | None = None, best: bool = False) -> TrialRecord:
    """Trial ``number``, or with ``best`` the most accurate trial satisfying phi_cnf.

    Example:
        >>> select_trial(summary, best=True).number  # doctest: +SKIP
        3
    """
    if best:
        chosen = summary.best_feasible()
        if chosen is None:
            raise SearchError(f"study {summary.name!r} has no finished trial with sigma <= kappa yet")
        return chosen
    by_number = {t.number: t for t in summary.trials}
    if number not in by_number:
        raise SearchError(f"study {summary.name!r} has no trial {number} (trials: 0..{len(summary.trials) - 1})")
    chosen = by_number[number]
    if chosen.state != "COMPLETE":
        raise SearchError(f"trial {number} of study {summary.name!r} is {chosen.state}, not COMPLETE")
    return chosen


def kept_student(locations: Locations, study_name: str, number: int) -> Path:
    """The directory of a finished trial's kept student, or a one-line error saying why not."""
    directory = locations.trial_dir(study_name, number) / "student"
    if not (directory / "config.json").is_file():
        raise SearchError(f"trial {number}'s student was not kept ({directory} is missing; the study's "
                          "search.keep_checkpoints keeps the Pareto front by default)")
    return directory


# --- the Ray side: one trial in a worker ------------------------------------------

def trial_dirname(ray_trial_id: str) -> str:
    """The name of a Ray trial's directory (its checkpoints) under the run's storage path."""
    return f"trial-{ray_trial_id}"


def _resume_point(config: dict[str, Any], ray_trial_dir: Path) -> str | None:
    """The checkpoint a trial continues from, or None to start it over.

    Ray hands back the last checkpoint when it retries a trial whose worker crashed, but
    starts a trial whose *node* died from scratch; its checkpoints are still in the shared
    trial directory. A trial adopted from a killed driver brings its own (``resume_from``).
    """
    ray_checkpoint = tune.get_checkpoint()
    if ray_checkpoint is not None:
        return ray_checkpoint.path
    complete = sorted(p.parent for p in ray_trial_dir.glob("checkpoint_*/position.json"))  # written last
    if complete:
        return str(complete[-1])
    resume = config.get("resume_from")
    return resume if resume is not None and Path(resume).is_dir() else None  # gone (cleanup): start over


def _distillation_trainable(config: dict[str, Any], *, spec: dict[str, Any], workdir: str, study_dir: str,
                            run_dir: str) -> None:
    """Ray Tune function trainable: one ``run_trial``, reporting each epoch with a checkpoint."""
    import torch

    from kd_search.engine.step import NonFiniteLossError
    from kd_search.engine.trial import run_trial
    from kd_search.service.export import model_card, save_student

    study = parse_study(spec)
    torch.set_num_threads(max(1, int(study.search.resources.cpu or 1)))
    number = config["number"]

    import ray

    # On a cluster the node's IP need not tell nodes apart (several per host); its id does.
    node_id = ray.get_runtime_context().get_node_id()

    gauges = TrialGauges(study.name, number)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        gauges.record(int(metrics["epoch"]))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(_reportable(metrics) | {"node_id": node_id}, checkpoint=checkpoint)

    resume = _resume_point(config, Path(run_dir) / trial_dirname(tune.get_context().get_trial_id()))
    try:
        result = run_trial(study, config["params"], report, workdir=workdir, resume_from=resume)
    except NonFiniteLossError as error:  # deterministic: retrying it would fail the same way
        tune.report({"nonfinite": 1, "error": str(error)})
        return
    out = trial_dir(study_dir, number)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "confidence.npz", **result.outputs)
    card = model_card(study.name, study.teacher.model, study.task.source, result.params, result.metrics)
    save_student(result.student, result.tokenizer, out / "student", card=card, metrics=result.metrics | {"trial": number})


def _reportable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


# --- the driver: Optuna + MLflow, fed by Ray -----------------------------------------

class _Driver:
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
            trial.set_constraint(CONSTRAINT, float(result["sigma"]) - float(result["kappa"]))
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
                                                 float(result["kappa"]), data.get("cka_matrix"),
                                                 title=f"{self.study.name} trial {number}")
        return pictures, extra

    def refresh_front(self) -> StudySummary:
        """Recompute the feasible front, keep MLflow's pareto tags and the kept students current."""
        summary = summarize(self.optuna_study)
        self.tracker.mark_front([t.number for t in summary.front])
        apply_keep_policy(summary, self.study.search.keep_checkpoints, self.locations.study_dir(self.study.name))
        return summary

    def _show(self, message: str) -> None:
        trials = self.optuna_study.get_trials(deepcopy=False)  # one storage read per event
        if self.gauges is not None:
            self.gauges.set_counts(Counter(t.state.name for t in trials))
        if self.progress:
            self.progress(message, sum(map(_counts_against_budget, trials)), self.target)


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

    def __init__(self, driver: _Driver):
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

    def __init__(self, driver: _Driver):
        self._driver = driver

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._driver.on_start(trial)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._driver.on_checkpoint(trial.trial_id, checkpoint.path)


def _scheduler(study: Study):
    if study.search.scheduler == "asha":
        total = sum(s.epochs for s in study.distillation.stages)
        return ASHAScheduler(time_attr="epoch", metric=study.objectives.task_metric, mode="max",
                             max_t=max(total, 2), grace_period=1, reduction_factor=2)
    return FIFOScheduler()


def _init_ray(ray_address: str | None, num_cpus: int | None) -> None:
    import ray

    # Ray's own console tables: the CLI shows progress itself and MLflow holds the results.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        logging.getLogger("ray").setLevel(logging.ERROR)
        return
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    if ray_address:
        ray.init(address=ray_address, runtime_env={"env_vars": env}, log_to_driver=False,
                 logging_level=logging.ERROR)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, logging_level=logging.ERROR)


def check_locations(locations: Locations) -> None:
    """Fail in one line if the study's storage or tracking server cannot be reached.

    A launch checks this first, so a bad URL never costs the teacher's fine-tuning.

    Example:
        >>> check_locations(Locations.resolve(storage="postgresql+psycopg://kd:pw@127.0.0.1:9/optuna"))
        Traceback (most recent call last):
        kd_search.service.search.SearchError: storage postgresql+psycopg://kd:***@127.0.0.1:9/optuna: cannot open (...)
    """
    open_storage(locations.storage)
    check_tracking_uri(locations.tracking_uri)


def launch(study: Study, *, locations: Locations | None = None, trials: int | None = None,
           progress: ProgressCallback | None = None, on_event: ProgressCallback | None = None,
           ray_address: str | None = None, num_cpus: int | None = None, scheduler: Any = None) -> StudySummary:
    """Run (or resume) a study until it has ``trials`` finished trials; return its summary.

    Launching a study name that already has trials in storage resumes it: finished
    trials are kept and never re-run; trials a killed driver left RUNNING continue from
    their last epoch checkpoint. ``progress(description, done, total)`` follows the
    teacher's preparation, ``on_event(message, finished_trials, target)`` the trials.
    ``scheduler`` replaces the study's Ray Tune scheduler.

    Example:
        >>> summary = launch(load_study("studies/smoke.yaml"), trials=4)  # doctest: +SKIP
        >>> summary.counts()  # doctest: +SKIP
        {'COMPLETE': 4}
    """
    from kd_search.engine.trial import prepare, teacher_layers, teacher_outputs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    locations = locations or Locations.resolve(study)
    target = trials or study.search.trials
    study_dir = locations.study_dir(study.name)

    check_locations(locations)
    study_dir.mkdir(parents=True, exist_ok=True)
    # The teacher is fine-tuned and its outputs cached once, here, before any worker starts.
    setup = prepare(study, locations.workdir, progress)
    teacher_outputs(setup, teacher_layers(setup), progress)
    num_mapped = len(setup.pairs)

    optuna_study, resumed = create_or_resume(study, locations.storage, num_mapped)

    def notify(message: str) -> None:  # never reads storage: it may be what is down
        if on_event:
            on_event(message, None, target)
        else:
            logging.getLogger("kd_search").warning(message)

    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name,
                           artifact_root=locations.workdir / "mlartifacts",
                           backlog_file=study_dir / "mlflow-backlog.pkl", notify=notify)
    tracker.start_study(study.description, study.model_dump(mode="json"), {
        "sampler": study.search.sampler, "objectives": f"{study.objectives.task_metric} up, sigma down",
        "constraint": "sigma <= kappa", "kappa": study.objectives.confidence.kappa,
        "teacher": study.teacher.model, "student_layers": num_mapped, "storage": display_url(locations.storage)})

    remaining = target - finished_count(optuna_study)
    stale = [t for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    adopt, abandon = stale[:max(remaining, 0)], stale[max(remaining, 0):]
    for trial in abandon:  # the budget is met without them: close them, never leave RUNNING
        optuna.Trial(optuna_study, trial._trial_id).set_user_attr(INTERRUPTED_ATTR, True)
        optuna_study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    driver = _Driver(study, optuna_study, tracker, locations, search_distributions(study, num_mapped),
                     study.default_hyperparameters(num_mapped), adopt, target, on_event)
    try:
        if remaining > 0:
            _init_ray(ray_address, num_cpus)
            driver.gauges = StudyGauges(study.name)
            _run_tuner(study, driver, locations, remaining, scheduler)
    except KeyboardInterrupt:
        _close_launch(driver, tracker, study, "KILLED")
        raise
    except Exception as error:
        if is_storage_outage(error):
            # Nothing more can be written; what is stored stays as it is. Trials left
            # RUNNING are adopted by the relaunch and continue from their checkpoints.
            tracker.end_study("FAILED")
            tracker.close(grace_seconds=0)
            raise storage_error(locations.storage, error, "connection lost mid-study; finished trials are kept, "
                                "relaunch the same command to continue") from None
        _close_launch(driver, tracker, study, "FAILED")
        raise
    summary = _close_launch(driver, tracker, study, "FINISHED" if finished_count(optuna_study) >= target else "KILLED")
    summary.ui_url = tracker.front_url()
    return summary


def _run_tuner(study: Study, driver: _Driver, locations: Locations, remaining: int, scheduler: Any) -> None:
    """One Ray Tune run of ``remaining`` trials; the driver answers the searcher's calls."""
    study_dir = locations.study_dir(study.name)
    # Every node reads and writes these paths: on a cluster the work dir is a shared directory.
    storage_path, run_name = study_dir / "ray", f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    resources = {"cpu": study.search.resources.cpu, "gpu": study.search.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(_distillation_trainable, spec=study.model_dump(mode="json"),
                             workdir=str(locations.workdir), study_dir=str(study_dir),
                             run_dir=str(storage_path / run_name)),
        resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConstrainedOptunaSearcher(driver),
                                    scheduler=scheduler or _scheduler(study),
                                    num_samples=remaining, max_concurrent_trials=study.search.concurrency,
                                    trial_dirname_creator=lambda trial: trial_dirname(trial.trial_id)),
        run_config=tune.RunConfig(
            name=run_name, storage_path=str(storage_path),
            failure_config=tune.FailureConfig(max_failures=study.search.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[TrialEvents(driver)], verbose=0),
    )
    tuner.fit()


def _close_launch(driver: _Driver, tracker: StudyTracker, study: Study, status: str) -> StudySummary:
    """Close what the search left open, log the study's results and end its MLflow run."""
    for ray_trial_id in list(driver.trials):  # the search ended without them: never leave RUNNING
        driver.on_complete(ray_trial_id, None, error=True, reason="the search ended before the trial did")
    summary = driver.refresh_front()
    _log_study_results(tracker, summary, study)
    tracker.end_study(status)
    summary.tracking_backlog = tracker.close()
    return summary


def _log_study_results(tracker: StudyTracker, summary: StudySummary, study: Study) -> None:
    complete = [t for t in summary.trials if t.state == "COMPLETE"]
    figure = summary.pareto_figure(study.objectives.confidence.fixed_kappa, title=f"{study.name}: {len(complete)} finished trials")
    table = summary_table(summary)
    best = summary.best_feasible()
    metrics = {"trials_complete": float(len(complete)), "front_size": float(len(summary.front))}
    if best is not None:
        metrics |= {f"best_feasible_{summary.metric_name}": best.metric, "best_feasible_sigma": best.sigma}
    tracker.log_study_results({"pareto_front.png": figure}, table, metrics)


def summary_table(summary: StudySummary) -> pd.DataFrame:
    """One row per trial: state, objectives, kappa, phi_cnf, on the front, parameters."""
    front = {t.number for t in summary.front}
    rows = [{"trial": t.number, "state": t.state, summary.metric_name: t.metric, "sigma": t.sigma,
             "kappa": t.kappa, "phi_cnf": t.feasible, "pareto": t.number in front, **t.params}
            for t in summary.trials]
    return pd.DataFrame(rows)
