"""Trust measures beyond sigma, each against a direct computation on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kd_search.engine import measures
from kd_search.engine.evaluation import class_sigmas
from kd_search.errors import ConfidenceInputError


def tables(n: int = 50, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    teacher = rng.dirichlet(np.ones(k), size=n)
    student = rng.dirichlet(np.ones(k), size=n) * 0.4 + teacher * 0.6
    return teacher, student, rng.integers(0, k, size=n)


@pytest.mark.parametrize("k", [2, 3])
def test_flips_count_the_changed_predictions(k):
    teacher, student, labels = tables(k=k)
    found = measures.flips(teacher, student, labels)
    changed = [int(np.argmax(t) != np.argmax(s)) for t, s in zip(teacher, student, strict=True)]
    right = [i for i in range(len(labels)) if np.argmax(teacher[i]) == labels[i]]
    assert found.flip_rate == pytest.approx(sum(changed) / len(changed))
    assert found.flip_rate_teacher_correct == pytest.approx(sum(changed[i] for i in right) / len(right))
    assert found.negative_flip_rate == pytest.approx(sum(changed[i] for i in right) / len(labels))
    # The flip rate is what agreement leaves.
    agreement = measures.teacher_agreement(teacher.argmax(1), student.argmax(1), k).agreement
    assert found.flip_rate == pytest.approx(1 - agreement)


def test_flips_among_right_answers_is_nan_when_the_teacher_gets_none_right():
    found = measures.flips([[0.9, 0.1], [0.8, 0.2]], [[0.4, 0.6], [0.7, 0.3]], [1, 1])
    assert found.flip_rate == 0.5 and math.isnan(found.flip_rate_teacher_correct)


def test_kl_brier_and_nll_by_hand():
    teacher, student, labels = tables()
    kl = np.mean([sum(p * math.log(p / q) for p, q in zip(t, s, strict=True)) for t, s in zip(teacher, student,
                                                                                              strict=True)])
    assert measures.mean_kl(teacher, student) == pytest.approx(kl)
    assert measures.mean_kl(teacher, teacher) == pytest.approx(0.0, abs=1e-12)
    brier = np.mean([sum((p - (j == y)) ** 2 for j, p in enumerate(row)) for row, y in zip(student, labels,
                                                                                          strict=True)])
    assert measures.brier_score(student, labels) == pytest.approx(brier)
    nll = -np.mean([math.log(row[y]) for row, y in zip(student, labels, strict=True)])
    assert measures.negative_log_likelihood(student, labels) == pytest.approx(nll)
    # A zero probability is floored, not infinite.
    assert measures.negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(measures.PROBABILITY_FLOOR))
    assert measures.mean_kl([[1.0, 0.0]], [[0.5, 0.5]]) == pytest.approx(math.log(2))


def test_trust_metrics_name_every_measure_for_student_and_teacher():
    teacher, student, labels = tables()
    found = measures.trust_metrics(teacher, student, labels)
    assert tuple(found) == measures.TRUST_METRICS
    assert found["brier_teacher"] == pytest.approx(measures.brier_score(teacher, labels))
    assert found["nll_teacher"] == pytest.approx(measures.negative_log_likelihood(teacher, labels))


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_reliability_bins_give_the_ece(bins):
    teacher, student, labels = tables(n=200)
    found = measures.reliability(student, labels, num_bins=bins)
    assert found.count.sum() == 200 and found.edges.size == bins + 1
    assert found.calibration_error == pytest.approx(measures.expected_calibration_error(student, labels, bins))
    confidences, correct = student.max(1), student.argmax(1) == labels
    in_top_bin = confidences > found.edges[-2]
    if in_top_bin.any():
        assert found.accuracy[-1] == pytest.approx(correct[in_top_bin].mean())
        assert found.confidence[-1] == pytest.approx(confidences[in_top_bin].mean())


def test_sigma_per_class_is_sigma_over_each_classes_both_correct_inputs():
    teacher, student, labels = tables(n=300, k=3, seed=2)
    found = measures.sigma_per_class(teacher, student, labels)
    both = (teacher.argmax(1) == labels) & (student.argmax(1) == labels)
    for k in range(3):
        rows = both & (labels == k)
        delta = teacher[rows, k] - student[rows, k]  # true-class convention: the label is k
        assert found[k] == pytest.approx(float(np.std(delta)))
    # sigma^2 = the classes' weighted within-class variances + the spread of their means, so
    # the smallest class sigma is at most the one sigma.
    delta = measures.confidence_delta(teacher, student, labels)
    assert min(found.values()) <= float(np.std(delta)) + 1e-12


def test_class_sigmas_only_on_more_than_two_classes():
    teacher, student, labels = tables(k=3)
    outputs = {"teacher_probs": teacher, "student_probs": student, "labels": labels}
    assert sorted(class_sigmas(outputs, "auto")) == ["sigma_class_0", "sigma_class_1", "sigma_class_2"]
    teacher, student, labels = tables(k=2)
    assert class_sigmas({"teacher_probs": teacher, "student_probs": student, "labels": labels}, "auto") == {}
    wrong = {"teacher_probs": [[.9, .05, .05]], "student_probs": [[.1, .8, .1]], "labels": [0]}
    assert all(math.isnan(v) for v in class_sigmas(wrong, "auto").values())


def test_bad_tables_fail_in_one_line():
    with pytest.raises(ConfidenceInputError, match="shape"):
        measures.mean_kl([[0.5, 0.5]], [[0.2, 0.3, 0.5]])
    with pytest.raises(ConfidenceInputError, match="sums to"):
        measures.brier_score([[0.5, 0.6]], [0])
    with pytest.raises(ConfidenceInputError, match="labels"):
        measures.negative_log_likelihood([[0.5, 0.5]], [0, 1])

