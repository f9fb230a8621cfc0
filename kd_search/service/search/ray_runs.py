"""What a launch and a confirmation share: Ray, the teacher, MLflow and one Tune run.

Both prepare the teacher and its output cache in the driver process, re-open the study's
MLflow runs and run distillation workers as Ray Tune trials with the study's resources,
concurrency, epoch checkpoints and retries (``search.max_failures``). They differ only in
where the trials' configurations come from (Optuna, or a fixed list) and in who records
the results.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from kd_search.engine.spec import Study
from kd_search.service.search.driver import ProgressCallback
from kd_search.service.search.locations import Locations
from kd_search.service.search.worker import distillation_trainable, trial_dirname
from kd_search.service.tracking import StudyTracker


def init_ray(ray_address: str | None, num_cpus: int | None) -> None:
    """Join the Ray cluster at ``ray_address`` (else ``RAY_ADDRESS``), or start a local Ray
    of this process's own (once per process).

    Joining or not is always deliberate: without an address a bare ``ray.init()`` would
    join whatever cluster ``ray start --head`` left running on this machine (and refuse
    ``num_cpus``), so the local case asks Ray for ``address="local"``, a new instance. A
    joined cluster keeps its nodes' own CPU counts: none is passed.

    Example:
        >>> init_ray(None, num_cpus=2)  # doctest: +SKIP
    """
    import ray

    # Ray's own console tables: the CLI shows progress itself and MLflow holds the results.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        logging.getLogger("ray").setLevel(logging.ERROR)
        return
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    address = ray_address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                 logging_level=logging.ERROR)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env}, logging_level=logging.ERROR)


def prepare_teacher(study: Study, locations: Locations,
                    progress: ProgressCallback | None) -> tuple[int, tuple[str, ...] | None]:
    """Fine-tune (once) the teacher and fill its output cache, before any worker starts;
    returns the number of mapped student layers and the task's class names (None where
    the data gives class numbers). The data is read and checked first: bad labels stop
    the launch before any fine-tuning.

    Example:
        >>> prepare_teacher(study, Locations.resolve(study), None)  # doctest: +SKIP
        (4, ('rotten', 'fresh'))
    """
    from kd_search.engine.compatibility import check_models
    from kd_search.engine.trial import prepare, teacher_layers, teacher_outputs

    check_models(study)  # a study the models cannot run is refused before any work
    locations.study_dir(study.name).mkdir(parents=True, exist_ok=True)
    setup = prepare(study, locations.workdir, progress)
    teacher_outputs(setup, teacher_layers(setup), progress)
    return len(setup.pairs), setup.data.label_names


def outage_notifier(on_event: ProgressCallback | None, target: int) -> Callable[[str], None]:
    """Where a storage or tracking outage is told: ``on_event``, else the log.

    Example:
        >>> outage_notifier(lambda message, done, total: print(message), 8)("MLflow unreachable")
        MLflow unreachable
    """

    def notify(message: str) -> None:  # never reads storage: it may be what is down
        if on_event:
            on_event(message, None, target)
        else:
            logging.getLogger("kd_search").warning(message)

    return notify


def study_tracker(study: Study, locations: Locations, on_event: ProgressCallback | None,
                  target: int) -> StudyTracker:
    """The study's MLflow runs, re-opened; MLflow outages are told through ``on_event``.

    Example:
        >>> tracker = study_tracker(study, Locations.resolve(study), None, 8)  # doctest: +SKIP
    """
    return StudyTracker(locations.tracking_uri, locations.experiment, study.name,
                        artifact_root=locations.workdir / "mlartifacts",
                        backlog_file=locations.study_dir(study.name) / "mlflow-backlog.json",
                        notify=outage_notifier(on_event, target))


def run_trials(study: Study, locations: Locations, run_label: str, *, search_alg: Searcher,
               scheduler: TrialScheduler, num_samples: int, callbacks: list[Any]) -> None:
    """One Ray Tune run of ``num_samples`` distillation trials, configured by ``search_alg``.

    Example:
        >>> run_trials(study, locations, study.name, search_alg=searcher, scheduler=FIFOScheduler(),
        ...            num_samples=4, callbacks=[])  # doctest: +SKIP
    """
    study_dir = locations.study_dir(study.name)
    # Every node reads and writes these paths: on a cluster the work dir is a shared directory.
    storage_path, run_name = study_dir / "ray", f"{run_label}-{time.strftime('%Y%m%d-%H%M%S')}"
    resources = {"cpu": study.search.resources.cpu, "gpu": study.search.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(distillation_trainable, spec=study.model_dump(mode="json"),
                             workdir=str(locations.workdir), study_dir=str(study_dir),
                             run_dir=str(storage_path / run_name)),
        resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=study.search.concurrency,
                                    # A finished trial's worker process takes the next trial:
                                    # no new process, no second import of torch and transformers.
                                    reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial_dirname(trial.trial_id)),
        run_config=tune.RunConfig(
            name=run_name, storage_path=str(storage_path),
            failure_config=tune.FailureConfig(max_failures=study.search.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks, verbose=0),
    )
    tuner.fit()
