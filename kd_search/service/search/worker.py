"""The Ray side of a search: one distillation trial in a Ray Tune worker.

A worker runs ``run_trial`` and reports each epoch (with its checkpoint) through Ray; it
never writes the Optuna storage or MLflow, which only the driver does. It saves the
student and the confidence arrays of a trial that finishes in the trial's directory; a
confirmation (the trial retrained with another seed) saves only its confidence arrays,
under ``seeds/<seed>``, so the trial's own files stay as the search left them.
Every worker also writes ``timings.json``: when it started (``started_at``, Unix time),
its process (``pid``: Ray Tune hands a worker the next trial), the GPUs Ray gave it
(``gpu_ids``: ``search.resources.gpu`` of them) and the wall seconds of the trial's phases
(``run_trial``'s, then ``outputs_save`` and ``student_save``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from kd_search.engine.spec import parse_study
from kd_search.errors import NonFiniteLossError
from kd_search.service.search.locations import confirmation_dir, trial_dir
from kd_search.service.telemetry import TrialGauges


def trial_dirname(ray_trial_id: str) -> str:
    """The name of a Ray trial's directory (its checkpoints) under the run's storage path.

    Example:
        >>> trial_dirname("a1b2c3d4")
        'trial-a1b2c3d4'
    """
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


def distillation_trainable(config: dict[str, Any], *, spec: dict[str, Any], workdir: str, study_dir: str,
                           run_dir: str) -> None:
    """Ray Tune function trainable: one ``run_trial``, reporting each epoch with a checkpoint.

    ``config`` is what the driver's searcher proposed: the Optuna trial number, its
    parameters and the checkpoint an adopted trial continues from. With a ``seed`` it is
    a confirmation: the trial retrained with that ``distillation.seed``.

    Example:
        >>> tune.with_parameters(distillation_trainable, spec=study.model_dump(mode="json"),
        ...                      workdir="runs", study_dir="runs/studies/demo",
        ...                      run_dir="runs/studies/demo/ray/demo-1")  # doctest: +SKIP
    """
    started_at = time.time()
    import torch

    from kd_search.engine.timing import PhaseTimer
    from kd_search.engine.trial import run_trial
    from kd_search.service.export import model_card, save_student

    study = parse_study(spec)
    number, seed = config["number"], config.get("seed")
    if seed is not None:  # the teacher and data stay: the study's seed fixes them
        study = study.with_changes(distillation={"seed": seed})
    torch.set_num_threads(max(1, int(study.search.resources.cpu or 1)))
    # On a cluster the node's IP need not tell nodes apart (several per host); its id does.
    node_id = ray.get_runtime_context().get_node_id()

    gauges = TrialGauges(study.name, number if seed is None else f"{number}-seed-{seed}")

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        gauges.record(int(metrics["epoch"]))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(_reportable(metrics) | {"node_id": node_id}, checkpoint=checkpoint)

    resume = _resume_point(config, Path(run_dir) / trial_dirname(tune.get_context().get_trial_id()))
    try:
        # FIFO reads no epoch but the last: earlier epochs skip the training split's pass
        # (their MLflow curves show the eval metrics and the training loss).
        result = run_trial(study, config["params"], report, workdir=workdir, resume_from=resume,
                           full_evaluation_every_epoch=study.search.scheduler != "fifo")
    except NonFiniteLossError as error:  # deterministic: retrying it would fail the same way
        tune.report({"nonfinite": 1, "error": str(error)})
        return
    out = trial_dir(study_dir, number) if seed is None else confirmation_dir(study_dir, number, seed)
    out.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer(result.timings)
    with timer.phase("outputs_save"):
        np.savez(out / "confidence.npz", **result.outputs)
    if seed is None:
        with timer.phase("student_save"):
            card = model_card(spec, result.params, result.metrics)
            save_student(result.student, result.tokenizer, out / "student", card=card,
                         metrics=result.metrics | {"trial": number})
    (out / "timings.json").write_text(json.dumps({"started_at": started_at, "pid": os.getpid(),
                                                       "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                                                       "seconds": timer.seconds}))


def _reportable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
