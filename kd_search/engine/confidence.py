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

Uncertainty (this project's, not the paper's): percentile-bootstrap intervals of sigma and
of the task metric over a split's examples, and :func:`certify`, which combines training
seeds with them into a one-sided upper bound on sigma and a verdict.

Inputs are row-aligned arrays (the caller joins rows by example id). Every function
accepts numpy arrays or CPU tensors and imports nothing else of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist
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


def _delta_all_rows(teacher_probs, student_probs, labels,
                    convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    # delta on every row (not only X_both) and the X_both mask: the bootstrap re-draws
    # rows and so needs delta wherever a resample may land.
    teacher = check_probabilities(teacher_probs, "teacher probabilities")
    student = check_probabilities(student_probs, "student probabilities")
    _check_rows(teacher, student)
    y = _labels(labels, teacher.shape[0])
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
    delta, mask = _delta_all_rows(teacher_probs, student_probs, labels, convention)
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


# Uncertainty: percentile-bootstrap intervals over a split's examples, and the verdict
# that combines training seeds with them.

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
# Resample indices drawn at once (rows x examples): bounds memory to ~16 MB of int64.
BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A percentile-bootstrap interval (Efron & Tibshirani 1993, ch. 13) around a statistic.

    ``estimate`` is the statistic on the whole split; ``low`` and ``high`` the (1-level)/2
    and (1+level)/2 quantiles of its values on the resamples; ``std_error`` their standard
    deviation (ddof=1); ``undefined`` how many of the ``resamples`` were dropped because the
    statistic is undefined on them (sigma on a resample with no both-correct example).
    """

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    std_error: float
    undefined: int


def _check_bootstrap(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ConfidenceInputError(f"level must be in (0, 1), got {level}")
    if resamples < 2:
        raise ConfidenceInputError(f"resamples must be at least 2, got {resamples}")


def _resample_counts(n: int, resamples: int, seed: int):
    # Yields (rows, n) matrices: how often each example is drawn in each resample of n
    # indices with replacement. Counts turn every statistic into weighted sums (one matrix
    # product) instead of a Python loop per resample.
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n))
        drawn += np.arange(rows)[:, None] * n
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _percentile_interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    defined = replicates[~np.isnan(replicates)]
    if defined.size < 2:
        raise ConfidenceInputError(
            f"the statistic is defined on only {defined.size} of {replicates.size} resamples"
        )
    low, high = np.quantile(defined, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(estimate=estimate, low=float(low), high=float(high), level=level,
                    resamples=int(replicates.size), std_error=float(np.std(defined, ddof=1)),
                    undefined=int(replicates.size - defined.size))


def sigma_interval(teacher_probs, student_probs, labels, *, convention: Convention = "auto",
                   level: float = 0.95, resamples: int = 1000, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of sigma (population std of delta over X_both).

    Each resample draws n example indices with replacement from the whole split (n its
    size, not |X_both|), so the both-correct set is re-formed in every resample; sigma is
    then the ddof=0 std of delta over the drawn both-correct rows, repeats counted. A
    resample with no both-correct row has no sigma: it is dropped and counted in
    ``undefined``. Draws come from ``numpy.random.default_rng(seed)``. Raises
    :class:`ConfidenceInputError` when X_both is empty on the split itself.

    Example:
        >>> teacher = [[.9, .1], [.8, .2], [.7, .3], [.2, .8]]
        >>> student = [[.8, .2], [.6, .4], [.6, .4], [.3, .7]]
        >>> interval = sigma_interval(teacher, student, [0, 0, 0, 1], seed=1)
        >>> interval.low <= round(interval.estimate, 4) <= interval.high, interval.resamples
        (True, 1000)
    """
    delta, mask = _delta_all_rows(teacher_probs, student_probs, labels, convention)
    _check_bootstrap(level, resamples)
    # Centring on the X_both mean keeps E[d^2] - E[d]^2 free of cancellation.
    centred = np.where(mask, delta - delta[mask].mean(), 0.0)
    table = np.stack([mask.astype(np.float64), centred, centred * centred], axis=1)
    chunks = []
    for counts in _resample_counts(delta.size, resamples, seed):
        weight, first, second = (counts @ table).T
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = first / weight
            chunks.append(np.sqrt(np.maximum(second / weight - mean * mean, 0.0)))
    return _percentile_interval(sigma(delta[mask]), np.concatenate(chunks), level)


def sigma_interval_metrics(teacher_probs, student_probs, labels, *, convention: Convention = "auto",
                           level: float = 0.95, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``sigma_ci_low``, ``sigma_ci_high`` and ``sigma_se`` from ``sigma_interval``; all NaN
    where sigma has no interval (no both-correct example on the split, or on almost every
    resample), so a trial or an audit still reports its other metrics.

    Example:
        >>> sorted(sigma_interval_metrics([[.9, .1], [.8, .2]], [[.2, .8], [.3, .7]], [0, 0]).values())
        [nan, nan, nan]
    """
    try:
        interval = sigma_interval(teacher_probs, student_probs, labels, convention=convention, level=level,
                                  resamples=resamples, seed=seed)
    except ConfidenceInputError:
        return {"sigma_ci_low": math.nan, "sigma_ci_high": math.nan, "sigma_se": math.nan}
    return {"sigma_ci_low": interval.low, "sigma_ci_high": interval.high, "sigma_se": interval.std_error}


def _metric_of_confusions(name: str, confusions: np.ndarray) -> np.ndarray:
    # confusions: (batch, K, K) counts, [true class, predicted class]. Same definitions as
    # accuracy, f1_score and matthews_correlation, one value per matrix.
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


def metric_interval(name: str, predictions, labels, num_classes: int = 2, *, level: float = 0.95,
                    resamples: int = 1000, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of a classification task metric: accuracy, f1 or mcc.

    Resamples n examples with replacement (n the split size) as :func:`sigma_interval`
    does; each resample's confusion matrix gives the metric with the definitions of
    :func:`accuracy`, :func:`f1_score` and :func:`matthews_correlation`. ``estimate`` is
    :func:`task_metric` on the whole split.

    Example:
        >>> interval = metric_interval("accuracy", [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1])
        >>> round(interval.estimate, 3), interval.low <= interval.estimate <= interval.high
        (0.833, True)
    """
    if name not in CLASSIFICATION_METRICS:
        raise ConfidenceInputError(
            f"no bootstrap interval for task metric {name!r}; one of {', '.join(CLASSIFICATION_METRICS)}"
        )
    _check_bootstrap(level, resamples)
    predicted = _labels(predictions, len(np.asarray(predictions)), "predictions")
    y = _labels(labels, predicted.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    if min(y.min(), predicted.min()) < 0 or max(y.max(), predicted.max()) >= num_classes:
        raise ConfidenceInputError(f"labels and predictions must lie in 0..{num_classes - 1}")
    cells = np.eye(num_classes * num_classes)[y * num_classes + predicted]
    replicates = np.concatenate([
        _metric_of_confusions(name, (counts @ cells).reshape(-1, num_classes, num_classes))
        for counts in _resample_counts(y.size, resamples, seed)
    ])
    return _percentile_interval(task_metric(name, predicted, y, num_classes), replicates, level)


def _student_t_central(t: float, df: int) -> float:
    # P(|T| <= t) for T ~ Student t with integer df: the closed-form finite series of
    # Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df), theta = atan(t / sqrt(df)).
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = math.cos(theta)
    total = term
    for j in range(1, (df - 1) // 2):
        term *= cos2 * (2 * j) / (2 * j + 1)
        total += term
    return 2.0 / math.pi * (theta + math.sin(theta) * total)


def student_t_quantile(probability: float, df: int) -> float:
    """The Student t quantile t with P(T <= t) = ``probability``, ``df`` whole degrees of freedom.

    Bisection on the exact distribution function of Abramowitz & Stegun 26.7.3-26.7.4
    (finite series for integer df), to ~1e-12 relative precision.

    Example:
        >>> round(student_t_quantile(0.95, 1), 3), round(student_t_quantile(0.95, 4), 3)
        (6.314, 2.132)
    """
    if not 0.0 < probability < 1.0:
        raise ConfidenceInputError(f"probability must be in (0, 1), got {probability}")
    if df < 1 or df != int(df):
        raise ConfidenceInputError(f"degrees of freedom must be a whole number >= 1, got {df}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    target = 2.0 * probability - 1.0
    low, high = 0.0, 1.0
    while _student_t_central(high, int(df)) < target:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = (low + high) / 2.0
        if high - low <= 1e-12 * high:
            break
        if _student_t_central(middle, int(df)) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


class Verdict(str, Enum):
    """Whether phi_cnf (sigma <= kappa) is certified across training seeds."""

    CERTIFIED = "certified"
    UNCONFIRMED = "unconfirmed"
    FAILS = "fails"


@dataclass(frozen=True)
class Certification:
    """A verdict with the numbers behind it (see :func:`certify`)."""

    verdict: Verdict
    mean_sigma: float
    upper_bound: float
    kappa: float
    seeds: int
    level: float


def certify(sigmas_by_seed: list[float], bootstrap_std_errors: list[float], kappa: float,
            level: float = 0.95) -> Certification:
    """Certify phi_cnf: a one-sided upper prediction bound on the sigma of the trial's recipe
    trained again with a new seed.

    With k seeds (one trained student each), per seed its sigma_i and the bootstrap
    standard error se_i of sigma_i (:attr:`Interval.std_error`):

      m = mean(sigma_i);  s^2 = sample variance of the sigma_i (ddof=1);
      U = m + t_{level, k-1} * sqrt(s^2 * (1 + 1/k) + mean(se_i)^2)

    with t_{level, k-1} the Student t quantile (:func:`student_t_quantile`). s^2 (1 + 1/k)
    is the variance of a new seed's sigma around m (the training randomness: the student
    users would get by training the recipe again); mean(se_i)^2 the sampling error of the
    examples. It is not divided by k: every seed is measured on the same split, so their
    example errors are correlated and do not average out (dividing would make U too low as
    k grows). Verdicts for k >= 2: ``certified`` if U <= kappa, ``fails`` if m > kappa,
    ``unconfirmed`` otherwise. One seed cannot be certified: ``unconfirmed`` if
    sigma <= kappa, else ``fails``; U is then the normal-approximation bootstrap bound
    sigma + z_level * se. Assumes the seeds are independent draws of the training randomness.

    Example:
        >>> result = certify([0.04, 0.05, 0.06], [0.003, 0.003, 0.003], kappa=0.09)
        >>> result.verdict.value, round(result.upper_bound, 4)
        ('certified', 0.0848)
    """
    sigmas = np.asarray(sigmas_by_seed, dtype=np.float64)
    errors = np.asarray(bootstrap_std_errors, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size == 0 or sigmas.shape != errors.shape:
        raise ConfidenceInputError(
            f"need one sigma and one bootstrap standard error per seed, got {sigmas.size} and {errors.size}"
        )
    if np.isnan(sigmas).any() or np.isnan(errors).any() or (sigmas < 0).any() or (errors < 0).any():
        raise ConfidenceInputError("sigmas and standard errors must be non-negative numbers")
    if math.isnan(kappa) or not 0.0 < level < 1.0:
        raise ConfidenceInputError(f"kappa must be a number and level in (0, 1), got {kappa}, {level}")
    seeds, mean = sigmas.size, float(sigmas.mean())
    if seeds == 1:
        upper = mean + NormalDist().inv_cdf(level) * float(errors[0])
        verdict = Verdict.UNCONFIRMED if mean <= kappa else Verdict.FAILS
    else:
        spread = float(sigmas.var(ddof=1)) * (1 + 1 / seeds) + float(errors.mean()) ** 2
        upper = mean + student_t_quantile(level, seeds - 1) * math.sqrt(spread)
        if upper <= kappa:
            verdict = Verdict.CERTIFIED
        else:
            verdict = Verdict.FAILS if mean > kappa else Verdict.UNCONFIRMED
    return Certification(verdict=verdict, mean_sigma=mean, upper_bound=upper, kappa=kappa,
                         seeds=seeds, level=level)
