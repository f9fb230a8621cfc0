"""Confidence preservation: delta, sigma, the kappa bound and phi_cnf.

Definitions follow Vengertsev & Sherman, "Confidence Preservation Property in Knowledge
Distillation Abstractions" (arXiv 2401.11365):

* X_both = the inputs that teacher and student both classify correctly.
* delta(x) = p0_teacher(x) - p0_student(x), the class-0 softmax probability at T=1
  (the authors' convention for binary tasks).
* sigma(X) = population standard deviation (ddof=0) of delta over X_both.
* kappa bound: kappa = gamma * sqrt(beta / (|X| (1 - alpha))), alpha in [0, 1), beta the
  summed prediction-distillation loss over X, |X| the training-set size.
* phi_cnf holds when sigma <= kappa.

:func:`sigma` is the one place sigma is computed.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from kd_search.engine.measures._inputs import check_aligned, check_probabilities, label_array
from kd_search.errors import ConfidenceInputError

Convention = Literal["auto", "p0", "true_class"]


def both_correct_mask(teacher_probs, student_probs, labels) -> np.ndarray:
    """Boolean mask of X_both: rows where the argmax of teacher and of student equal the label.

    Example:
        >>> both_correct_mask([[.9, .1], [.2, .8]], [[.6, .4], [.7, .3]], [0, 1]).tolist()
        [True, False]
    """
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    check_aligned(teacher, student)
    y = label_array(labels, teacher.shape[0])
    return (teacher.argmax(axis=1) == y) & (student.argmax(axis=1) == y)


def delta_and_both_correct(teacher_probs, student_probs, labels,
                           convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    """delta on every row (not only X_both) and the X_both mask.

    The bootstrap re-draws rows and so needs delta wherever a resample may land; see
    :func:`confidence_delta` for the conventions. Raises :class:`ConfidenceInputError`
    when X_both is empty.

    Example:
        >>> delta, mask = delta_and_both_correct([[.9, .1], [.8, .2]], [[.7, .3], [.4, .6]], [0, 0], "p0")
        >>> delta.round(2).tolist(), mask.tolist()
        ([0.2, 0.4], [True, False])
    """
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    check_aligned(teacher, student)
    y = label_array(labels, teacher.shape[0])
    resolved = resolve_convention(convention, teacher.shape[1])
    mask = (teacher.argmax(axis=1) == y) & (student.argmax(axis=1) == y)
    if not mask.any():
        raise ConfidenceInputError("no example is classified correctly by both teacher and student")
    column = 0 if resolved == "p0" else y
    rows = np.arange(teacher.shape[0])
    return teacher[rows, column] - student[rows, column], mask


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
    delta, mask = delta_and_both_correct(teacher_probs, student_probs, labels, convention)
    return delta[mask]


def sigma(delta) -> float:
    """sigma(X) = the population standard deviation (ddof=0) of delta over X_both, as
    defined above; NaN when X_both is empty (no example both models get right: undefined).

    The one place sigma is computed: evaluation, audit and figures all call it.

    Example:
        >>> sigma([0.1, -0.1, 0.1, -0.1])
        0.1
        >>> sigma([])
        nan
    """
    array = np.asarray(delta, dtype=np.float64)
    return float(np.std(array, ddof=0)) if array.size else math.nan


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
