"""Confirmation: a search's best trials trained again with further seeds.

One seed decides whether a trial satisfies phi_cnf (sigma <= kappa), and another seed can
flip it. ``confirm`` retrains the ``top`` most accurate feasible trials, and every
finished trial whose sigma interval straddles kappa, with ``seeds`` further training
seeds (``confirmation_seeds``): the same hyperparameters, teacher and data, another
``distillation.seed``; a trial that a certified trial dominates is left out
(``trials_to_confirm``).

A launch with ``search.confirm.top`` confirms inside its own Ray Tune run
(:mod:`~kd_search.service.search.confirmation_queue`); ``confirm`` is for a study that
finished without. Its confirmations run as Ray Tune trials exactly like the search's (same
worker, resources, concurrency, epoch checkpoints and retries) from a fixed list of
configurations (``ConfigList``) under a FIFO scheduler. Either way they never count
against the search's budget and the Optuna sampler never sees them. The driver process
records each finished one as a study user attribute (``record_confirmation``, under
``confirmation_key``; the readers' ``records.confirmations`` reads them back) and as an
MLflow run nested under the study's run. A relaunch skips the (trial, seed) pairs stored
COMPLETE and runs the FAIL ones again: a failure after Ray's retries is usually a lost
worker or an interrupted run, worth another try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from kd_search.engine.hyperparameters import default_hyperparameters, training_params
from kd_search.engine.spec import Study
from kd_search.service.search.confirmation_queue import (
    confirmation_seeds,
    is_confirmation,
    trials_to_confirm,
)
from kd_search.service.search.driver import (
    ProgressCallback,
    epoch_metrics,
    error_message,
    trial_outcome,
)
from kd_search.service.search.lease import hold_lease
from kd_search.service.search.locations import Locations, check_locations
from kd_search.service.search.optuna_study import load_optuna_study
from kd_search.service.search.ray_runs import init_ray, prepare_teacher, run_trials, study_tracker
from kd_search.service.search.records import (
    CONFIRMATION_ATTR_PREFIX,
    recorded_metrics,
    summarize,
)
from kd_search.service.tracking import StudyTracker


def confirmation_key(trial_number: int, seed: int) -> str:
    """The study user attribute holding trial ``trial_number``'s confirmation with ``seed``.

    Example:
        >>> confirmation_key(3, 1000)
        'kd_search_confirmation:3:1000'
    """
    return f"{CONFIRMATION_ATTR_PREFIX}{trial_number}:{seed}"


def record_confirmation(optuna_study: optuna.Study, trial_number: int, seed: int, payload: dict[str, Any]) -> None:
    """Store a finished confirmation: ``payload`` holds its ``state`` (COMPLETE or FAIL),
    ``failure`` (FAIL only) and its recorded metrics. Only the driver calls this.

    Example:
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> record_confirmation(study, 3, 1000, {"state": "COMPLETE", "accuracy": 0.8, "sigma": 0.04})
        >>> study.user_attrs["kd_search_confirmation:3:1000"]["seed"]
        1000
    """
    if payload.get("state") not in ("COMPLETE", "FAIL"):
        raise ValueError(f"a confirmation is COMPLETE or FAIL, not {payload.get('state')!r}")
    optuna_study.set_user_attr(confirmation_key(trial_number, seed), payload | {"seed": seed, "trial": trial_number})


class ConfigList(Searcher):
    """Ray's Searcher API over a fixed list of trial configurations, in order.

    Example:
        >>> configs = ConfigList([{"number": 3, "seed": 1000, "params": {}}])
        >>> configs.suggest("a1")["seed"], configs.suggest("a2")
        (1000, 'FINISHED')
    """

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__(metric=None, mode=None)
        self.configs = list(configs)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn: the recorder stores the results."""


class ConfirmationRecorder(tune.Callback):
    """The driver side of the confirmations: the single writer of their Optuna records
    and MLflow runs, fed by Ray Tune's trial events. In a run that trains search trials
    too it passes theirs over; ``on_recorded(trial_number)`` hears of each stored one."""

    def __init__(self, optuna_study: optuna.Study, tracker: StudyTracker, metric_name: str,
                 on_event: ProgressCallback | None, target: int,
                 on_recorded: Callable[[int], None] | None = None):
        self.optuna_study, self.tracker, self.metric_name = optuna_study, tracker, metric_name
        self.on_event, self.target, self.on_recorded = on_event, target, on_recorded
        self.running: dict[str, tuple[int, int]] = {}  # Ray trial id -> (trial number, seed)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its callbacks; kd-search resumes from storage instead

    def on_trial_start(self, iteration, trials, trial, **info):
        if not is_confirmation(trial.config):
            return
        number, seed = trial.config["number"], trial.config["seed"]
        retried = trial.trial_id in self.running
        self.running[trial.trial_id] = number, seed
        self.tracker.start_confirmation(number, seed, trial.config["params"], trial.trial_id)
        self.show(f"confirm trial {number} seed {seed} started" + (" (retried)" if retried else ""))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or trial.trial_id not in self.running:
            return
        number, seed = trial.config["number"], trial.config["seed"]
        self.tracker.log_epoch(number, epoch_metrics(result), step=int(result["epoch"]), seed=seed)
        self.show(f"confirm trial {number} seed {seed} epoch {result['epoch']}/{result.get('total_epochs')}: "
                   f"{self._scores(result)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial.trial_id, trial.last_result, failure=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial.trial_id, trial.last_result, failure=error_message(trial))

    def close_unfinished(self) -> None:
        """Record as FAIL what the run ended without finishing (a relaunch runs them again)."""
        for ray_trial_id in list(self.running):
            self._finish(ray_trial_id, None, failure="the confirmation run ended before it did")

    def _finish(self, ray_trial_id: str, result: dict[str, Any] | None, failure: str | None) -> None:
        if ray_trial_id not in self.running:
            return
        number, seed = self.running.pop(ray_trial_id)
        state = TrialState.FAIL
        if failure is None:
            state, _, failure = trial_outcome(result, self.metric_name)
            if state == TrialState.PRUNED:  # under-trained: it confirms nothing
                state, failure = TrialState.FAIL, f"stopped after epoch {result['epoch']} of {result['total_epochs']}"
        metrics = recorded_metrics(result)
        record_confirmation(self.optuna_study, number, seed,
                            metrics | {"state": state.name} | ({"failure": failure} if failure else {}))
        self.tracker.finish_trial(number, state.name, {}, error=failure, seed=seed)
        if self.on_recorded is not None:
            self.on_recorded(number)
        self.show(f"confirm trial {number} seed {seed}: "
                   + (self._scores(result) if state == TrialState.COMPLETE else f"FAIL: {failure}"))

    def _scores(self, result: dict[str, Any]) -> str:
        return (f"{self.metric_name} {result.get(self.metric_name, float('nan')):.3f}, "
                f"sigma {result.get('sigma', float('nan')):.4f}")

    def show(self, message: str) -> None:
        if self.on_event:
            self.on_event(message, None, self.target)
        else:
            logging.getLogger("kd_search").info(message)


def run_confirmations(study: Study, optuna_study: optuna.Study, tracker: StudyTracker, locations: Locations,
                      num_mapped: int, top: int, seeds: int, *, on_event: ProgressCallback | None = None,
                      ray_address: str | None = None, num_cpus: int | None = None,
                      scheduler: TrialScheduler | None = None) -> list[tuple[int, int]]:
    """Run the confirmations a study lacks (see ``confirm``); return every (trial, seed) chosen.

    Example:
        >>> run_confirmations(study, optuna_study, tracker, locations, 4, top=2, seeds=2)  # doctest: +SKIP
        [(0, 1000), (0, 2000), (3, 1000), (3, 2000)]
    """
    chosen = [(t, seed) for t in trials_to_confirm(summarize(optuna_study), top)
              for seed in confirmation_seeds(study, seeds)]
    stored = optuna_study.user_attrs
    defaults = default_hyperparameters(study, num_mapped)
    configs = [{"number": t.number, "seed": seed, "params": training_params(study, defaults, t.params)}
               for t, seed in chosen if stored.get(confirmation_key(t.number, seed), {}).get("state") != "COMPLETE"]
    recorder = ConfirmationRecorder(optuna_study, tracker, study.objectives.task_metric, on_event, target=0)
    recorder.show(f"confirmations: {len(configs)} to run, {len(chosen) - len(configs)} already stored")
    if configs:
        init_ray(ray_address, num_cpus)
        try:
            run_trials(study, locations, f"{study.name}-confirm",
                       search_alg=ConfigList(configs),
                       scheduler=scheduler or FIFOScheduler(), num_samples=len(configs), callbacks=[recorder])
        finally:
            recorder.close_unfinished()
    # The confirmations change the trials' verdicts: the MLflow tags follow.
    tracker.set_verdicts(summarize(optuna_study).verdicts())
    return [(t.number, seed) for t, seed in chosen]


def confirm(study: Study, *, locations: Locations | None = None, top: int | None = None, seeds: int | None = None,
            progress: ProgressCallback | None = None, on_event: ProgressCallback | None = None,
            ray_address: str | None = None, num_cpus: int | None = None,
            scheduler: TrialScheduler | None = None, driver_grace: float | None = None) -> list[dict[str, Any]]:
    """Train a launched study's best trials again with further seeds; return their records.

    ``top`` and ``seeds`` default to the study's ``search.confirm``. Confirmations already
    stored COMPLETE are kept, never re-run. ``scheduler`` replaces the FIFO scheduler.
    Like ``launch``, it holds the study's driver lease: while another driver of the study
    lives it raises ``DriverRunning`` before any work.

    Example:
        >>> records = confirm(load_study("smoke"), top=2, seeds=2)  # doctest: +SKIP
        >>> [(r["trial"], r["seed"], r["state"]) for r in records][:2]  # doctest: +SKIP
        [(0, 1000, 'COMPLETE'), (0, 2000, 'COMPLETE')]
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    locations = locations or Locations.resolve(study)
    check_locations(locations)
    optuna_study = load_optuna_study(study.name, locations.storage)

    def tell(message: str) -> None:
        if on_event:
            on_event(message, None, 0)

    with hold_lease(locations.storage, study.name, driver_grace, tell):
        num_mapped, _ = prepare_teacher(study, locations, progress)
        tracker = study_tracker(study, locations, on_event, 0)
        try:
            chosen = run_confirmations(study, optuna_study, tracker, locations, num_mapped,
                                       study.search.confirm.top if top is None else top,
                                       study.search.confirm.seeds if seeds is None else seeds,
                                       on_event=on_event, ray_address=ray_address, num_cpus=num_cpus,
                                       scheduler=scheduler)
        finally:
            tracker.close()
    stored = optuna_study.user_attrs
    return [stored[confirmation_key(number, seed)] for number, seed in chosen if confirmation_key(number, seed) in stored]
