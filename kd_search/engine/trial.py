"""One distillation trial: train a student with the TinyBERT objective, measure it each epoch.

``run_trial(study, params, report)`` is what the search repeats. It reads the teacher's
outputs from the shared cache (or runs the teacher in every step when the study asks
for teacher dropout), plans the study's stages once (:class:`~kd_search.engine.step.StagePlan`),
trains the student through them, and after every epoch evaluates the task metric on
eval and the confidence metrics (sigma, kappa, phi_cnf, ECE, teacher agreement) on both
splits (:mod:`kd_search.engine.evaluation`; epochs before the last on eval only when the
caller asks), then calls ``report(metrics, checkpoint_dir)``. The tokenised task is read
from a cache beside the teacher's outputs (:mod:`kd_search.engine.data_cache`).

Metric names: those of :mod:`kd_search.engine.evaluation`, and ``train_loss``,
``train_seconds``, ``epoch``, ``total_epochs``, ``stage``, ``prediction_epoch`` (the epochs
trained so far in stages on predictions: 0 while only intermediate layers have learnt, the
clock early stopping judges by), ``resumed_from_epoch``; after
training, when the student learnt from intermediate layers, ``cka_diagonal`` and
``relation_*`` (see :func:`structure_analysis`).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_search.engine import analysis
from kd_search.engine.checkpoint import ResumePosition, load_checkpoint, save_checkpoint
from kd_search.engine.data import batches
from kd_search.engine.evaluation import evaluate
from kd_search.engine.hyperparameters import (
    may_use_attention_scores,
    may_use_minilm,
    uses_intermediate_layers,
    with_overrides,
)
from kd_search.engine.losses.structure import masked_mean
from kd_search.engine.models import (
    StudentMemory,
    build_student,
    load_classifier,
    use_attention_scores,
    width_projection,
)
from kd_search.engine.progress import ProgressCallback
from kd_search.engine.setup import TrialSetup, prepare, resolve_device  # noqa: F401 (re-exported for callers)
from kd_search.engine.setup import cache_root as _cache_root
from kd_search.engine.spec import Study
from kd_search.engine.step import StagePlan, plan_stages, train_epoch
from kd_search.engine.structure_catalog import MEMORY_LOSSES, MINILM_LOSSES
from kd_search.engine.teacher import evaluate_classifier
from kd_search.engine.teacher_cache import OnTheFlyTeacher, TeacherLayers, cache_key, cached_teacher
from kd_search.engine.teacher_memory import teacher_memory
from kd_search.engine.timing import PhaseTimer

Report = Callable[[dict[str, Any], str | None], None]
# Training inputs the layer-similarity analysis (CKA per layer pair) looks at.
CKA_SAMPLE = 256


@dataclass
class TrialResult:
    """The last epoch's metrics (with ``train_seconds``), the hyperparameters and the student.

    ``outputs`` holds the per-example probabilities behind sigma (teacher, student and
    labels on the confidence split), for the confidence figure, and after a structure
    analysis its CKA matrix and relation differences. ``timings`` holds the wall seconds
    of the trial's phases (see :func:`run_trial`).
    """

    metrics: dict[str, Any]
    params: dict[str, float | str]
    student: Any
    tokenizer: Any
    outputs: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)


def hyperparameters(setup: TrialSetup, overrides: dict[str, float | str] | None = None) -> dict[str, float | str]:
    """The study's defaults with ``overrides`` applied (see
    :func:`kd_search.engine.hyperparameters.with_overrides`).

    Example:
        >>> hyperparameters(setup, {"alpha": "0.3", "prediction_loss": "kl"})["alpha"]  # doctest: +SKIP
        0.3
    """
    return with_overrides(setup.study, len(setup.pairs), overrides)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def teacher_layers(setup: TrialSetup, params: dict[str, float | str] | None = None) -> TeacherLayers:
    """The teacher outputs besides logits that the study's losses may read: the embeddings
    and mapped layers' hidden states, their attention scores (TinyBERT), and the last
    mapped layer's scores and value vectors (MiniLM).

    Every trial of a study reads the same set (one cache entry); ``params`` that switch on
    more than the study file does (an override) add to it.

    Example:
        >>> teacher_layers(setup)  # doctest: +SKIP
        TeacherLayers(hidden=(0, 2, 4, 6), scores=(2, 4, 6), values=())
    """
    study = setup.study
    if not (uses_intermediate_layers(study) or (params is not None and uses_intermediate_layers(study, params))):
        return TeacherLayers()
    mapped = tuple(t for _, t in setup.pairs)
    attention = may_use_attention_scores(study) or (params is not None and params["gamma"] > 0)
    minilm = may_use_minilm(study) or (params is not None and any(params[f"weight_{n}"] > 0 for n in MINILM_LOSSES))
    scores = set(mapped) if attention else set()
    if minilm:
        scores.add(mapped[-1])
    return TeacherLayers(hidden=(0, *mapped), scores=tuple(sorted(scores)), values=mapped[-1:] if minilm else ())


def teacher_outputs(setup: TrialSetup, layers: TeacherLayers, progress: ProgressCallback | None = None):
    """The teacher's outputs for training (cache or on-the-fly) and its train/eval logits.

    Fills the shared cache on first use.

    Example:
        >>> source, train_logits, eval_logits = teacher_outputs(setup, teacher_layers(setup))  # doctest: +SKIP
    """
    study = setup.study

    def load_teacher():
        return load_classifier(setup.teacher_path, setup.data.num_labels)

    if study.teacher.dropout or not study.distillation.cache_teacher:
        teacher = load_teacher()
        source = OnTheFlyTeacher(teacher, layers, setup.device, dropout=study.teacher.dropout)
        train_logits = evaluate_classifier(teacher, setup.data.train, study.distillation.eval_batch_size, setup.device)
        eval_logits = evaluate_classifier(teacher, setup.data.eval, study.distillation.eval_batch_size, setup.device)
        return source, train_logits, eval_logits
    cache_root = _cache_root(setup.study, setup.workdir)
    key = cache_key(setup.teacher_id, setup.data.fingerprint, layers)
    cache = cached_teacher(cache_root, key, load_teacher, setup.data, layers, study.distillation.eval_batch_size,
                           setup.device, progress)
    return cache, cache.logits("train"), cache.logits("eval")


def fsd_teacher_memory(setup: TrialSetup, teacher) -> torch.Tensor:
    """FSD's teacher memory: k-means over the teacher's mean-pooled last mapped layer on
    the whole training set, computed once and cached beside the teacher outputs.

    Example:
        >>> fsd_teacher_memory(setup, teacher).shape  # doctest: +SKIP
        torch.Size([100, 384])
    """
    k = setup.study.distillation.fsd_memory_size
    layer = setup.pairs[-1][1]
    name = f"{setup.teacher_id[:16]}-{setup.data.fingerprint[:16]}-layer{layer}-k{k}-seed{setup.study.seed}"

    def pooled_features() -> torch.Tensor:
        rows = []
        with torch.inference_mode():
            for ids, batch in batches(setup.data.train, setup.study.distillation.eval_batch_size, shuffle=False):
                target = teacher.batch(ids, batch, torch.device("cpu"), with_intermediate=True)
                rows.append(masked_mean(target.hidden[-1].float(), batch["attention_mask"]))
        return torch.cat(rows)

    path = _cache_root(setup.study, setup.workdir) / "fsd-memory" / f"{name}.safetensors"
    return teacher_memory(path, pooled_features, k, seed=setup.study.seed)


def structure_analysis(setup: TrialSetup, student, teacher=None) -> tuple[np.ndarray, dict[str, float]]:
    """How the student arranges its representations against the teacher, on training inputs:
    the CKA matrix of the student's [embeddings, mapped layers] against the teacher's, and
    FSD's relation differences (``relation_*``) at the last mapped layer.

    ``teacher`` is the trial's teacher outputs when they hold the mapped layers; without
    it they are read (or computed once) from the cache.

    Example:
        >>> matrix, relations = structure_analysis(setup, result.student)  # doctest: +SKIP
        >>> matrix.shape, sorted(relations)[0]  # doctest: +SKIP
        ((4, 4), 'relation_inter_cosine')
    """
    if teacher is None:
        teacher = teacher_outputs(setup, TeacherLayers(hidden=(0, *(t for _, t in setup.pairs))))[0]
    sample = setup.data.train.subset(torch.arange(min(CKA_SAMPLE, len(setup.data.train))))
    student_layers = [0] + [s for s, _ in setup.pairs]
    student_tokens: list[list[torch.Tensor]] = [[] for _ in student_layers]
    teacher_tokens: list[list[torch.Tensor]] = [[] for _ in student_layers]
    relations: list[dict[str, float]] = []
    student.eval()
    with torch.inference_mode():
        for rows, batch in batches(sample, setup.study.distillation.eval_batch_size, shuffle=False):
            batch = {k: v.to(setup.device) for k, v in batch.items()}
            target = teacher.batch(rows, batch, setup.device, with_intermediate=True)
            hidden = student(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                             attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].cpu()
            for i, layer in enumerate(student_layers):
                student_tokens[i].append(analysis.token_rows(hidden[layer].float().cpu(), mask))
                teacher_tokens[i].append(analysis.token_rows(target.hidden[i].float().cpu(), mask))
            relations.append(analysis.relation_differences(hidden[student_layers[-1]].float().cpu(),
                                                           target.hidden[-1].float().cpu(), mask))
    matrix = analysis.layer_cka_matrix([torch.cat(t) for t in student_tokens], [torch.cat(t) for t in teacher_tokens])
    return matrix, {f"relation_{name}": float(np.mean([r[name] for r in relations])) for name in relations[0]}


def _student_and_plans(setup: TrialSetup, params: dict[str, float | str],
                       teacher) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], list[StagePlan]]:
    """The student, its training-only helpers (checkpointed with it) and the stage plans.

    The order of construction is the order of draws from the seeded generators: the
    teacher's head, the student, the width projection, then FSD's student memory.
    """
    base_teacher = load_classifier(setup.teacher_path, setup.data.num_labels, setup.data.label_names)
    student = build_student(setup.study.student, base_teacher, setup.data.num_labels).to(setup.device)
    projection = width_projection(student, base_teacher)
    del base_teacher
    if projection is not None:
        projection.to(setup.device)
    memory = memories = None
    if any(params[f"weight_{name}"] > 0 for name in MEMORY_LOSSES) and uses_intermediate_layers(setup.study, params):
        teacher_items = fsd_teacher_memory(setup, teacher).to(setup.device)
        memory = StudentMemory(len(teacher_items), student.config.hidden_size).to(setup.device)
        memories = (memory.items, teacher_items)
    helpers = {name: module for name, module in (("projection", projection), ("fsd_memory", memory))
               if module is not None}
    return student, helpers, plan_stages(setup.study, params, setup.pairs, projection, memories)


@dataclass
class _Training:
    """What every epoch of one trial uses.

    ``study`` is the study being trained: its training seed may differ from that of the
    study ``setup`` was prepared for (a comparison's seeds share one setup's teacher and
    data). ``teacher`` is what training reads the teacher's outputs from (the cache, or
    the teacher itself), ``teacher_logits`` its logits on the train and eval splits.
    """

    study: Study
    setup: TrialSetup
    params: dict[str, float | str]
    teacher: Any
    teacher_logits: tuple[torch.Tensor, torch.Tensor]
    student: torch.nn.Module
    helpers: dict[str, torch.nn.Module]
    plans: list[StagePlan]
    timer: PhaseTimer
    progress: ProgressCallback | None

    @property
    def total_epochs(self) -> int:
        """The epochs of all stages."""
        return sum(plan.epochs for plan in self.plans)


def _start_training(study: Study, setup: TrialSetup, params: dict[str, float | str], resume_from: str | Path | None,
                    progress: ProgressCallback | None, timer: PhaseTimer) -> tuple[_Training, ResumePosition]:
    """Seed the generators, read the teacher's outputs and build the student and its stage
    plans, from the checkpoint ``resume_from`` when given; where training starts."""
    _seed_everything(study.training_seed)
    with timer.phase("teacher_outputs"):
        teacher, teacher_train, teacher_eval = teacher_outputs(setup, teacher_layers(setup, params), progress)
    with timer.phase("student_build"):
        student, helpers, plans = _student_and_plans(setup, params, teacher)
        position = ResumePosition() if resume_from is None else load_checkpoint(Path(resume_from), student, helpers)
    training = _Training(study=study, setup=setup, params=params, teacher=teacher,
                         teacher_logits=(teacher_train, teacher_eval), student=student, helpers=helpers,
                         plans=plans, timer=timer, progress=progress)
    return training, position


def _measure(training: _Training, plan: StagePlan | None = None,
             with_train_split: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    # Measured with SDPA attention; a stage's attention scores are switched back on after.
    use_attention_scores(training.student, False)
    measured = evaluate(training.setup, training.student, training.params, *training.teacher_logits,
                        with_train_split=with_train_split, timer=training.timer)
    use_attention_scores(training.student, plan is not None and plan.attention_scores)
    return measured


def _report_epoch(report: Report, metrics: dict[str, Any], training: _Training, position: ResumePosition) -> None:
    with tempfile.TemporaryDirectory(prefix="kd-search-ckpt-") as checkpoint_dir:
        with training.timer.phase("checkpoint"):
            save_checkpoint(Path(checkpoint_dir), training.student, training.helpers, position)
        with training.timer.phase("report"):
            report(dict(metrics), checkpoint_dir)


def _analyse_structure(setup: TrialSetup, student, teacher, learnt_from_layers: bool) -> dict[str, np.ndarray]:
    # The trial's teacher holds the mapped layers when the student learnt from them; else the cache.
    matrix, relations = structure_analysis(setup, student, teacher if learnt_from_layers else None)
    return {"cka_matrix": matrix} | {name: np.array(value) for name, value in relations.items()}


def _prediction_epochs(plans: list[StagePlan]) -> int:
    return sum(plan.epochs for plan in plans if plan.prediction)


def _train_stages(training: _Training, position: ResumePosition, report: Report | None,
                  full_evaluation_every_epoch: bool) -> tuple[dict[str, Any], dict[str, np.ndarray], ResumePosition]:
    """Train the student through its stages from ``position``, measuring it and calling
    ``report`` after every epoch: the last epoch's metrics and outputs (empty when no
    epoch was left to train) and the position reached."""
    setup, student, plans, timer = training.setup, training.student, training.plans, training.timer
    dist, seed = training.study.distillation, training.study.training_seed
    total_epochs, resumed_from_epoch = training.total_epochs, position.global_epoch
    steps_per_epoch = -(-len(setup.data.train) // dist.batch_size)
    metrics: dict[str, Any] = {}
    outputs: dict[str, np.ndarray] = {}
    for stage, plan in enumerate(plans[position.stage:], start=position.stage):
        use_attention_scores(student, plan.attention_scores)
        first_epoch = position.epoch if stage == position.stage else 0
        optimization = plan.optimization(student, training.helpers, steps_per_epoch, epochs_done=first_epoch)
        for epoch in range(first_epoch, plan.epochs):
            started = time.perf_counter()
            train_loss = train_epoch(plan, student, training.teacher, setup.data.train, optimization,
                                     batch_size=dist.batch_size, shuffle_seed=seed * 1000 + position.global_epoch,
                                     epoch=epoch, device=setup.device, group_by_length=dist.group_by_length,
                                     progress=training.progress)
            seconds = time.perf_counter() - started
            timer.add("train", seconds)
            position = position.after_epoch(stage, epoch, plan.epochs, seconds)
            last_epoch = position.global_epoch == total_epochs
            metrics, outputs = _measure(training, plan, with_train_split=full_evaluation_every_epoch or last_epoch)
            metrics |= {"epoch": position.global_epoch, "total_epochs": total_epochs, "stage": plan.name,
                        "prediction_epoch": _prediction_epochs(plans[:stage]) + (epoch + 1 if plan.prediction else 0),
                        "train_loss": train_loss, "train_seconds": position.train_seconds,
                        "resumed_from_epoch": resumed_from_epoch}
            if report is not None:
                _report_epoch(report, metrics, training, position)
    return metrics, outputs, position


def _measure_trained_checkpoint(training: _Training, position: ResumePosition,
                                report: Report | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Measure a student resumed from a checkpoint taken after its last epoch, and report
    it without a checkpoint: the search waits for this result (its driver died before
    reading it)."""
    plans = training.plans
    metrics, outputs = _measure(training)
    # No epoch was left to train, so the position is still the checkpoint's.
    metrics |= {"epoch": position.global_epoch, "total_epochs": training.total_epochs,
                "stage": plans[-1].name if plans else "", "prediction_epoch": _prediction_epochs(plans),
                "train_seconds": position.train_seconds,
                "resumed_from_epoch": position.global_epoch}
    if report is not None:
        report(dict(metrics), None)
    return metrics, outputs


def run_trial(study: Study, params: dict[str, float | str] | None = None, report: Report | None = None, *,
              workdir: str | Path = "runs", setup: TrialSetup | None = None, resume_from: str | Path | None = None,
              progress: ProgressCallback | None = None, analyse_structure: bool = False,
              full_evaluation_every_epoch: bool = True) -> TrialResult:
    """Distil one student with ``params`` (flat names, study defaults for the rest).

    After every epoch, ``report(metrics, checkpoint_dir)`` receives the metrics and a
    directory holding the student so far (deleted after the call returns). Without
    ``full_evaluation_every_epoch``, epochs before the last are measured on the eval split
    only (see :func:`~kd_search.engine.evaluation.evaluate`): for a caller that reads
    sigma from the last epoch alone; the last epoch is always measured in full. With
    ``resume_from`` (such a directory), training continues after its epoch. The
    structure analysis runs when a stage read intermediate layers, or with
    ``analyse_structure``. Returns a :class:`TrialResult`; its ``timings`` are the wall
    seconds of ``setup_data``/``setup_teacher`` (when this call prepared the setup),
    ``teacher_outputs``, ``student_build``, ``train``, the evaluation's phases (see
    :func:`~kd_search.engine.evaluation.evaluate`), ``checkpoint``, ``report`` and
    ``structure_analysis``.

    Example:
        >>> result = run_trial(load_study("smoke"), {"alpha": 0.2})  # doctest: +SKIP
        >>> result.metrics["phi_cnf"], result.params["alpha"]  # doctest: +SKIP
        (True, 0.2)
    """
    timer = PhaseTimer()
    if setup is None:
        setup = prepare(study, workdir, progress)
        timer = PhaseTimer(setup.seconds)
    params = hyperparameters(setup, params)
    training, position = _start_training(study, setup, params, resume_from, progress, timer)
    metrics, outputs, position = _train_stages(training, position, report, full_evaluation_every_epoch)
    use_attention_scores(training.student, False)
    if not metrics:  # resumed from a checkpoint taken after the last epoch: measure it
        metrics, outputs = _measure_trained_checkpoint(training, position, report)
    learnt_from_layers = any(plan.intermediate for plan in training.plans)
    if learnt_from_layers or analyse_structure:
        with timer.phase("structure_analysis"):
            outputs |= _analyse_structure(setup, training.student, training.teacher, learnt_from_layers)
        metrics |= analysis.structure_metrics(outputs)
    metrics["train_seconds"] = position.train_seconds
    return TrialResult(metrics=metrics, params=params, student=training.student.eval(), tokenizer=setup.tokenizer,
                       outputs=outputs, timings=timer.seconds)
