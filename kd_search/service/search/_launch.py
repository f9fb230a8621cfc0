"""One launch of a study: the teacher once, then a Ray Tune run of its trials.

``launch`` takes the study's driver lease (``lease``), prepares the teacher and its output cache in the driver process, creates or
resumes the Optuna study, starts (or joins) Ray and runs a ``Tuner`` whose searcher is
the launch's ``Driver``; with ``search.confirm.top`` the same run confirms the best
trials with further seeds as they reach the front (``confirmation_queue``). It closes what the run left open and logs the study's
results.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
from kd_search.engine.spec import Study
from kd_search.service.search._confirm import ConfirmationRecorder
from kd_search.service.search._patient_storage import is_storage_outage, storage_patience_seconds
from kd_search.service.search.driver import (
    ConstrainedOptunaSearcher,
    Driver,
    ProgressCallback,
    TrialEvents,
)
from kd_search.service.search.lease import Lease, hold_lease
from kd_search.service.search.locations import Locations, check_locations
from kd_search.service.search.optuna_study import (
    EPOCH_SCORES_ATTR,
    INTERRUPTED_ATTR,
    LABELS_ATTR,
    create_or_resume,
    storage_error,
)
from kd_search.service.search.presenting import summary_table
from kd_search.service.search.ray_runs import (
    init_ray,
    outage_notifier,
    prepare_teacher,
    run_trials,
    study_tracker,
)
from kd_search.service.search.records import StudySummary, finished_count
from kd_search.service.search.schedulers import MultiObjectiveASHA, SearchTrialsOnly, make_scheduler
from kd_search.service.telemetry import StudyGauges
from kd_search.service.tracking import StudyTracker
from kd_search.urls import display_url


def _scheduler(study: Study, optuna_study: optuna.Study) -> TrialScheduler:
    scheduler = make_scheduler(study.search.scheduler, study.objectives.task_metric,
                               study.distillation.epochs_total or sum(s.epochs for s in study.distillation.stages))
    if isinstance(scheduler, MultiObjectiveASHA):  # a relaunch: the rungs start where they were
        for trial in optuna_study.get_trials(deepcopy=False):
            scheduler.replay(trial.number, trial.user_attrs.get(EPOCH_SCORES_ATTR, []))
    return scheduler


def launch(study: Study, *, locations: Locations | None = None, trials: int | None = None,
           progress: ProgressCallback | None = None, on_event: ProgressCallback | None = None,
           ray_address: str | None = None, num_cpus: int | None = None, scheduler: Any = None,
           driver_grace: float | None = None) -> StudySummary:
    """Run (or resume) a study until it has ``trials`` finished trials; return its summary.

    Launching a study name that already has trials in storage resumes it: finished
    trials are kept and never re-run; trials a dead driver left RUNNING continue from
    their last epoch checkpoint. The launch holds the study's driver lease throughout
    (see ``lease``): while another driver of the study lives it raises ``DriverRunning``
    before any work; a driver unseen for ``driver_grace`` seconds (default
    ``KD_SEARCH_DRIVER_GRACE``, else 60) is dead and its RUNNING trials are adopted.
    With ``search.confirm.top`` the best trials are confirmed with further seeds in the
    same Ray Tune run, as they reach the front (see ``confirmation_queue``); a relaunch
    confirms what the last one left.
    ``progress(description, done, total)`` follows the teacher's preparation,
    ``on_event(message, finished_trials, target)`` the trials. ``scheduler`` replaces the
    study's Ray Tune scheduler (not the confirmations').

    Example:
        >>> summary = launch(load_study("smoke"), trials=4)  # doctest: +SKIP
        >>> summary.counts()  # doctest: +SKIP
        {'COMPLETE': 4}
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    locations = locations or Locations.resolve(study)
    target = trials or study.search.trials
    check_locations(locations)

    def tell(message: str) -> None:
        if on_event:
            on_event(message, None, target)

    with hold_lease(locations.storage, study.name, driver_grace, tell) as replaced:
        if replaced is not None:
            tell(took_over(replaced))
        return _run_launch(study, locations, target, progress, on_event, ray_address, num_cpus, scheduler)


def took_over(replaced: Lease) -> str:
    """What a launch says when it takes over a dead driver's lease.

    Example:
        >>> took_over(Lease("s", "t", "node-1", 4242, 0.0, 75.0, 5.0))
        'the driver pid 4242 on node-1 was last seen 75 s ago and is taken as dead: its RUNNING trials are adopted'
    """
    return (f"the driver pid {replaced.pid} on {replaced.host} was last seen {replaced.age:.0f} s ago and is taken "
            "as dead: its RUNNING trials are adopted")


def _run_launch(study: Study, locations: Locations, target: int, progress: ProgressCallback | None,
                on_event: ProgressCallback | None, ray_address: str | None, num_cpus: int | None,
                scheduler: Any) -> StudySummary:
    """The launch under its lease: the teacher, the study, the Tune run, the confirmations."""
    patience = storage_patience_seconds()
    num_mapped, label_names = prepare_teacher(study, locations, progress)
    optuna_study, resumed = create_or_resume(study, locations.storage, num_mapped, patience_seconds=patience,
                                             notify=outage_notifier(on_event, target))
    # The class names go with the study, for readers (export) that never load the data.
    optuna_study.set_user_attr(LABELS_ATTR, list(label_names) if label_names else None)
    tracker = study_tracker(study, locations, on_event, target)
    tracker.start_study(study.description, study.model_dump(mode="json"), {
        "sampler": study.search.sampler, "objectives": f"{study.objectives.task_metric} up, sigma down",
        "constraint": "sigma <= kappa", "kappa": study.objectives.confidence.kappa,
        "teacher": study.teacher.model, "student_layers": num_mapped, "storage": display_url(locations.storage)})

    remaining = target - finished_count(optuna_study)
    # Under the lease, every RUNNING trial is a dead driver's: a live one would have refused this launch.
    stale = [t for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    adopt, abandon = stale[:max(remaining, 0)], stale[max(remaining, 0):]
    for trial in abandon:  # the budget is met without them: close them, never leave RUNNING
        optuna.Trial(optuna_study, trial._trial_id).set_user_attr(INTERRUPTED_ATTR, True)
        optuna_study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, num_mapped),
                     default_hyperparameters(study, num_mapped), adopt, target, on_event)
    recorder = ConfirmationRecorder(optuna_study, tracker, study.objectives.task_metric, on_event, target,
                                    on_recorded=driver.on_confirmation)
    try:
        if driver.has_work():
            init_ray(ray_address, num_cpus)
            driver.gauges = StudyGauges(study.name)
            try:
                # num_samples -1: the driver says when it is done (search trials and confirmations).
                run_trials(study, locations, study.name, search_alg=ConstrainedOptunaSearcher(driver),
                           scheduler=SearchTrialsOnly(scheduler or _scheduler(study, optuna_study)),
                           num_samples=-1, callbacks=[TrialEvents(driver), recorder])
            finally:
                recorder.close_unfinished()
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
    return summary


def _close_launch(driver: Driver, tracker: StudyTracker, study: Study, status: str) -> StudySummary:
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
