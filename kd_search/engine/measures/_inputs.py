"""The checks every measure runs on its inputs, and the softmax that makes probabilities.

Inputs are row-aligned arrays (the caller joins rows by example id): (n, K) probability or
logit tables and n class labels. Every function accepts numpy arrays or CPU tensors and
raises :class:`~kd_search.errors.ConfidenceInputError`, naming the input, when they cannot
be measured.
"""

from __future__ import annotations

import numpy as np

from kd_search.errors import ConfidenceInputError

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


def label_array(labels, n: int, name: str = "labels") -> np.ndarray:
    """``labels`` as n whole class numbers (int64), after checking the count and that they
    are whole; also reads predicted classes (``name`` says which in the error).

    Example:
        >>> label_array([1.0, 0.0], 2).tolist()
        [1, 0]
    """
    array = _as_array(labels, name, 1)
    if array.shape[0] != n:
        raise ConfidenceInputError(f"{name}: {array.shape[0]} rows, expected {n}")
    if (array != np.round(array)).any():
        raise ConfidenceInputError(f"{name}: class labels must be whole numbers")
    return array.astype(np.int64)


def check_aligned(teacher: np.ndarray, student: np.ndarray) -> None:
    """Raise :class:`ConfidenceInputError` unless the two tables have the same rows and classes.

    Example:
        >>> check_aligned(np.zeros((2, 2)), np.zeros((3, 2)))
        Traceback (most recent call last):
        kd_search.errors.ConfidenceInputError: row counts differ: teacher has 2, student has 3
    """
    if teacher.shape[0] != student.shape[0]:
        raise ConfidenceInputError(
            f"row counts differ: teacher has {teacher.shape[0]}, student has {student.shape[0]}"
        )
    if teacher.shape[1] != student.shape[1]:
        raise ConfidenceInputError(
            f"class counts differ: teacher has {teacher.shape[1]}, student has {student.shape[1]}"
        )
