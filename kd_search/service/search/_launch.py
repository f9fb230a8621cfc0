"""One launch of a study: the teacher once, then a Ray Tune run of its trials.

``launch`` prepares the teacher and its output cache in the driver process, creates or
resumes the Optuna study, starts (or joins) Ray and runs a ``Tuner`` whose searcher is
the launch's ``Driver``; it closes what the run left open and logs the study's results.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import TrialScheduler

from kd_search.engine.spec import Study
from kd_search.service.search.driver import (
    ConstrainedOptunaSearcher,
    Driver,
    ProgressCallback,
    TrialEvents,
)
from kd_search.service.search.locations import Locations, check_locations
from kd_search.service.search.optuna_study import (
    INTERRUPTED_ATTR,
    create_or_resume,
    is_storage_outage,
    search_distributions,
    storage_error,
)
from kd_search.service.search.records import StudySummary, finished_count, summary_table
from kd_search.service.search.schedulers import make_scheduler
from kd_search.service.search.worker import distillation_trainable, trial_dirname
from kd_search.service.telemetry import StudyGauges
from kd_search.service.tracking import StudyTracker
from kd_search.urls import display_url


def _scheduler(study: Study) -> TrialScheduler:
    return make_scheduler(study.search.scheduler, study.objectives.task_metric,
                          study.distillation.epochs_total or sum(s.epochs for s in study.distillation.stages))


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
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, num_mapped),
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


def _run_tuner(study: Study, driver: Driver, locations: Locations, remaining: int, scheduler: Any) -> None:
    """One Ray Tune run of ``remaining`` trials; the driver answers the searcher's calls."""
    study_dir = locations.study_dir(study.name)
    # Every node reads and writes these paths: on a cluster the work dir is a shared directory.
    storage_path, run_name = study_dir / "ray", f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    resources = {"cpu": study.search.resources.cpu, "gpu": study.search.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(distillation_trainable, spec=study.model_dump(mode="json"),
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
