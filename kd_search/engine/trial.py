"""One distillation trial: train a student with the TinyBERT objective, measure it each epoch.

``run_trial(study, params, report)`` is what the search repeats. It reads the teacher's
outputs from the shared cache (or runs the teacher in every step when the study asks
for teacher dropout), trains the student through the study's stages, and after every
epoch evaluates the task metric on eval and the confidence metrics (sigma, kappa,
phi_cnf, ECE, teacher agreement) on both splits, then calls
``report(metrics, checkpoint_dir)``.

Metric names: ``accuracy``/``f1``/``mcc`` (task metric on eval), ``teacher_accuracy``,
``sigma``/``mean_delta``/``n_both``/``kappa``/``phi_cnf`` on the study's confidence split
(train by default, as in the paper), ``sigma_train``/``sigma_eval``, ``ece`` (student on
eval), ``ece_teacher``, ``classwise_ece``, ``agreement`` (eval) and ``agreement_train``,
``train_loss``, ``train_seconds``, ``epoch``, ``stage``.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from kd_search.engine import analysis, confidence
from kd_search.engine.data import TaskData, batches, load_task
from kd_search.engine.losses import (
    MINILM_LOSSES,
    STRUCTURE_LOSSES,
    SelfAttentionPair,
    intermediate_objective,
    kl_distillation,
    layer_pairs,
    prediction_objective,
    soft_cross_entropy,
    structure_objective,
)
from kd_search.engine.losses.structure import masked_mean
from kd_search.engine.models import (
    StudentMemory,
    build_student,
    capture_values,
    load_classifier,
    load_tokenizer,
    resolve_model,
    use_attention_scores,
    width_projection,
)
from kd_search.engine.optim import linear_warmup_schedule
from kd_search.engine.spec import Study
from kd_search.engine.teacher import evaluate_classifier, prepare_teacher, teacher_key
from kd_search.engine.teacher_cache import OnTheFlyTeacher, TeacherLayers, cache_key, cached_teacher
from kd_search.engine.teacher_memory import teacher_memory
from kd_search.errors import NonFiniteLossError, StudyFileError

Report = Callable[[dict[str, Any], str | None], None]
ProgressCallback = Callable[[str, int, int], None]
# On a GPU the finiteness flag is read every this many steps (reading it syncs the host).
NONFINITE_CHECK_EVERY_CUDA = 50
# Training inputs the layer-similarity analysis (CKA per layer pair) looks at.
CKA_SAMPLE = 256
# Stages that train on the teacher's intermediate layers (the others on its logits only).
INTERMEDIATE_STAGES = ("intermediate", "joint")


@dataclass
class TrialResult:
    """The last epoch's metrics (with ``params`` and ``train_seconds``) and the student.

    ``outputs`` holds the per-example probabilities behind sigma (teacher, student and
    labels on the confidence split), for the confidence figure.
    """

    metrics: dict[str, Any]
    student: Any
    tokenizer: Any
    outputs: dict[str, np.ndarray]


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
    """Load data, prepare (fine-tune once) the teacher and fix the layer map.

    Example:
        >>> setup = prepare(load_study("studies/smoke.yaml"), "runs/smoke")  # doctest: +SKIP
    """
    device = resolve_device(study.device)
    tokenizer = load_tokenizer(study.teacher.model)
    data = load_task(study.task, tokenizer)
    teacher_data = data
    fine_tune = study.teacher.fine_tune
    if fine_tune and fine_tune.train_limit and fine_tune.train_limit > len(data.train):
        # The teacher may learn from more examples than the student distils on (a superset:
        # both are heads of the same seeded shuffle).
        teacher_data = load_task(study.task.model_copy(update={"train_limit": fine_tune.train_limit}), tokenizer)
    teacher_path, info = prepare_teacher(study, teacher_data, workdir, device, progress)
    teacher_config = AutoConfig.from_pretrained(resolve_model(teacher_path))
    student_layers = _student_depth(study, teacher_config)
    layer_map = study.distillation.layer_map
    try:
        pairs = layer_pairs(layer_map.kind, student_layers, teacher_config.num_hidden_layers, layer_map.pairs)
    except ValueError as error:
        raise StudyFileError(f"distillation.layer_map: {error}") from None
    return TrialSetup(study, data, tokenizer, teacher_path, info, teacher_key(study, teacher_data), pairs, device,
                      Path(workdir))


def _student_depth(study: Study, teacher_config) -> int:
    spec = study.student
    if spec.teacher_layers is not None:
        return len(spec.teacher_layers)
    if spec.config is not None:
        return spec.config.layers
    return AutoConfig.from_pretrained(resolve_model(spec.model)).num_hidden_layers


def hyperparameters(setup: TrialSetup, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The study's defaults with ``overrides`` applied; unknown names are an error.

    Example:
        >>> hyperparameters(setup, {"alpha": 0.3})["alpha"]  # doctest: +SKIP
        0.3
    """
    params = setup.study.default_hyperparameters(len(setup.pairs))
    for name, value in (overrides or {}).items():
        if name not in params:
            raise StudyFileError(f"unknown hyperparameter {name!r} (known: {', '.join(sorted(params))})")
        params[name] = float(value)
    if not 0 <= params["alpha"] < 1:
        raise StudyFileError(f"alpha must be in [0, 1), got {params['alpha']}")
    if params["temperature"] <= 0:
        raise StudyFileError(f"temperature must be positive, got {params['temperature']}")
    return params


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def uses_intermediate_layers(study: Study, params: dict[str, float] | None = None) -> bool:
    """Whether a trial with ``params`` trains a stage that reads the teacher's intermediate
    layers; without ``params``, whether any trial of the study may.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]},
        ...                      "distillation": {"stages": [{"name": "prediction"}]}})
        >>> uses_intermediate_layers(study)
        False
    """
    for stage in study.distillation.stages:
        if stage.name not in INTERMEDIATE_STAGES:
            continue
        if params is None and (stage.epochs > 0 or f"epochs_{stage.name}" in study.search.space):
            return True
        if params is not None and int(params[f"epochs_{stage.name}"]) > 0:
            return True
    return False


def teacher_layers(setup: TrialSetup, params: dict[str, float] | None = None) -> TeacherLayers:
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
    attention = _uses_attention(setup) or (params is not None and params["gamma"] > 0)
    minilm = _uses_minilm(setup) or (params is not None and any(params[f"weight_{n}"] > 0 for n in MINILM_LOSSES))
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
    cache_root = _cache_root(setup)
    key = cache_key(setup.teacher_id, setup.data.fingerprint, layers)
    cache = cached_teacher(cache_root, key, load_teacher, setup.data, layers, study.distillation.eval_batch_size,
                           setup.device, progress)
    return cache, cache.logits("train"), cache.logits("eval")


def _cache_root(setup: TrialSetup) -> Path:
    return Path(setup.study.distillation.cache_dir or setup.workdir / "cache").expanduser()


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

    return teacher_memory(_cache_root(setup) / "fsd-memory" / f"{name}.safetensors", pooled_features, k,
                          seed=setup.study.seed)


def _uses_attention(setup: TrialSetup) -> bool:
    # Attention scores are distilled unless gamma is fixed at 0 and not searched.
    return setup.study.distillation.gamma > 0 or "gamma" in setup.study.search.space


def _uses_minilm(setup: TrialSetup) -> bool:
    # MiniLM's losses are on unless both weights are fixed at 0 and not searched.
    weights = setup.study.distillation.structure
    return any(getattr(weights, name) > 0 or f"weight_{name}" in setup.study.search.space for name in MINILM_LOSSES)


def _evaluate(setup: TrialSetup, student, params: dict[str, float], teacher_train: torch.Tensor,
              teacher_eval: torch.Tensor) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    study, data = setup.study, setup.data
    batch_size = study.distillation.eval_batch_size
    student_train = evaluate_classifier(student, data.train, batch_size, setup.device)
    student_eval = evaluate_classifier(student, data.eval, batch_size, setup.device)
    num_classes = data.num_labels
    convention = study.objectives.confidence.convention
    metrics: dict[str, Any] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for split_name, split, t_logits, s_logits in (("train", data.train, teacher_train, student_train),
                                                  ("eval", data.eval, teacher_eval, student_eval)):
        t_probs, s_probs = confidence.softmax(t_logits), confidence.softmax(s_logits)
        try:
            delta = confidence.confidence_delta(t_probs, s_probs, split.labels, convention)
            sigma, mean_delta, n_both = float(np.std(delta)), float(delta.mean()), int(delta.size)
        except confidence.ConfidenceInputError:  # no example right for both: sigma undefined
            sigma, mean_delta, n_both = math.nan, math.nan, 0
        agreement = confidence.teacher_agreement(t_probs.argmax(1), s_probs.argmax(1), num_classes)
        outputs[split_name] = {"teacher_probs": t_probs, "student_probs": s_probs, "labels": split.labels}
        metrics |= {
            f"sigma_{split_name}": sigma,
            f"mean_delta_{split_name}": mean_delta,
            f"n_both_{split_name}": n_both,
            f"ece_{split_name}": confidence.expected_calibration_error(s_probs, split.labels),
            f"agreement_{split_name}": agreement.agreement,
            f"agreement_f1_{split_name}": agreement.f1,
        }
    eval_probs = confidence.softmax(student_eval)
    eval_pred = eval_probs.argmax(1)
    metrics["accuracy"] = confidence.accuracy(eval_pred, data.eval.labels)
    metrics[study.objectives.task_metric] = confidence.task_metric(
        study.objectives.task_metric, eval_pred, data.eval.labels, num_classes)
    metrics["teacher_accuracy"] = confidence.accuracy(teacher_eval.argmax(1), data.eval.labels)
    metrics["ece"] = metrics["ece_eval"]
    metrics["ece_teacher"] = confidence.expected_calibration_error(confidence.softmax(teacher_eval), data.eval.labels)
    metrics["classwise_ece"] = confidence.classwise_calibration_error(eval_probs, data.eval.labels)
    metrics["agreement"] = metrics["agreement_eval"]
    split = study.objectives.confidence.split
    metrics |= {"sigma": metrics[f"sigma_{split}"], "mean_delta": metrics[f"mean_delta_{split}"],
                "n_both": metrics[f"n_both_{split}"]}
    # beta_X of the paper's bound: the prediction-distillation loss summed over X_train.
    distill = kl_distillation if study.distillation.prediction_loss == "kl" else soft_cross_entropy
    prediction_loss_sum = float(distill(student_train, teacher_train, params["temperature"])) * len(data.train)
    metrics["prediction_loss_sum"] = prediction_loss_sum
    kappa = study.objectives.confidence.fixed_kappa
    if kappa is None:
        kappa = confidence.kappa_bound(study.objectives.confidence.bound_gamma, prediction_loss_sum,
                                       len(data.train), params["alpha"])
    metrics["kappa"] = kappa
    metrics["phi_cnf"] = bool(not math.isnan(metrics["sigma"]) and confidence.phi_cnf(metrics["sigma"], kappa))
    return metrics, outputs[split]


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


def _save_checkpoint(directory: Path, student, helpers: dict[str, torch.nn.Module], position: dict) -> None:
    """The student, its training-only helpers (width projection, FSD memory) and where training is."""
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(directory / "student.safetensors"))
    for name, module in helpers.items():
        save_file(module.state_dict(), str(directory / f"{name}.safetensors"))
    (directory / "position.json").write_text(json.dumps(position))  # last: marks the checkpoint complete


def _load_checkpoint(directory: Path, student, helpers: dict[str, torch.nn.Module]) -> dict:
    student.load_state_dict(load_file(str(directory / "student.safetensors")))
    for name, module in helpers.items():
        if (directory / f"{name}.safetensors").is_file():
            module.load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    return json.loads((directory / "position.json").read_text())


def run_trial(study: Study, params: dict[str, float] | None = None, report: Report | None = None, *,
              workdir: str | Path = "runs", setup: TrialSetup | None = None, resume_from: str | Path | None = None,
              progress: ProgressCallback | None = None) -> TrialResult:
    """Distil one student with ``params`` (flat names, study defaults for the rest).

    After every epoch, ``report(metrics, checkpoint_dir)`` receives the metrics and a
    directory holding the student so far (deleted after the call returns). With
    ``resume_from`` (such a directory), training continues after its epoch.
    Returns a :class:`TrialResult`: the last epoch's metrics (plus ``train_seconds`` and
    ``params``) and the trained student.

    Example:
        >>> result = run_trial(load_study("studies/smoke.yaml"), {"alpha": 0.2})  # doctest: +SKIP
        >>> result.metrics["phi_cnf"]  # doctest: +SKIP
        True
    """
    setup = setup or prepare(study, workdir, progress)
    params = hyperparameters(setup, params)
    dist = study.distillation
    seed = study.seed if dist.seed is None else dist.seed
    _seed_everything(seed)
    device = setup.device
    stages = [s.name for s in dist.stages if int(params[f"epochs_{s.name}"]) > 0]
    needs_intermediate = uses_intermediate_layers(study, params)
    teacher, teacher_train, teacher_eval = teacher_outputs(setup, teacher_layers(setup, params), progress)
    base_teacher = load_classifier(setup.teacher_path, setup.data.num_labels)
    student = build_student(study.student, base_teacher, setup.data.num_labels).to(device)
    projection = width_projection(student, base_teacher)
    del base_teacher
    if projection is not None:
        projection.to(device)
    student_layers = [s for s, _ in setup.pairs]
    layer_weights = [params[f"layer_weight_{m}"] for m in range(1, len(setup.pairs) + 1)]
    structure_weights = {name: params[f"weight_{name}"] for name in STRUCTURE_LOSSES}
    tinybert_attention = params["gamma"] > 0
    minilm = any(structure_weights[name] > 0 for name in MINILM_LOSSES)
    student_last, teacher_last = setup.pairs[-1]
    memory = memories = None
    if structure_weights["fsd_global"] > 0 and needs_intermediate:
        teacher_items = fsd_teacher_memory(setup, teacher).to(device)
        memory = StudentMemory(len(teacher_items), student.config.hidden_size).to(device)
        memories = (memory.items, teacher_items)
    # Training-only modules, learned in stages with intermediate layers and checkpointed.
    helpers = {name: module for name, module in (("projection", projection), ("fsd_memory", memory)) if module}
    distill_loss = kl_distillation if dist.prediction_loss == "kl" else soft_cross_entropy
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    check_every = NONFINITE_CHECK_EVERY_CUDA if device.type == "cuda" else 1

    position = {"stage": 0, "epoch": 0, "global_epoch": 0, "train_seconds": 0.0}
    if resume_from is not None:
        position = _load_checkpoint(Path(resume_from), student, helpers)
    metrics: dict[str, Any] = {}
    outputs: dict[str, np.ndarray] = {}
    total_epochs = sum(int(params[f"epochs_{name}"]) for name in stages)
    resumed_from_epoch = position["global_epoch"]
    train_seconds = position["train_seconds"]
    global_epoch = position["global_epoch"]

    for stage_index, stage in enumerate(stages):
        if stage_index < position["stage"]:
            continue
        epochs = int(params[f"epochs_{stage}"])
        intermediate = stage in INTERMEDIATE_STAGES
        prediction = stage in ("prediction", "joint")
        use_scores = intermediate and (tinybert_attention or minilm)
        use_attention_scores(student, use_scores)
        value_layers = [student_last] if intermediate and minilm else []
        trainable = list(student.parameters()) + [p for module in helpers.values() if intermediate
                                                   for p in module.parameters()]
        optimizer = torch.optim.AdamW(trainable, lr=params[f"learning_rate_{stage}"], weight_decay=params["weight_decay"])
        steps_per_epoch = -(-len(setup.data.train) // dist.batch_size)
        schedule = linear_warmup_schedule(optimizer, epochs * steps_per_epoch)
        first_epoch = position["epoch"] if stage_index == position["stage"] else 0
        for _ in range(first_epoch * steps_per_epoch):  # resume: the schedule where it was
            schedule.step()
        for epoch in range(first_epoch, epochs):
            student.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            nonfinite = torch.zeros((), dtype=torch.bool, device=device)
            for step, (rows, batch) in enumerate(batches(setup.data.train, dist.batch_size, shuffle=True,
                                                         seed=seed * 1000 + global_epoch)):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                target = teacher.batch(rows, batch, device, with_intermediate=intermediate)
                with torch.autocast(**autocast), capture_values(student, value_layers) as student_values:
                    out = student(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                  attention_mask=batch["attention_mask"], output_hidden_states=intermediate,
                                  output_attentions=use_scores)
                    loss = torch.zeros((), device=device)
                    if intermediate:
                        student_hidden = [out.hidden_states[0]] + [out.hidden_states[m] for m in student_layers]
                        loss = loss + intermediate_objective(
                            student_hidden,
                            target.hidden,
                            [out.attentions[m - 1] for m in student_layers] if tinybert_attention else None,
                            [target.scores[t] for _, t in setup.pairs] if tinybert_attention else None,
                            layer_weights, params["beta"], params["gamma"], projection, projection)
                        attention = SelfAttentionPair(out.attentions[student_last - 1], target.scores[teacher_last],
                                                      student_values[student_last],
                                                      target.values[teacher_last]) if minilm else None
                        loss = loss + structure_objective(student_hidden, target.hidden, batch["attention_mask"],
                                                          structure_weights, projection, memories, attention)
                    if prediction:
                        loss = loss + prediction_objective(out.logits, target.logits, batch["labels"],
                                                           params["alpha"], params["temperature"], distill_loss)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                nonfinite |= ~torch.isfinite(loss.detach())
                if (step + 1) % check_every == 0 and bool(nonfinite):
                    raise NonFiniteLossError(f"non-finite loss in stage {stage!r}, epoch {epoch + 1}, step {step + 1}")
                if progress:
                    progress(f"{stage} epoch {epoch + 1}/{epochs}", step + 1, steps_per_epoch)
            if bool(nonfinite) or not math.isfinite(float(loss_sum)):
                raise NonFiniteLossError(f"non-finite loss in stage {stage!r}, epoch {epoch + 1}")
            train_seconds += time.perf_counter() - started
            global_epoch += 1
            use_attention_scores(student, False)
            metrics, outputs = _evaluate(setup, student, params, teacher_train, teacher_eval)
            use_attention_scores(student, use_scores)
            metrics |= {"epoch": global_epoch, "total_epochs": total_epochs, "stage": stage,
                        "train_loss": float(loss_sum) / steps_per_epoch, "train_seconds": train_seconds,
                        "resumed_from_epoch": resumed_from_epoch}
            if report is not None:
                done = {"stage": stage_index + (epoch + 1 == epochs), "epoch": 0 if epoch + 1 == epochs else epoch + 1,
                        "global_epoch": global_epoch, "train_seconds": train_seconds}
                with tempfile.TemporaryDirectory(prefix="kd-search-ckpt-") as checkpoint_dir:
                    _save_checkpoint(Path(checkpoint_dir), student, helpers, done)
                    report(dict(metrics), checkpoint_dir)
    use_attention_scores(student, False)
    if not metrics:  # resumed from a checkpoint taken after the last epoch: measure it
        metrics, outputs = _evaluate(setup, student, params, teacher_train, teacher_eval)
        metrics |= {"epoch": global_epoch, "total_epochs": total_epochs, "stage": stages[-1] if stages else "",
                    "train_seconds": train_seconds, "resumed_from_epoch": resumed_from_epoch}
        if report is not None:  # the search waits for this result (its driver died before reading it)
            report(dict(metrics), None)
    if needs_intermediate:  # the teacher's mapped layers are at hand: compare the structures
        outputs["cka_matrix"], relations = structure_analysis(setup, student, teacher)
        metrics["cka_diagonal"] = analysis.cka_diagonal(outputs["cka_matrix"])
        metrics |= relations
        outputs |= {name: np.array(value) for name, value in relations.items()}  # for the search's driver
    metrics["params"] = params
    metrics["train_seconds"] = train_seconds
    return TrialResult(metrics=metrics, student=student.eval(), tokenizer=setup.tokenizer, outputs=outputs)
