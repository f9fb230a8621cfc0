"""Confidence-preservation and classification metrics: pure functions on arrays.

Definitions follow Vengertsev & Sherman, "Confidence Preservation Property in Knowledge
Distillation Abstractions" (arXiv 2401.11365):

* X_both = the inputs that teacher and student both classify correctly.
* delta(x) = p0_teacher(x) - p0_student(x), the class-0 softmax probability at T=1
  (the authors' convention for binary tasks).
* sigma(X) = population standard deviation (ddof=0) of delta over X_both.
* kappa bound: kappa = gamma * sqrt(beta / (|X| (1 - alpha))), alpha in [0, 1), beta the
  summed prediction-distillation loss over X, |X| the training-set size.
* phi_cnf holds when sigma <= kappa.

Inputs are row-aligned arrays (the caller joins rows by example id). Every function
accepts numpy arrays or CPU tensors and imports nothing else of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kd_search.errors import ConfidenceInputError

Convention = Literal["auto", "p0", "true_class"]
PROBABILITY_SUM_TOLERANCE = 1e-3


def _as_array(values, name: str, ndim: int) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ConfidenceInputError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")
    if np.isnan(array).any():
        raise ConfidenceInputError(f"{name}: contains NaN")
    return array


def check_probabilities(probs, name: str = "probabilities") -> np.ndarray:
    """Return ``probs`` as an (n, K) float array after checking it is a probability table.

    Raises :class:`ConfidenceInputError` on NaN, values outside [0, 1] or rows whose sum
    differs from 1 by more than 1e-3.

    Example:
        >>> check_probabilities([[0.2, 0.8]]).shape
        (1, 2)
    """
    array = _as_array(probs, name, 2)
    if array.shape[1] < 2:
        raise ConfidenceInputError(f"{name}: need at least 2 class columns, got {array.shape[1]}")
    if ((array < 0) | (array > 1)).any():
        raise ConfidenceInputError(f"{name}: values outside [0, 1]")
    sums = array.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
    if bad.size:
        raise ConfidenceInputError(
            f"{name}: row {int(bad[0])} sums to {sums[bad[0]]:.6f}, not 1 ({bad.size} such rows)"
        )
    return array


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of an (n, K) logit table at ``temperature``.

    Example:
        >>> softmax([[0.0, 0.0]]).tolist()
        [[0.5, 0.5]]
    """
    array = _as_array(logits, "logits", 2) / temperature
    array = array - array.max(axis=1, keepdims=True)
    exp = np.exp(array)
    return exp / exp.sum(axis=1, keepdims=True)


def _labels(labels, n: int, name: str = "labels") -> np.ndarray:
    array = _as_array(labels, name, 1)
    if array.shape[0] != n:
        raise ConfidenceInputError(f"{name}: {array.shape[0]} rows, expected {n}")
    if (array != np.round(array)).any():
        raise ConfidenceInputError(f"{name}: class labels must be whole numbers")
    return array.astype(np.int64)


def _check_rows(teacher: np.ndarray, student: np.ndarray) -> None:
    if teacher.shape[0] != student.shape[0]:
        raise ConfidenceInputError(
            f"row counts differ: teacher has {teacher.shape[0]}, student has {student.shape[0]}"
        )
    if teacher.shape[1] != student.shape[1]:
        raise ConfidenceInputError(
            f"class counts differ: teacher has {teacher.shape[1]}, student has {student.shape[1]}"
        )


def both_correct_mask(teacher_probs, student_probs, labels) -> np.ndarray:
    """Boolean mask of X_both: rows where the argmax of teacher and of student equal the label.

    Example:
        >>> both_correct_mask([[.9, .1], [.2, .8]], [[.6, .4], [.7, .3]], [0, 1]).tolist()
        [True, False]
    """
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    _check_rows(teacher, student)
    y = _labels(labels, teacher.shape[0])
    return (teacher.argmax(axis=1) == y) & (student.argmax(axis=1) == y)


def confidence_delta(teacher_probs, student_probs, labels, convention: Convention = "auto") -> np.ndarray:
    """delta(x) over X_both (Vengertsev & Sherman, Sec. 3: delta = p_teacher - p_student).

    ``convention``:
      * ``p0``: the class-0 probability, the authors' convention for binary tasks;
      * ``true_class``: the probability of the true class. For K > 2 classes this is the
        only one offered and it is a *different statistic* from the paper's binary one
        (on binary tasks it equals -delta_p0 on label-1 rows, so sigma differs);
      * ``auto``: ``p0`` for binary tasks, ``true_class`` otherwise.

    Raises :class:`ConfidenceInputError` when X_both is empty.

    Example:
        >>> confidence_delta([[.9, .1], [.8, .2]], [[.7, .3], [.6, .4]], [0, 0]).round(2).tolist()
        [0.2, 0.2]
    """
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    _check_rows(teacher, student)
    y = _labels(labels, teacher.shape[0])
    resolved = resolve_convention(convention, teacher.shape[1])
    mask = (teacher.argmax(axis=1) == y) & (student.argmax(axis=1) == y)
    if not mask.any():
        raise ConfidenceInputError("no example is classified correctly by both teacher and student")
    rows = np.flatnonzero(mask)
    column = 0 if resolved == "p0" else y[rows]
    return teacher[rows, column] - student[rows, column]


def resolve_convention(convention: Convention, num_classes: int) -> Literal["p0", "true_class"]:
    """The convention ``auto`` stands for on a task with ``num_classes`` classes.

    Raises :class:`ConfidenceInputError` for ``p0`` on a task that is not binary.

    Example:
        >>> resolve_convention("auto", 2), resolve_convention("auto", 3)
        ('p0', 'true_class')
    """
    if convention == "auto":
        return "p0" if num_classes == 2 else "true_class"
    if convention == "p0" and num_classes != 2:
        raise ConfidenceInputError(
            f"convention 'p0' is defined for binary tasks; this one has {num_classes} classes "
            "(use 'true_class')"
        )
    return convention


def kappa_bound(gamma: float, beta: float, num_train: int, alpha: float) -> float:
    """The paper's bound kappa = gamma * sqrt(beta / (|X| (1 - alpha))).

    ``beta`` is the summed prediction-distillation loss over the training set X,
    ``num_train`` = |X| and ``alpha`` in [0, 1) the hard-label weight.

    Example:
        >>> kappa_bound(gamma=1.0, beta=4.0, num_train=100, alpha=0.0)
        0.2
    """
    if not 0.0 <= alpha < 1.0:
        raise ConfidenceInputError(f"alpha must be in [0, 1), got {alpha}")
    if num_train <= 0:
        raise ConfidenceInputError(f"|X| must be positive, got {num_train}")
    if beta < 0 or gamma < 0 or math.isnan(beta) or math.isnan(gamma):
        raise ConfidenceInputError(f"beta and gamma must be non-negative, got {beta}, {gamma}")
    return gamma * math.sqrt(beta / (num_train * (1.0 - alpha)))


def phi_cnf(sigma: float, kappa: float) -> bool:
    """The confidence-preservation property phi_cnf: sigma <= kappa.

    Example:
        >>> phi_cnf(0.04, 0.05)
        True
    """
    if math.isnan(sigma) or math.isnan(kappa):
        raise ConfidenceInputError("sigma and kappa must not be NaN")
    return sigma <= kappa


def _binned_calibration_error(confidences: np.ndarray, correct: np.ndarray, num_bins: int) -> float:
    # Bins are (lo, hi] as in Guo et al. 2017; confidence 0 falls in the first bin.
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, num_bins - 1)
    total = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidences[in_bin].mean())
    return float(total)


def expected_calibration_error(probs, labels, num_bins: int = 10) -> float:
    """Top-label expected calibration error (Guo et al. 2017, eq. 3), equal-width bins.

    ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| with conf = max_k p_k.

    Example:
        >>> expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1])
        0.4
    """
    array = check_probabilities(probs)
    y = _labels(labels, array.shape[0])
    confidences = array.max(axis=1)
    correct = (array.argmax(axis=1) == y).astype(np.float64)
    return _binned_calibration_error(confidences, correct, num_bins)


def classwise_calibration_error(probs, labels, num_bins: int = 10) -> float:
    """The authors' class-wise ECE: every class probability is a confidence.

    Each (example, class k) pair contributes confidence p_k and correctness [y == k];
    the binned ECE is taken over all n*K pairs, i.e. the mean of the per-class ECEs.

    Example:
        >>> classwise_calibration_error([[1.0, 0.0], [1.0, 0.0]], [0, 0])
        0.0
    """
    array = check_probabilities(probs)
    y = _labels(labels, array.shape[0])
    correct = (y[:, None] == np.arange(array.shape[1])[None, :]).astype(np.float64)
    return _binned_calibration_error(array.ravel(), correct.ravel(), num_bins)


@dataclass(frozen=True)
class Agreement:
    """How well the student restores the teacher's predictions (teacher = reference)."""

    agreement: float
    precision: float
    recall: float
    f1: float


def _precision_recall_f1(reference: np.ndarray, predicted: np.ndarray, num_classes: int) -> tuple[float, float, float]:
    # Binary: the positive class is 1. Multi-class: unweighted (macro) mean over classes.
    classes = [1] if num_classes == 2 else list(range(num_classes))
    precisions, recalls, f1s = [], [], []
    for k in classes:
        tp = float(((predicted == k) & (reference == k)).sum())
        fp = float(((predicted == k) & (reference != k)).sum())
        fn = float(((predicted != k) & (reference == k)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(f1s))


def teacher_agreement(teacher_pred, student_pred, num_classes: int = 2) -> Agreement:
    """The student's restoration rate of the teacher's predictions.

    The teacher's predicted labels are the reference: ``agreement`` is the fraction of
    equal predictions; precision, recall and F1 are those of the student against the
    teacher (positive class 1 when binary, macro average otherwise).

    Example:
        >>> teacher_agreement([1, 1, 0, 0], [1, 0, 0, 0]).recall
        0.5
    """
    reference = _labels(teacher_pred, len(np.asarray(teacher_pred)), "teacher predictions")
    predicted = _labels(student_pred, reference.shape[0], "student predictions")
    if reference.size == 0:
        raise ConfidenceInputError("no predictions to compare")
    p, r, f1 = _precision_recall_f1(reference, predicted, num_classes)
    return Agreement(agreement=float((reference == predicted).mean()), precision=p, recall=r, f1=f1)


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the labels.

    Example:
        >>> accuracy([1, 0, 1], [1, 1, 1])
        0.6666666666666666
    """
    predicted = _labels(predictions, len(np.asarray(predictions)), "predictions")
    y = _labels(labels, predicted.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    return float((predicted == y).mean())


def f1_score(predictions, labels, num_classes: int = 2) -> float:
    """F1 of the positive class 1 (binary) or the macro F1 (multi-class).

    Example:
        >>> f1_score([1, 0, 1, 1], [1, 0, 0, 1])
        0.8
    """
    predicted = _labels(predictions, len(np.asarray(predictions)), "predictions")
    y = _labels(labels, predicted.shape[0])
    return _precision_recall_f1(y, predicted, num_classes)[2]


def matthews_correlation(predictions, labels) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin 2004); 0 when undefined.

    Example:
        >>> matthews_correlation([1, 0, 1, 0], [1, 0, 1, 0])
        1.0
    """
    predicted = _labels(predictions, len(np.asarray(predictions)), "predictions")
    y = _labels(labels, predicted.shape[0])
    classes = np.union1d(predicted, y)
    confusion = np.zeros((classes.size, classes.size))
    np.add.at(confusion, (np.searchsorted(classes, y), np.searchsorted(classes, predicted)), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def task_metric(name: str, predictions, labels, num_classes: int = 2) -> float:
    """The study's task metric by name: accuracy, f1 or mcc.

    Example:
        >>> task_metric("accuracy", [1, 0], [1, 1])
        0.5
    """
    if name == "accuracy":
        return accuracy(predictions, labels)
    if name == "f1":
        return f1_score(predictions, labels, num_classes)
    if name == "mcc":
        return matthews_correlation(predictions, labels)
    raise ConfidenceInputError(f"unknown task metric {name!r}")
