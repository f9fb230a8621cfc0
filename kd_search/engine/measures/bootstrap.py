"""Uncertainty over a split's examples: percentile-bootstrap intervals (Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993, ch. 13) of sigma and of the task metric.

This project's, not the paper's: each resample draws the split's n examples with
replacement; the interval is the (1-level)/2 and (1+level)/2 quantiles of the statistic on
the resamples, its standard error their standard deviation. Resamples are counted, not
looped over: a matrix of draw counts per example turns every statistic into weighted sums.
:func:`~kd_search.engine.measures.certification.certify` combines these standard errors
with training seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kd_search.engine.measures._inputs import label_array
from kd_search.engine.measures.classification import (
    CLASSIFICATION_METRICS,
    metric_of_confusions,
    task_metric,
)
from kd_search.engine.measures.preservation import Convention, delta_and_both_correct, sigma
from kd_search.errors import ConfidenceInputError

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


def _resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
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
    delta, mask = delta_and_both_correct(teacher_probs, student_probs, labels, convention)
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
    predicted = label_array(predictions, len(np.asarray(predictions)), "predictions")
    y = label_array(labels, predicted.shape[0])
    if y.size == 0:
        raise ConfidenceInputError("no rows")
    if min(y.min(), predicted.min()) < 0 or max(y.max(), predicted.max()) >= num_classes:
        raise ConfidenceInputError(f"labels and predictions must lie in 0..{num_classes - 1}")
    cells = np.eye(num_classes * num_classes)[y * num_classes + predicted]
    replicates = np.concatenate([
        metric_of_confusions(name, (counts @ cells).reshape(-1, num_classes, num_classes))
        for counts in _resample_counts(y.size, resamples, seed)
    ])
    return _percentile_interval(task_metric(name, predicted, y, num_classes), replicates, level)
