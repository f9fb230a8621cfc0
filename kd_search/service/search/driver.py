"""The driver of a search: Optuna and MLflow, fed by Ray Tune.

One ``Driver`` holds the state of one launch. Ray calls it through
``ConstrainedOptunaSearcher`` (Optuna's ask/tell behind Ray's Searcher API) and
``TrialEvents`` (trial starts, epoch results and checkpoints); it is the only writer of
the Optuna storage and of MLflow, so workers never contend for either.

No student is trained twice: each new trial suggests only the parameters its recipe reads
(:func:`kd_search.engine.hyperparameters.suggest`), and a proposal whose effective
configuration a COMPLETE or RUNNING trial already has is set aside and asked again, up to
``MAX_REDRAWS`` times; an enqueued point, or a proposal still taken after that, becomes a
duplicate of that trial (``DUPLICATE_ATTR``), recorded without training. The redraws ask
a random sampler: a model-based one (GP) asked again with the same history proposes the
same point (the demo's GP, converged to a corner of the space, proposed one student
three times and spent three of eight trials on it).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.search import Searcher
from ray.tune.utils import flatten_dict

from kd_search.engine import analysis
from kd_search.engine.hyperparameters import (
    config_key,
    effective,
    enqueued_values,
    suggest,
    training_params,
)
from kd_search.engine.spec import Study
from kd_search.service import figures
from kd_search.service.search.confirmation_queue import ConfirmationQueue
from kd_search.service.search.live import LiveStudy
from kd_search.service.search.locations import Locations, trial_dir
from kd_search.service.search.optuna_study import (
    CONSTRAINT,
    DUPLICATE_ATTR,
    EPOCH_SCORES_ATTR,
    FRONT_ATTR,
    REDRAWN_ATTR,
    STOPPED_ATTR,
)
from kd_search.service.search.presenting import verdict_text
from kd_search.service.search.records import StudySummary, TrialRecord, recorded_metrics, summarize
from kd_search.service.search.schedulers import RUNG_CLOCK
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
# How often the sampler is asked again when it proposes a student that a trial already trains.
MAX_REDRAWS = 3


class Driver:
    """Driver-side state of one launch: the single writer of Optuna storage and MLflow."""

    def __init__(self, study: Study, optuna_study: optuna.Study, tracker: StudyTracker, locations: Locations,
                 distributions: dict[str, BaseDistribution], defaults: dict[str, float], adopt: list[FrozenTrial],
                 target: int, progress: ProgressCallback | None):
        self.study, self.optuna_study, self.tracker, self.locations = study, optuna_study, tracker, locations
        self.distributions, self.defaults, self.adopt = distributions, defaults, adopt
        self.redraw_sampler = RandomSampler(seed=study.seed)
        self.target, self.progress = target, progress
        self.metric_name = study.objectives.task_metric
        self.trials: dict[str, optuna.Trial] = {}  # Ray trial id -> Optuna trial
        self.ray_trials: dict[str, Any] = {}  # Ray trial id -> Ray's Trial (for its error file)
        self.nodes: dict[int, list[str]] = {}  # trial number -> the Ray nodes it ran on, in order
        self.epoch_scores: dict[int, list[dict[str, float]]] = {}  # trial number -> EPOCH_SCORES_ATTR
        self.gauges: StudyGauges | None = None  # Prometheus, once Ray is up
        self.live: LiveStudy
        self.confirmations = ConfirmationQueue(study, optuna_study, defaults)
        summary = self.refresh_front()  # the launch's one full read; each event then updates self.live
        # Effective configuration -> the trial that trains (RUNNING) or trained (COMPLETE) it.
        self.configs: dict[str, int] = {}
        self.config_of: dict[int, str] = {}  # trial number -> its effective configuration
        for record in summary.trials:
            if record.state in ("COMPLETE", "RUNNING") and record.duplicate_of is None:
                self._claim(record.number, training_params(study, defaults, record.params))

    def _claim(self, number: int, params: dict[str, Any]) -> None:
        key = config_key(self.study, params)
        self.configs.setdefault(key, number)
        self.config_of[number] = key

    def _release_config(self, number: int) -> None:
        """Trial ``number`` was not trained to the end: its student may be proposed again."""
        if self.configs.get(self.config_of.get(number)) == number:
            del self.configs[self.config_of[number]]

    def suggest(self, ray_trial_id: str) -> dict[str, Any] | str | None:
        """The next trial for Ray: a confirmation the queue holds (see
        ``confirmation_queue``), an adopted trial, or a new one whose student no trial has;
        None while the budget is spent but running trials may still join the front;
        ``Searcher.FINISHED`` when nothing is left to train."""
        confirmation = self.confirmations.next(set(self.live.front), search_over=self._search_over(),
                                               search_waits=self._search_waits())
        if confirmation is not None:
            return confirmation
        frozen = self._next_adopted()
        if frozen is not None:
            trial = optuna.Trial(self.optuna_study, frozen._trial_id)
            resume_from = frozen.user_attrs.get("checkpoint")
            self.epoch_scores[trial.number] = list(frozen.user_attrs.get(EPOCH_SCORES_ATTR, []))
            params = training_params(self.study, self.defaults, trial.params)
        else:
            proposal = self._propose()
            if proposal is None:  # the budget is spent: what is left is confirmation
                confirmation = self.confirmations.next(set(self.live.front), search_over=self._search_over())
                return confirmation or (None if self.trials else Searcher.FINISHED)
            trial, params = proposal
            resume_from = None
            self.epoch_scores[trial.number] = []
        self._claim(trial.number, params)
        self.trials[ray_trial_id] = trial
        self.live.started(trial.number)
        trial.set_user_attr("ray_trial_id", ray_trial_id)
        # What the recipe reads: the worker takes the study's defaults for the rest.
        params = effective(self.study, params)
        self.tracker.start_trial(trial.number, params, ray_trial_id)
        self._show(f"trial {trial.number} started" + (" (resumed)" if resume_from else ""))
        return {"number": trial.number, "params": params, "resume_from": resume_from}

    def _next_adopted(self) -> FrozenTrial | None:
        """The next adopted trial to continue; those its scheduler had stopped are recorded
        PRUNED on the way, never trained further."""
        while self.adopt:
            frozen = self.adopt.pop(0)
            if STOPPED_ATTR not in frozen.user_attrs:
                return frozen
            self._record_stopped(frozen)
        return None

    def _record_stopped(self, frozen: FrozenTrial) -> None:
        """End an adopted trial that its scheduler stopped before its driver died: PRUNED."""
        trial = optuna.Trial(self.optuna_study, frozen._trial_id)
        params = training_params(self.study, self.defaults, trial.params)
        self.tracker.start_trial(trial.number, effective(self.study, params),  # re-opens its run
                                 ray_trial_id=frozen.user_attrs.get("ray_trial_id", ""))
        self._release_config(trial.number)
        self._end_untrained(trial, {})
        self._show(f"trial {trial.number} PRUNED: its scheduler stopped it at epoch "
                   f"{frozen.user_attrs[STOPPED_ATTR]} before the last driver died (not trained further)")

    def has_work(self) -> bool:
        """Anything to train: search budget left, an adopted trial, or a confirmation."""
        return (self.live.budget_used < self.target or bool(self.adopt)
                or next(self.confirmations.pending(set(self.live.front), self._search_over()), None) is not None)

    def _search_waits(self) -> bool:
        """A search trial (adopted or new) could take the next slot."""
        return bool(self.adopt) or self._budget_left()

    def _budget_left(self) -> bool:
        """Finished and running search trials leave room for a new one."""
        return self.live.budget_used + len(self.trials) < self.target

    def _search_over(self) -> bool:
        """No search trial runs or waits and the budget is spent: the front is final."""
        return not self.trials and not self.adopt and self.live.budget_used >= self.target

    def on_confirmation(self, number: int) -> None:
        """A confirmation of trial ``number`` was stored: its verdict may have changed."""
        self.confirmations.finished(number)
        verdict = self.confirmations.record(number).verdict
        if verdict is not None:
            self.tracker.set_verdicts({number: verdict.verdict.value})

    def _propose(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """A new trial whose effective configuration no COMPLETE or RUNNING trial has, and
        its training parameters; None when recorded duplicates used up the budget."""
        while self._budget_left():
            for attempt in range(MAX_REDRAWS + 1):
                with sampler_of(self.optuna_study, self.redraw_sampler if attempt else None):
                    trial = self.optuna_study.ask()
                    params, dropped = suggest(trial, self.study, self.distributions, self.defaults)
                if dropped:
                    self._show(f"trial {trial.number}: enqueued {', '.join(dropped)} dropped "
                               "(its recipe does not read them)")
                original = self.configs.get(config_key(self.study, params))
                if original is None:
                    return trial, params
                # An enqueued point is asked for by name: asking the sampler again cannot change it.
                if enqueued_values(trial) or attempt == MAX_REDRAWS:
                    self._record_duplicate(trial, original, params)
                    break
                trial.set_user_attr(REDRAWN_ATTR, original)
                self.optuna_study.tell(trial, state=TrialState.FAIL)
        return None

    def _record_duplicate(self, trial: optuna.Trial, original: int, params: dict[str, Any]) -> None:
        """Record ``trial`` as a duplicate of ``original`` without training it: PRUNED, linked."""
        trial.set_user_attr(DUPLICATE_ATTR, original)
        self.live.started(trial.number)
        self.tracker.start_trial(trial.number, effective(self.study, params), ray_trial_id="")
        self.tracker.mark_duplicate(trial.number, original)
        self._end_untrained(trial, {DUPLICATE_ATTR: original})
        self._show(f"trial {trial.number} is trial {original}'s student again (same effective configuration): "
                   "not trained")

    def _end_untrained(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Tell ``trial``, whose run is open, PRUNED without (further) training: storage,
        its MLflow run and the front."""
        self.optuna_study.tell(trial, state=TrialState.PRUNED)
        self.tracker.finish_trial(trial.number, "PRUNED", {})
        self._update_front(TrialRecord(trial.number, "PRUNED", None, None, None, params={}, attrs=attrs,
                                       metric_name=self.metric_name))

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
        self._store_epoch_scores(trial, result)
        if result.get("done"):  # Ray marks the result its scheduler stops the trial at
            trial.set_user_attr(STOPPED_ATTR, int(result["epoch"]))
        self.tracker.log_epoch(trial.number, epoch_metrics(result), step=int(result["epoch"]))
        self._show(f"trial {trial.number} epoch {result['epoch']}/{result.get('total_epochs')} on node {node}: "
                   f"{self.metric_name} {result.get(self.metric_name, float('nan')):.3f}, "
                   f"sigma {result.get('sigma', float('nan')):.4f}")

    def _store_epoch_scores(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
        names = ("epoch", self.metric_name, "sigma", "kappa")
        if any(result.get(name) is None for name in names):
            return  # an epoch measured on the eval split only, or no epoch at all
        score = {name: float(result[name]) for name in (*names, RUNG_CLOCK) if result.get(name) is not None}
        if self.epoch_scores[trial.number][-1:] == [score]:
            return  # the same epoch measured again (resumed from a checkpoint taken after it)
        # A trial resumed from an earlier checkpoint reports its later epochs again: replace them.
        scores = [s for s in self.epoch_scores[trial.number] if s["epoch"] < score["epoch"]]
        scores.append(score)
        self.epoch_scores[trial.number] = scores
        trial.set_user_attr(EPOCH_SCORES_ATTR, scores)

    def on_checkpoint(self, ray_trial_id: str, path: str) -> None:
        trial = self.trials.get(ray_trial_id)
        if trial is not None:
            trial.set_user_attr("checkpoint", path)

    def on_start(self, ray_trial: Any) -> None:
        self.ray_trials[ray_trial.trial_id] = ray_trial

    def on_complete(self, ray_trial_id: str, result: dict[str, Any] | None, error: bool, reason: str = "") -> None:
        trial = self.trials.pop(ray_trial_id, None)
        if trial is None:
            return
        self.confirmations.stale()
        state, values, why = self._outcome(ray_trial_id, result, error)
        reason = reason or why
        metrics = recorded_metrics(result)
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
        else:
            self._release_config(trial.number)
        self.optuna_study.tell(trial, values=values, state=state)
        pictures, extra = self._trial_outputs(trial.number, result) if state == TrialState.COMPLETE else ({}, {})
        # Per-epoch metrics are already on the run; only what the trial measured after its
        # last epoch is new.
        self.tracker.finish_trial(trial.number, state.name, extra, pictures, error=reason)
        metric, sigma = values or (None, None)
        record = TrialRecord(trial.number, state.name, metric, sigma, metrics.get("kappa"), params={},
                             attrs=metrics, metric_name=self.metric_name)
        self._update_front(record)
        if record.verdict is not None:
            self.tracker.set_verdicts({record.number: record.verdict.verdict.value})
        self._show(f"trial {trial.number} {state.name}" + (f": {reason}" if reason else "") + _scores(record))

    def _outcome(self, ray_trial_id: str, result: dict[str, Any] | None, error: bool):
        if error:
            return TrialState.FAIL, None, error_message(self.ray_trials.get(ray_trial_id))
        return trial_outcome(result, self.metric_name)

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
        """Read the whole study once: rebuild the live view, bring MLflow's pareto and verdict
        tags and the kept students in line with it.

        The driver does it when it starts and the launch when it closes; in between, each
        finished trial updates all three from memory (``_update_front``).
        """
        summary = summarize(self.optuna_study)
        self.live = LiveStudy(summary)
        # A copy: a write buffered while MLflow is unreachable keeps its arguments.
        self.tracker.mark_front(sorted(self.live.front))
        self.tracker.set_verdicts(summary.verdicts())
        self.optuna_study.set_user_attr(FRONT_ATTR, sorted(self.live.front))
        self.confirmations.confirmed.update(t.number for t in summary.trials if t.confirmations)
        apply_keep_policy(self.study.search.keep_checkpoints, self.locations.study_dir(self.study.name),
                          [t.number for t in summary.trials if t.state != "RUNNING"], self._kept())
        return summary

    def _kept(self) -> set[int]:
        """The trials whose students ``pareto`` keeps: the front's, and every trial confirmed
        (the best certified trial, which export picks by its mean over seeds, may have left
        the front after its confirmation began)."""
        return set(self.live.front) | self.confirmations.confirmed

    def _update_front(self, record: TrialRecord) -> None:
        """One finished trial: the front, its pareto tags and the kept students, without reading storage."""
        change = self.live.finished(record)
        if change.joined or change.left:
            self.tracker.mark_front(sorted(self.live.front))
            self.optuna_study.set_user_attr(FRONT_ATTR, sorted(self.live.front))
        apply_keep_policy(self.study.search.keep_checkpoints, self.locations.study_dir(self.study.name),
                          [record.number, *change.left], self._kept())

    def _show(self, message: str) -> None:
        if self.gauges is not None:
            self.gauges.set_counts(self.live.counts)
        if self.progress:
            self.progress(message, self.live.budget_used, self.target)


@contextmanager
def sampler_of(optuna_study: optuna.Study, sampler: BaseSampler | None) -> Iterator[None]:
    """Ask and suggest with ``sampler`` instead of the study's own (unchanged when None).

    Example:
        >>> study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        >>> with sampler_of(study, optuna.samplers.RandomSampler(seed=0)):
        ...     x = study.ask().suggest_float("x", 0.0, 1.0)
        >>> type(study.sampler).__name__
        'TPESampler'
    """
    own = optuna_study.sampler
    optuna_study.sampler = sampler or own
    try:
        yield
    finally:
        optuna_study.sampler = own


def epoch_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A worker's own metrics in one of its Ray results (without the keys Ray adds).

    Example:
        >>> epoch_metrics({"accuracy": 0.8, "epoch": 1, "pid": 42, "config/number": 3})
        {'accuracy': 0.8, 'epoch': 1}
    """
    return {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS and not k.startswith("config/")}


def trial_outcome(result: dict[str, Any] | None, metric_name: str) -> tuple[TrialState, list[float] | None, str]:
    """The state, objective values and failure reason of a worker that ended without error.

    Example:
        >>> trial_outcome({"epoch": 2, "total_epochs": 2, "accuracy": 0.8, "sigma": 0.03}, "accuracy")
        (<TrialState.COMPLETE: 1>, [0.8, 0.03], '')
        >>> trial_outcome({"nonfinite": 1, "error": "non-finite loss at epoch 1"}, "accuracy")[2]
        'non-finite loss at epoch 1'
    """
    if not result or "epoch" not in result and "nonfinite" not in result:
        return TrialState.FAIL, None, "stopped before its first epoch finished"
    if result.get("nonfinite"):
        return TrialState.FAIL, None, str(result.get("error", "non-finite loss"))
    if int(result["epoch"]) < int(result["total_epochs"]):
        # Stopped by the scheduler: its values are under-trained and must never reach the front.
        return TrialState.PRUNED, None, ""
    metric, sigma = float(result[metric_name]), float(result["sigma"])
    if math.isnan(metric) or math.isnan(sigma):
        return TrialState.FAIL, None, "sigma undefined: no training example is right for both teacher and student"
    return TrialState.COMPLETE, [metric, sigma], ""


def error_message(ray_trial: Any) -> str:
    """Why a Ray trial's worker failed: the last line of the traceback Ray saved for it."""
    error_file = getattr(ray_trial, "error_file", None)
    if error_file and os.path.isfile(error_file):
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "the trial's worker failed"


def _scores(record: TrialRecord) -> str:
    # A trial that has just finished has one seed: its verdict is never "certified" yet.
    if record.verdict is None:
        return ""
    return (f": {record.metric_name} {record.metric:.3f}, sigma {record.sigma:.4f} vs kappa {record.kappa:g}, "
            f"{verdict_text(record)}")


def apply_keep_policy(policy: str, study_dir: Path, finished: Iterable[int], kept: set[int]) -> None:
    """Delete the students of the ``finished`` trials the policy does not keep (``pareto``:
    those not in ``kept``, the front and the confirmed trials).

    A dominated trial never rejoins the front, and one never confirmed leaves it unconfirmed,
    so deleting a student when its trial finishes off the front, or leaves it, is final.

    Example:
        >>> apply_keep_policy("pareto", Path("/tmp/kd-search-doc/studies/demo"), [3, 4], kept={4})
    """
    if policy == "all":
        return
    keep = kept if policy == "pareto" else set()
    for number in finished:
        if number not in keep:
            shutil.rmtree(trial_dir(study_dir, number) / "student", ignore_errors=True)


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

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._driver.on_complete(trial_id, result, error)


class TrialEvents(tune.Callback):
    """Remembers each Ray trial (for its error file), its epochs' results and its last
    checkpoint (to continue it after a driver crash).

    Epoch results come here, not to the searcher: Ray hands a result that its scheduler
    stops the trial at to callbacks but not to the searcher, and hands it over before it
    saves that epoch's checkpoint. So a stored checkpoint's epoch always has its scores
    stored, even where a driver dies between the two (a relaunch resumes after it).
    """

    def __init__(self, driver: Driver):
        self._driver = driver

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._driver.on_start(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._driver.on_result(trial.trial_id, flatten_dict(result))  # as the searcher would get it

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._driver.on_checkpoint(trial.trial_id, checkpoint.path)
