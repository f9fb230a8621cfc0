"""The measures (preservation, calibration, classification, input checks) pinned on small
hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from kd_search.engine import measures
from kd_search.errors import ConfidenceInputError

TEACHER = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.6, 0.4]])
STUDENT = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9], [0.55, 0.45]])
LABELS = np.array([0, 1, 0, 1, 1])
# Both correct: rows 0, 1, 3 (row 2: student wrong; row 4: both wrong).
# delta = p0_t - p0_s = [0.1, -0.1, 0.3]; mean 0.1; population variance
# ((0)^2 + (-0.2)^2 + (0.2)^2)/3 = 0.08/3.


def test_both_correct_mask():
    assert measures.both_correct_mask(TEACHER, STUDENT, LABELS).tolist() == [True, True, False, True, False]


def test_delta_by_hand():
    # sigma, the population std of this delta, is pinned in test_audit.
    delta = measures.confidence_delta(TEACHER, STUDENT, LABELS)
    np.testing.assert_allclose(delta, [0.1, -0.1, 0.3])


def test_true_class_convention_differs_on_binary():
    delta = measures.confidence_delta(TEACHER, STUDENT, LABELS, convention="true_class")
    # True class probabilities: row 0 class 0, rows 1 and 3 class 1.
    np.testing.assert_allclose(delta, [0.1, 0.1, -0.3])


def test_multiclass_uses_true_class_and_rejects_p0():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    student = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    labels = [0, 2, 1]
    np.testing.assert_allclose(measures.confidence_delta(teacher, student, labels), [0.2, 0.2])
    with pytest.raises(ConfidenceInputError, match="binary"):
        measures.confidence_delta(teacher, student, labels, convention="p0")


def test_accepts_tensors():
    delta = measures.confidence_delta(torch.tensor(TEACHER), torch.tensor(STUDENT), torch.tensor(LABELS))
    assert delta.tolist() == pytest.approx([0.1, -0.1, 0.3])  # tensors arrive as float32


def test_auto_convention_by_class_count():
    assert (measures.resolve_convention("auto", 2), measures.resolve_convention("auto", 3)) == ("p0", "true_class")
    assert measures.resolve_convention("true_class", 2) == "true_class"
    with pytest.raises(ConfidenceInputError, match="binary"):
        measures.resolve_convention("p0", 3)


def test_kappa_bound_and_phi():
    # kappa = gamma * sqrt(beta / (|X| (1 - alpha))) = 2 * sqrt(8 / (100 * 0.5)) = 0.8
    assert measures.kappa_bound(gamma=2.0, beta=8.0, num_train=100, alpha=0.5) == pytest.approx(0.8)
    assert measures.phi_cnf(0.05, 0.05) is True
    assert measures.phi_cnf(0.0501, 0.05) is False
    with pytest.raises(ConfidenceInputError, match="alpha"):
        measures.kappa_bound(gamma=1.0, beta=1.0, num_train=10, alpha=1.0)
    with pytest.raises(ConfidenceInputError):
        measures.kappa_bound(gamma=1.0, beta=1.0, num_train=0, alpha=0.0)


def test_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])
    # Bins: 0.95 -> (0.9,1] correct; 0.85 -> (0.8,0.9] wrong; 0.65 -> (0.6,0.7] correct;
    # 0.55 -> (0.5,0.6] wrong. ECE = (|1-.95| + |0-.85| + |1-.65| + |0-.55|) / 4 = 0.45
    assert measures.expected_calibration_error(probs, labels) == pytest.approx(0.45)


def test_classwise_ece_by_hand():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    labels = np.array([0, 2])
    # Six (example, class) pairs: conf/correct = (.9,1) (.05,0) (.05,0) (.2,0) (.7,0) (.1,1)
    # bins: (.8,.9]: |1-.9|; [0,.1]: {.05,.05,.1} acc 1/3 conf .2/3 -> |1/3-.0667|*3;
    # (.1,.2]: |0-.2|; (.6,.7]: |0-.7|.
    expected = (0.1 + 3 * abs(1 / 3 - 0.2 / 3) + 0.2 + 0.7) / 6
    assert measures.classwise_calibration_error(probs, labels) == pytest.approx(expected)


def test_agreement_by_hand():
    result = measures.teacher_agreement([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    # Teacher is the reference: TP=2, FN=1, FP=1 -> precision 2/3, recall 2/3.
    assert result.agreement == pytest.approx(0.6)
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3)


def test_task_metrics_by_hand():
    assert measures.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(0.75)
    assert measures.f1_score([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(0.8)
    # TP=2 TN=1 FP=1 FN=0: (2*1 - 1*0) / sqrt(3*2*1*2) = 2/sqrt(12)
    assert measures.matthews_correlation([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(2 / math.sqrt(12))
    assert measures.matthews_correlation([1, 1], [1, 1]) == 0.0
    assert measures.task_metric("mcc", [1, 0], [1, 0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("teacher", "student", "labels", "message"),
    [
        (TEACHER, STUDENT[:3], LABELS, "row counts differ"),
        (TEACHER, STUDENT, LABELS[:3], "labels"),
        (TEACHER * 1.1, STUDENT, LABELS, "sums to"),
        (np.where(TEACHER == 0.9, np.nan, TEACHER), STUDENT, LABELS, "NaN"),
        (TEACHER, STUDENT, np.array([1, 0, 1, 0, 1]), "both"),  # the teacher is always wrong
    ],
)
def test_edge_cases_raise_clear_errors(teacher, student, labels, message):
    with pytest.raises(ConfidenceInputError, match=message):
        measures.confidence_delta(teacher, student, labels)
