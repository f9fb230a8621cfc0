"""Trust measures of a student beyond sigma: pure functions on arrays.

What a user of a compressed model checks next, each measured against the teacher or the
labels on one split (row-aligned arrays, as every measure of :mod:`kd_search.engine.measures`):

* flips (Xu et al., "Beyond Preserved Accuracy: Evaluating Loyalty and Robustness of BERT
  Compression", EMNLP 2021, label loyalty = 1 - flip rate; Yan et al., "Positive-Congruent
  Training", CVPR 2021, negative flips): how often the student's prediction differs from
  the teacher's, on every example and on the examples the teacher gets right;
* mean KL(teacher || student) = mean_x sum_k p_t,k(x) log(p_t,k(x) / p_s,k(x))
  (Kullback & Leibler 1951; Hinton et al. 2015's distillation target at T=1);
* Brier score = mean_x sum_k (p_k(x) - [y(x) = k])^2 (Brier 1950, the multi-class form);
* NLL = -mean_x log p_y(x)(x) (the log loss; Guo et al. 2017, Sec. 5, report it beside ECE);
* the reliability diagram's bins (Guo et al. 2017, Sec. 2), the same bins as
  :func:`~kd_search.engine.measures.calibration.expected_calibration_error`;
* sigma per class: sigma (:mod:`kd_search.engine.measures.preservation`) over the examples
  of one true class, for tasks with K > 2 classes where one sigma can hide a class.

:func:`trust_metrics` gathers the per-split measures under the names a trial reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kd_search.engine.measures._inputs import check_probabilities, label_array
from kd_search.engine.measures.preservation import (
    Convention,
    both_correct_mask,
    confidence_delta,
    sigma,
)
from kd_search.errors import ConfidenceInputError

# log(0) guard: a probability below this counts as this (float64 softmax reaches ~1e-300).
PROBABILITY_FLOOR = 1e-12
# The names trust_metrics returns, in the order people read them.
TRUST_METRICS = ("flip_rate", "flip_rate_teacher_correct", "kl_teacher_student", "brier", "brier_teacher",
                 "nll", "nll_teacher")
SIGMA_CLASS_PREFIX = "sigma_class_"


def _pair(teacher_probs, student_probs) -> tuple[np.ndarray, np.ndarray]:
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    if teacher.shape != student.shape:
        raise ConfidenceInputError(f"teacher and student tables differ in shape: {teacher.shape} vs {student.shape}")
    if teacher.shape[0] == 0:
        raise ConfidenceInputError("no rows")
    return teacher, student


@dataclass(frozen=True)
class Flips:
    """Prediction flips of the student against the teacher (see the module docstring).

    ``flip_rate``: fraction of examples where argmax student != argmax teacher;
    ``flip_rate_teacher_correct``: the same among the examples the teacher gets right
    (NaN when it gets none right): there every flip is a new error;
    ``negative_flip_rate``: teacher right and student wrong, over all examples.
    """

    flip_rate: float
    flip_rate_teacher_correct: float
    negative_flip_rate: float


def flips(teacher_probs, student_probs, labels) -> Flips:
    """How often the student's prediction differs from the teacher's.

    Example:
        >>> found = flips([[.9, .1], [.8, .2], [.3, .7], [.6, .4]], [[.6, .4], [.4, .6], [.2, .8], [.3, .7]],
        ...               [0, 0, 1, 1])
        >>> found.flip_rate, found.flip_rate_teacher_correct, found.negative_flip_rate
        (0.5, 0.3333333333333333, 0.25)
    """
    teacher, student = _pair(teacher_probs, student_probs)
    y = label_array(labels, teacher.shape[0])
    teacher_pred, student_pred = teacher.argmax(1), student.argmax(1)
    flipped = teacher_pred != student_pred
    teacher_right = teacher_pred == y
    among_right = float(flipped[teacher_right].mean()) if teacher_right.any() else math.nan
    return Flips(flip_rate=float(flipped.mean()), flip_rate_teacher_correct=among_right,
                 negative_flip_rate=float((flipped & teacher_right).mean()))


def mean_kl(teacher_probs, student_probs) -> float:
    """Mean over examples of KL(teacher || student) = sum_k p_t,k log(p_t,k / p_s,k), in nats.

    Terms with p_t,k = 0 are 0; a student probability of 0 counts as 1e-12.

    Example:
        >>> round(mean_kl([[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]), 4)
        0.3466
    """
    teacher, student = _pair(teacher_probs, student_probs)
    ratio = np.log(np.maximum(teacher, PROBABILITY_FLOOR)) - np.log(np.maximum(student, PROBABILITY_FLOOR))
    return float(np.where(teacher > 0, teacher * ratio, 0.0).sum(axis=1).mean())


def brier_score(probs, labels) -> float:
    """Brier score: mean over examples of sum_k (p_k - [y = k])^2 (0 is perfect, 2 the worst).

    Example:
        >>> brier_score([[0.8, 0.2], [0.5, 0.5]], [0, 1])
        0.29
    """
    array = check_probabilities(probs)
    y = label_array(labels, array.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    one_hot = np.eye(array.shape[1])[y]
    return float(((array - one_hot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probs, labels) -> float:
    """Mean negative log probability of the true class, in nats (a 0 counts as 1e-12).

    Example:
        >>> round(negative_log_likelihood([[0.5, 0.5], [0.9, 0.1]], [1, 0]), 4)
        0.3993
    """
    array = check_probabilities(probs)
    y = label_array(labels, array.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    return float(-np.log(np.maximum(array[np.arange(y.size), y], PROBABILITY_FLOOR)).mean())


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's equal-width bins of top-label confidence: per bin its mean
    ``confidence``, ``accuracy`` and ``count`` (NaN confidence and accuracy where empty)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def calibration_error(self) -> float:
        """ECE from the bins: sum_b |B_b|/n |acc(B_b) - conf(B_b)|."""
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        return float((weights * np.abs(self.accuracy[filled] - self.confidence[filled])).sum())


def reliability(probs, labels, num_bins: int = 10) -> Reliability:
    """The bins of a reliability diagram: top-label confidence max_k p_k against accuracy.

    Bins are (lo, hi] with confidence 0 in the first, as ECE's (so ``calibration_error``
    equals :func:`~kd_search.engine.measures.calibration.expected_calibration_error`).

    Example:
        >>> bins = reliability([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4]], [0, 1, 0], num_bins=2)
        >>> bins.count.tolist(), bins.accuracy.tolist()
        ([0, 3], [nan, 0.6666666666666666])
    """
    array = check_probabilities(probs)
    y = label_array(labels, array.shape[0])
    if num_bins < 1:
        raise ConfidenceInputError(f"num_bins must be at least 1, got {num_bins}")
    confidences, correct = array.max(axis=1), (array.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidences, minlength=num_bins) / count
        accuracy = np.bincount(bins, correct, minlength=num_bins) / count
    return Reliability(edges=edges, confidence=mean_confidence, accuracy=accuracy, count=count)


def sigma_per_class(teacher_probs, student_probs, labels, convention: Convention = "auto") -> dict[int, float]:
    """sigma (population std of delta over X_both) restricted to each true class k.

    Class k's sigma is the ddof=0 std of delta over the examples of class k that teacher
    and student both classify correctly; NaN where there is none.

    Example:
        >>> teacher = [[.9, .05, .05], [.8, .1, .1], [.1, .8, .1], [.1, .1, .8]]
        >>> student = [[.7, .2, .1], [.7, .2, .1], [.2, .7, .1], [.1, .2, .7]]
        >>> {k: round(v, 3) for k, v in sigma_per_class(teacher, student, [0, 0, 1, 2]).items()}
        {0: 0.05, 1: 0.0, 2: 0.0}
    """
    mask = both_correct_mask(teacher_probs, student_probs, labels)
    y = label_array(labels, mask.size)
    delta = confidence_delta(teacher_probs, student_probs, y, convention)
    both_labels = y[mask]
    num_classes = np.asarray(check_probabilities(teacher_probs)).shape[1]
    return {k: sigma(delta[both_labels == k]) for k in range(num_classes)}


def trust_metrics(teacher_probs, student_probs, labels) -> dict[str, float]:
    """The trust measures of one split under the names a trial reports (``TRUST_METRICS``):
    flips against the teacher, KL(teacher || student), Brier score and NLL of student and
    teacher.

    Example:
        >>> found = trust_metrics([[.9, .1], [.2, .8]], [[.7, .3], [.6, .4]], [0, 1])
        >>> found["flip_rate"], round(found["brier"], 3), round(found["brier_teacher"], 3)
        (0.5, 0.45, 0.05)
    """
    found = flips(teacher_probs, student_probs, labels)
    return {"flip_rate": found.flip_rate, "flip_rate_teacher_correct": found.flip_rate_teacher_correct,
            "kl_teacher_student": mean_kl(teacher_probs, student_probs),
            "brier": brier_score(student_probs, labels), "brier_teacher": brier_score(teacher_probs, labels),
            "nll": negative_log_likelihood(student_probs, labels),
            "nll_teacher": negative_log_likelihood(teacher_probs, labels)}
