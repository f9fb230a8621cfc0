"""Calibration: how far a model's confidence is from its accuracy.

* Top-label expected calibration error (Guo et al., "On Calibration of Modern Neural
  Networks", ICML 2017, eq. 3): ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over
  equal-width bins of conf = max_k p_k.
* Class-wise ECE (the one Vengertsev & Sherman, arXiv 2401.11365, report): every class
  probability p_k is a confidence, correct when y = k, and the binned ECE is taken over
  all n*K (example, class) pairs.
"""

from __future__ import annotations

import numpy as np

from kd_search.engine.measures._inputs import check_probabilities, label_array


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
    y = label_array(labels, array.shape[0])
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
    y = label_array(labels, array.shape[0])
    correct = (y[:, None] == np.arange(array.shape[1])[None, :]).astype(np.float64)
    return _binned_calibration_error(array.ravel(), correct.ravel(), num_bins)
