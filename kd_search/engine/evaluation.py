"""A student measured against its teacher after an epoch: the task metric on eval and the
confidence metrics on both splits.

Metric names: ``accuracy``/``f1``/``mcc`` (task metric on eval), ``teacher_accuracy``,
``sigma``/``mean_delta``/``n_both``/``kappa``/``phi_cnf`` on the study's confidence split
(train by default, as in the paper), ``sigma_train``/``sigma_eval`` (and the same per
split for ``mean_delta``, ``n_both``, ``ece``, ``agreement``, ``agreement_f1``), ``ece``
(student on eval), ``ece_teacher``, ``classwise_ece``, ``agreement`` (eval) and
``prediction_loss_sum`` (beta_X of the paper's bound); the trust measures of
:func:`~kd_search.engine.measures.trust_metrics` on eval (``flip_rate``,
``flip_rate_teacher_correct``, ``kl_teacher_student``, ``brier``, ``brier_teacher``, ``nll``,
``nll_teacher``) and, on tasks with more than two classes, ``sigma_class_<k>``: sigma over
the confidence split's examples of class k.

Uncertainty: ``sigma_ci_low``/``sigma_ci_high`` and ``sigma_se`` (the bootstrap standard
error of sigma, which :func:`~kd_search.engine.measures.certify` combines over seeds) on
the confidence split, ``<task metric>_ci_low``/``_ci_high`` on eval: percentile-bootstrap
intervals at the study's ``objectives.confidence.level`` over ``resamples`` resamples of
the split's examples, seeded by the study's seed (so every trial of a study draws the same
resamples). NaN where sigma has no interval: no both-correct example.

A partial evaluation (``with_train_split=False``) skips the student's pass over the
training split and measures only what the eval split gives; a search whose scheduler
reads only the last epoch asks for it on the other epochs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kd_search.engine import measures
from kd_search.engine.losses import prediction_distillation
from kd_search.engine.teacher import evaluate_classifier
from kd_search.engine.timing import PhaseTimer
from kd_search.errors import ConfidenceInputError

if TYPE_CHECKING:
    from kd_search.engine.setup import TrialSetup
    from kd_search.engine.spec import Study


def evaluate(setup: TrialSetup, student, params: dict[str, float], teacher_train: torch.Tensor,
             teacher_eval: torch.Tensor, *, with_train_split: bool = True,
             timer: PhaseTimer | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The student's metrics after an epoch (see the module docstring) and the per-example
    probabilities behind sigma on the confidence split (``teacher_probs``, ``student_probs``,
    ``labels``), with the eval split's as ``eval_teacher_probs``, ``eval_student_probs`` and
    ``eval_labels`` when the confidence split is train.

    Without ``with_train_split`` the student does not run on the training split and only
    the eval split's metrics are measured (task metric and its interval, ``teacher_accuracy``,
    ``ece``, ``ece_teacher``, ``classwise_ece``, ``agreement``, the trust measures and the
    ``_eval`` ones): no sigma, kappa or phi_cnf, no probabilities. ``timer`` counts the phases
    ``eval_inference_train``, ``eval_inference_eval``, ``eval_metrics`` and
    ``eval_intervals`` (the bootstrap).

    Example:
        >>> metrics, outputs = evaluate(setup, student, params, teacher_train, teacher_eval)  # doctest: +SKIP
        >>> sorted(outputs)  # doctest: +SKIP
        ['eval_labels', 'eval_student_probs', 'eval_teacher_probs', 'labels', 'student_probs', 'teacher_probs']
    """
    study, data = setup.study, setup.data
    batch_size = study.distillation.eval_batch_size
    timer = timer or PhaseTimer()
    student_train = None
    if with_train_split:
        with timer.phase("eval_inference_train"):
            student_train = evaluate_classifier(student, data.train, batch_size, setup.device)
    with timer.phase("eval_inference_eval"):
        student_eval = evaluate_classifier(student, data.eval, batch_size, setup.device)
    logits = {"train": (teacher_train, student_train), "eval": (teacher_eval, student_eval)}
    with timer.phase("eval_metrics"):
        metrics, outputs = _split_metrics(study, data, logits if with_train_split else {"eval": logits["eval"]})
        metrics |= _eval_metrics(study, data, metrics, student_eval, teacher_eval)
        if with_train_split:
            metrics |= _confidence_metrics(study, data, params, metrics, student_train, teacher_train)
            metrics |= class_sigmas(outputs[study.objectives.confidence.split], study.objectives.confidence.convention)
    split = study.objectives.confidence.split
    eval_predictions = measures.softmax(student_eval).argmax(1)
    with timer.phase("eval_intervals"):
        if with_train_split:
            metrics |= interval_metrics(study, outputs[split], eval_predictions, data.eval.labels, data.num_labels)
        else:
            metrics |= task_metric_interval(study, eval_predictions, data.eval.labels, data.num_labels)
    if not with_train_split:
        return metrics, {}
    # The eval split's probabilities ride along for the report's reliability diagram.
    extra = {f"eval_{name}": values for name, values in outputs["eval"].items()} if split != "eval" else {}
    return metrics, outputs[split] | extra


def _split_metrics(study: Study, data, logits: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """Sigma, ECE and agreement on each split of ``logits`` (split -> teacher's, student's),
    and the probabilities of each split."""
    convention = study.objectives.confidence.convention
    metrics: dict[str, Any] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for split_name, (t_logits, s_logits) in logits.items():
        split = data.train if split_name == "train" else data.eval
        t_probs, s_probs = measures.softmax(t_logits), measures.softmax(s_logits)
        try:
            delta = measures.confidence_delta(t_probs, s_probs, split.labels, convention)
            sigma, mean_delta, n_both = measures.sigma(delta), float(delta.mean()), int(delta.size)
        except ConfidenceInputError:  # no example right for both: sigma undefined
            sigma, mean_delta, n_both = math.nan, math.nan, 0
        agreement = measures.teacher_agreement(t_probs.argmax(1), s_probs.argmax(1), data.num_labels)
        outputs[split_name] = {"teacher_probs": t_probs, "student_probs": s_probs, "labels": split.labels}
        metrics |= {
            f"sigma_{split_name}": sigma,
            f"mean_delta_{split_name}": mean_delta,
            f"n_both_{split_name}": n_both,
            f"ece_{split_name}": measures.expected_calibration_error(s_probs, split.labels),
            f"agreement_{split_name}": agreement.agreement,
            f"agreement_f1_{split_name}": agreement.f1,
        }
    return metrics, outputs


def _eval_metrics(study: Study, data, split_metrics: dict[str, Any], student_eval: torch.Tensor,
                  teacher_eval: torch.Tensor) -> dict[str, Any]:
    """The task metric, calibration and agreement on eval."""
    eval_probs = measures.softmax(student_eval)
    eval_pred = eval_probs.argmax(1)
    metrics: dict[str, Any] = {"accuracy": measures.accuracy(eval_pred, data.eval.labels)}
    metrics[study.objectives.task_metric] = measures.task_metric(
        study.objectives.task_metric, eval_pred, data.eval.labels, data.num_labels)
    metrics["teacher_accuracy"] = measures.accuracy(teacher_eval.argmax(1), data.eval.labels)
    metrics["ece"] = split_metrics["ece_eval"]
    metrics["ece_teacher"] = measures.expected_calibration_error(measures.softmax(teacher_eval), data.eval.labels)
    metrics["classwise_ece"] = measures.classwise_calibration_error(eval_probs, data.eval.labels)
    metrics["agreement"] = split_metrics["agreement_eval"]
    return metrics | measures.trust_metrics(measures.softmax(teacher_eval), eval_probs, data.eval.labels)


def class_sigmas(outputs: dict[str, np.ndarray], convention: measures.Convention) -> dict[str, float]:
    """``sigma_class_<k>`` for each class k of a task with more than two classes (none on a
    binary task, where the two classes' deltas are one sigma's), NaN where undefined.

    Example:
        >>> outputs = {"teacher_probs": [[.8, .1, .1], [.1, .8, .1]], "student_probs": [[.6, .2, .2], [.1, .7, .2]],
        ...            "labels": [0, 1]}
        >>> class_sigmas(outputs, "auto")
        {'sigma_class_0': 0.0, 'sigma_class_1': 0.0, 'sigma_class_2': nan}
    """
    if np.asarray(outputs["teacher_probs"]).shape[1] <= 2:
        return {}
    try:
        found = measures.sigma_per_class(outputs["teacher_probs"], outputs["student_probs"], outputs["labels"], convention)
    except ConfidenceInputError:  # no example right for both
        found = dict.fromkeys(range(np.asarray(outputs["teacher_probs"]).shape[1]), math.nan)
    return {f"{measures.SIGMA_CLASS_PREFIX}{k}": value for k, value in found.items()}


def _confidence_metrics(study: Study, data, params: dict[str, float], split_metrics: dict[str, Any],
                        student_train: torch.Tensor, teacher_train: torch.Tensor) -> dict[str, Any]:
    """Sigma on the confidence split, beta_X, kappa and phi_cnf."""
    split = study.objectives.confidence.split
    metrics: dict[str, Any] = {"sigma": split_metrics[f"sigma_{split}"],
                               "mean_delta": split_metrics[f"mean_delta_{split}"],
                               "n_both": split_metrics[f"n_both_{split}"]}
    # beta_X of the paper's bound: the prediction-distillation loss summed over X_train.
    distill = prediction_distillation(params["prediction_loss"])
    # max: the KL of a student that matches its teacher rounds to a hair below 0, and beta_X >= 0.
    prediction_loss_sum = max(0.0, float(distill(student_train, teacher_train, params["temperature"]))) * len(data.train)
    metrics["prediction_loss_sum"] = prediction_loss_sum
    kappa = study.objectives.confidence.fixed_kappa
    if kappa is None:
        kappa = measures.kappa_bound(study.objectives.confidence.bound_gamma, prediction_loss_sum,
                                       len(data.train), params["alpha"])
    metrics["kappa"] = kappa
    metrics["phi_cnf"] = bool(not math.isnan(metrics["sigma"]) and measures.phi_cnf(metrics["sigma"], kappa))
    return metrics


def interval_metrics(study: Study, confidence_outputs: dict[str, np.ndarray], eval_predictions,
                     eval_labels, num_classes: int) -> dict[str, float]:
    """Bootstrap intervals of sigma (on the confidence split's ``teacher_probs``,
    ``student_probs`` and ``labels``) and of the task metric (on eval predictions), as the
    module docstring names them.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [1]}})
        >>> outputs = {"teacher_probs": [[.9, .1], [.8, .2], [.3, .7]],
        ...            "student_probs": [[.7, .3], [.7, .3], [.4, .6]], "labels": [0, 0, 1]}
        >>> found = interval_metrics(study, outputs, [0, 1, 1, 1], [0, 1, 0, 1], 2)
        >>> found["sigma_ci_low"] <= found["sigma_ci_high"], found["accuracy_ci_high"]
        (True, 1.0)
    """
    spec = study.objectives.confidence
    bootstrap = {"level": spec.level, "resamples": spec.resamples, "seed": study.seed}
    found = measures.sigma_interval_metrics(confidence_outputs["teacher_probs"], confidence_outputs["student_probs"],
                                              confidence_outputs["labels"], convention=spec.convention, **bootstrap)
    return found | task_metric_interval(study, eval_predictions, eval_labels, num_classes)


def task_metric_interval(study: Study, eval_predictions, eval_labels, num_classes: int) -> dict[str, float]:
    """The bootstrap interval of the task metric on eval predictions (``<task metric>_ci_low``
    and ``_ci_high``).

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [1]}})
        >>> sorted(task_metric_interval(study, [0, 1, 1, 1], [0, 1, 0, 1], 2))
        ['accuracy_ci_high', 'accuracy_ci_low']
    """
    spec, name = study.objectives.confidence, study.objectives.task_metric
    metric = measures.metric_interval(name, eval_predictions, eval_labels, num_classes, level=spec.level,
                                        resamples=spec.resamples, seed=study.seed)
    return {f"{name}_ci_low": metric.low, f"{name}_ci_high": metric.high}
