"""Classification metrics: the task metrics (accuracy, F1, MCC) and the student's agreement
with the teacher.

* accuracy: the fraction of predictions equal to the labels;
* F1 = 2PR / (P + R) of the positive class 1 (binary) or the unweighted (macro) mean over
  classes (multi-class);
* MCC, the Matthews correlation coefficient in Gorodkin's (2004) multi-class form, from
  the confusion matrix (0 when undefined);
* agreement: the same measures with the teacher's predictions as the reference.

:func:`metric_of_confusions` computes the task metrics on a batch of confusion matrices,
with the same definitions, for the bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kd_search.engine.measures._inputs import label_array
from kd_search.errors import ConfidenceInputError

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")


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
    reference = label_array(teacher_pred, len(np.asarray(teacher_pred)), "teacher predictions")
    predicted = label_array(student_pred, reference.shape[0], "student predictions")
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
    predicted = label_array(predictions, len(np.asarray(predictions)), "predictions")
    y = label_array(labels, predicted.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    return float((predicted == y).mean())


def f1_score(predictions, labels, num_classes: int = 2) -> float:
    """F1 of the positive class 1 (binary) or the macro F1 (multi-class).

    Example:
        >>> f1_score([1, 0, 1, 1], [1, 0, 0, 1])
        0.8
    """
    predicted = label_array(predictions, len(np.asarray(predictions)), "predictions")
    y = label_array(labels, predicted.shape[0])
    return _precision_recall_f1(y, predicted, num_classes)[2]


def matthews_correlation(predictions, labels) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin 2004); 0 when undefined.

    Example:
        >>> matthews_correlation([1, 0, 1, 0], [1, 0, 1, 0])
        1.0
    """
    predicted = label_array(predictions, len(np.asarray(predictions)), "predictions")
    y = label_array(labels, predicted.shape[0])
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


def metric_of_confusions(name: str, confusions: np.ndarray) -> np.ndarray:
    """The task metric ``name`` (accuracy, f1 or mcc) of each confusion matrix in a batch.

    ``confusions``: (batch, K, K) counts, [true class, predicted class]. Same definitions as
    :func:`accuracy`, :func:`f1_score` and :func:`matthews_correlation`, one value per matrix.

    Example:
        >>> metric_of_confusions("accuracy", np.array([[[3, 1], [0, 4]]])).tolist()
        [0.875]
    """
    diagonal = np.diagonal(confusions, axis1=1, axis2=2)
    total = confusions.sum(axis=(1, 2))
    if name == "accuracy":
        return diagonal.sum(axis=1) / total
    true_counts, predicted_counts = confusions.sum(axis=2), confusions.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "f1":
            classes = [1] if confusions.shape[1] == 2 else slice(None)
            tp = diagonal[:, classes]
            precision = np.nan_to_num(tp / predicted_counts[:, classes])
            recall = np.nan_to_num(tp / true_counts[:, classes])
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
            return f1.mean(axis=1)
        covariance = diagonal.sum(axis=1) * total - (true_counts * predicted_counts).sum(axis=1)
        denominator = np.sqrt((total**2 - (predicted_counts**2).sum(axis=1))
                              * (total**2 - (true_counts**2).sum(axis=1)))
        return np.where(denominator > 0, covariance / denominator, 0.0)
