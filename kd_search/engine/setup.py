"""What a trial needs that does not depend on its hyperparameters: ``prepare`` builds it once.

``prepare(study, workdir)`` loads the tokenised task (from its cache), prepares the
teacher (fine-tuned once, stored by content key) and fixes the layer map; ``run_trial``
(:mod:`kd_search.engine.trial`), the evaluation (:mod:`kd_search.engine.evaluation`) and
the model audit all read the :class:`TrialSetup` it returns. It lives apart from the
trial so that the evaluation can name it without importing the trial that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kd_search.engine.compatibility import check_models
from kd_search.engine.data import TaskData
from kd_search.engine.data_cache import cached_task
from kd_search.engine.models import load_tokenizer
from kd_search.engine.progress import ProgressCallback
from kd_search.engine.spec import Study
from kd_search.engine.teacher import prepare_teacher, teacher_key
from kd_search.engine.timing import PhaseTimer


@dataclass
class TrialSetup:
    """Everything a trial needs that does not depend on its hyperparameters."""

    study: Study
    data: TaskData
    tokenizer: Any
    teacher_path: str
    teacher_info: dict
    teacher_id: str  # content key of the teacher: names its output cache
    pairs: list[tuple[int, int]]
    device: torch.device
    workdir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds of prepare's phases


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(study: Study, workdir: str | Path, progress: ProgressCallback | None = None) -> TrialSetup:
    """Check the study against its models (:func:`~kd_search.engine.compatibility.check_models`,
    before any work), load data, prepare (fine-tune once) the teacher and fix the layer map.

    Example:
        >>> setup = prepare(load_study("smoke"), "runs/smoke")  # doctest: +SKIP
    """
    device = resolve_device(study.device)
    timer = PhaseTimer()
    with timer.phase("setup_data"):
        tokenizer = load_tokenizer(study.teacher.model)
        # Every check on the models, from their configurations, before the data or teacher.
        pairs = check_models(study, teacher_tokenizer=tokenizer).pairs
        data = cached_task(study.task, tokenizer, cache_root(study, workdir))
        teacher_data = data
        fine_tune = study.teacher.fine_tune
        if fine_tune and fine_tune.train_limit and fine_tune.train_limit > len(data.train):
            # The teacher may learn from more examples than the student distils on (a
            # superset: both are heads of the same seeded shuffle).
            teacher_data = cached_task(study.with_changes(task={"train_limit": fine_tune.train_limit}).task,
                                       tokenizer, cache_root(study, workdir))
    with timer.phase("setup_teacher"):
        teacher_path, info = prepare_teacher(study, teacher_data, workdir, device, progress)
    return TrialSetup(study, data, tokenizer, teacher_path, info, teacher_key(study, teacher_data), pairs, device,
                      Path(workdir), timer.seconds)


def cache_root(study: Study, workdir: str | Path) -> Path:
    """Where a study's caches live: ``distillation.cache_dir``, else ``<workdir>/cache``.

    Example:
        >>> from kd_search.study_file import load_study
        >>> cache_root(load_study("smoke"), "/tmp/runs").as_posix()
        '/tmp/runs/cache'
    """
    return Path(study.distillation.cache_dir or Path(workdir) / "cache").expanduser()
