"""Bootstrap intervals of sigma and of the task metric, the t quantile and the certified verdict."""

import math

import numpy as np
import pytest

from kd_search.engine import measures
from kd_search.errors import ConfidenceInputError


def binary_outputs(rng: np.random.Generator, size: int):
    """Teacher and student probability tables whose both-correct deltas have a known law.

    The teacher's true-class probability is Beta(8, 2); the student's is the teacher's plus
    N(0, 0.05), clipped to [0, 1]; labels are fair coin flips.
    """
    labels = rng.integers(0, 2, size)
    q_teacher = rng.beta(8, 2, size)
    q_student = np.clip(q_teacher + rng.normal(0, 0.05, size), 0, 1)
    p0_teacher = np.where(labels == 0, q_teacher, 1 - q_teacher)
    p0_student = np.where(labels == 0, q_student, 1 - q_student)
    teacher = np.stack([p0_teacher, 1 - p0_teacher], axis=1)
    student = np.stack([p0_student, 1 - p0_student], axis=1)
    return teacher, student, labels


def one_hot_table(classes, num_classes: int = 2) -> np.ndarray:
    """Confident probability rows (0.9 on the given class) for hand-built cases."""
    table = np.full((len(classes), num_classes), 0.1 / (num_classes - 1))
    table[np.arange(len(classes)), classes] = 0.9
    return table


def test_sigma_interval_covers_the_population_sigma_at_its_level():
    # The truth is sigma on a large finite population; each data set is 500 i.i.d. draws.
    rng = np.random.default_rng(7)
    teacher, student, labels = binary_outputs(rng, 200_000)
    truth = float(np.std(measures.confidence_delta(teacher, student, labels)))
    hits = 0
    for data_set in range(200):
        rows = rng.integers(0, labels.size, 500)
        interval = measures.sigma_interval(teacher[rows], student[rows], labels[rows], seed=data_set)
        hits += interval.low <= truth <= interval.high
    coverage = hits / 200
    print(f"observed coverage of the 95% sigma interval: {coverage:.3f} (200 data sets, n=500)")
    assert 0.90 <= coverage <= 0.99, coverage


def test_resampling_is_the_plain_bootstrap_over_all_examples():
    # Replays the documented draws (default_rng(seed), n indices per resample) with a loop.
    rng = np.random.default_rng(3)
    teacher, student, labels = binary_outputs(rng, 40)
    interval = measures.sigma_interval(teacher, student, labels, resamples=300, seed=11)
    delta = teacher[:, 0] - student[:, 0]
    mask = measures.both_correct_mask(teacher, student, labels)
    draws = np.random.default_rng(11).integers(0, 40, size=(300, 40))
    sigmas = [np.std(delta[rows][mask[rows]]) for rows in draws if mask[rows].any()]
    assert interval.low == pytest.approx(np.quantile(sigmas, 0.025), abs=1e-12)
    assert interval.high == pytest.approx(np.quantile(sigmas, 0.975), abs=1e-12)
    assert interval.std_error == pytest.approx(np.std(sigmas, ddof=1), abs=1e-12)
    assert interval.estimate == pytest.approx(float(np.std(measures.confidence_delta(teacher, student, labels))))


def test_same_seed_same_interval_other_seed_other_interval():
    teacher, student, labels = binary_outputs(np.random.default_rng(0), 300)
    first = measures.sigma_interval(teacher, student, labels, seed=5)
    assert measures.sigma_interval(teacher, student, labels, seed=5) == first
    other = measures.sigma_interval(teacher, student, labels, seed=6)
    assert (other.low, other.high) != (first.low, first.high)
    predictions = student.argmax(axis=1)
    assert measures.metric_interval("f1", predictions, labels, seed=5) == measures.metric_interval(
        "f1", predictions, labels, seed=5
    )


def test_one_both_correct_example_in_twenty_counts_the_resamples_without_it():
    labels = np.zeros(20, dtype=int)
    student_classes = np.ones(20, dtype=int)
    student_classes[0] = 0  # only row 0 is right for both
    interval = measures.sigma_interval(one_hot_table(labels), one_hot_table(student_classes), labels)
    # A resample misses row 0 with probability (19/20)^20 ~ 0.358.
    assert 280 <= interval.undefined <= 440
    assert interval.resamples == 1000
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_few_both_correct_examples_give_a_wide_defined_interval():
    rng = np.random.default_rng(1)
    teacher, student, labels = binary_outputs(rng, 30)
    wrong = np.arange(30) >= 4  # the student misses all but the first four rows
    student[wrong] = student[wrong][:, ::-1]
    student[~wrong] = np.where(labels[~wrong, None] == np.arange(2), 0.6, 0.4)
    few = measures.sigma_interval(teacher, student, labels)
    assert measures.both_correct_mask(teacher, student, labels).sum() == 4
    many = measures.sigma_interval(*binary_outputs(np.random.default_rng(1), 3000))
    assert 0.0 <= few.low <= few.high
    assert few.high - few.low > 5 * (many.high - many.low)


def test_no_both_correct_example_is_an_error():
    labels = np.zeros(10, dtype=int)
    with pytest.raises(ConfidenceInputError, match="no example"):
        measures.sigma_interval(one_hot_table(labels), one_hot_table(1 - labels), labels)


@pytest.mark.parametrize("level, resamples", [(0.0, 1000), (1.0, 1000), (1.5, 1000), (0.95, 1)])
def test_bad_level_or_resample_count_is_an_error(level, resamples):
    teacher, student, labels = binary_outputs(np.random.default_rng(0), 50)
    with pytest.raises(ConfidenceInputError):
        measures.sigma_interval(teacher, student, labels, level=level, resamples=resamples)
    with pytest.raises(ConfidenceInputError):
        measures.metric_interval("accuracy", labels, labels, level=level, resamples=resamples)


@pytest.mark.parametrize("name", ["accuracy", "f1", "mcc"])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_metric_interval_is_the_task_metric_with_an_interval_that_narrows(name, num_classes):
    rng = np.random.default_rng(num_classes)
    widths = []
    for n in (200, 5000):
        labels = rng.integers(0, num_classes, n)
        predictions = np.where(rng.random(n) < 0.8, labels, rng.integers(0, num_classes, n))
        interval = measures.metric_interval(name, predictions, labels, num_classes)
        assert interval.estimate == pytest.approx(measures.task_metric(name, predictions, labels, num_classes))
        assert interval.low <= interval.estimate <= interval.high
        assert interval.undefined == 0
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 3


@pytest.mark.parametrize("num_classes", [2, 4])
def test_metric_resamples_are_the_task_metric_on_the_drawn_examples(num_classes):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, num_classes, 30)
    predictions = np.where(rng.random(30) < 0.6, labels, rng.integers(0, num_classes, 30))
    draws = np.random.default_rng(2).integers(0, 30, size=(200, 30))
    for name in measures.CLASSIFICATION_METRICS:
        interval = measures.metric_interval(name, predictions, labels, num_classes, resamples=200, seed=2)
        values = [measures.task_metric(name, predictions[rows], labels[rows], num_classes) for rows in draws]
        assert (interval.low, interval.high) == pytest.approx(np.quantile(values, [0.025, 0.975]), abs=1e-12)
        assert interval.std_error == pytest.approx(np.std(values, ddof=1), abs=1e-12)


def test_metric_interval_refuses_regression_metrics_and_out_of_range_labels():
    with pytest.raises(ConfidenceInputError, match="pearson"):
        measures.metric_interval("pearson", [1, 0], [1, 0])
    with pytest.raises(ConfidenceInputError, match="0..1"):
        measures.metric_interval("accuracy", [2, 0], [1, 0])


@pytest.mark.parametrize("df, table_value", [(1, 6.314), (2, 2.920), (4, 2.132), (30, 1.697)])
def test_t_quantile_matches_the_table(df, table_value):
    assert measures.student_t_quantile(0.95, df) == pytest.approx(table_value, abs=5e-4)


def test_t_quantile_is_symmetric_and_exact_in_closed_forms():
    assert measures.student_t_quantile(0.05, 3) == pytest.approx(-measures.student_t_quantile(0.95, 3))
    assert measures.student_t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    # df = 1 is the Cauchy law: t = tan(pi (p - 1/2)); df = 2: t = (2p-1) sqrt(2 / (4p(1-p))).
    assert measures.student_t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    assert measures.student_t_quantile(0.9, 2) == pytest.approx(0.8 * math.sqrt(2 / (4 * 0.9 * 0.1)), rel=1e-10)
    with pytest.raises(ConfidenceInputError):
        measures.student_t_quantile(0.95, 0)


def test_certify_one_seed_is_never_certified():
    holds = measures.certify([0.04], [0.01], kappa=0.05)
    # sigma + z_0.95 * se = 0.04 + 1.644854 * 0.01
    assert (holds.verdict, holds.seeds) == (measures.Verdict.UNCONFIRMED, 1)
    assert holds.upper_bound == pytest.approx(0.0564485, abs=1e-6)
    assert measures.certify([0.04], [0.0], kappa=1.0).verdict is measures.Verdict.UNCONFIRMED
    assert measures.certify([0.06], [0.01], kappa=0.05).verdict is measures.Verdict.FAILS


@pytest.mark.parametrize("kappa, verdict", [(0.2, "certified"), (0.05, "unconfirmed"), (0.035, "fails")])
def test_certify_two_seeds(kappa, verdict):
    # m = 0.04, s^2 = 0.0002, sqrt(0.0002*(1+1/2) + 0.002^2) = 0.0174356, t_(0.95,1) = 6.313752
    result = measures.certify([0.03, 0.05], [0.002, 0.002], kappa=kappa)
    assert result.verdict.value == verdict
    assert result.mean_sigma == pytest.approx(0.04)
    assert result.upper_bound == pytest.approx(0.04 + 6.313752 * 0.0174356, rel=1e-5)


@pytest.mark.parametrize("kappa, verdict", [(0.09, "certified"), (0.06, "unconfirmed"), (0.045, "fails")])
def test_certify_three_seeds(kappa, verdict):
    # m = 0.05, s^2 = 0.0001, sqrt(0.0001*(1+1/3) + 0.003^2) = 0.0119304, t_(0.95,2) = 2.919986
    result = measures.certify([0.04, 0.05, 0.06], [0.003, 0.003, 0.003], kappa=kappa)
    assert result.verdict is measures.Verdict(verdict)
    assert result.upper_bound == pytest.approx(0.05 + 2.919986 * 0.0119304, rel=1e-5)
    assert (result.seeds, result.level, result.kappa) == (3, 0.95, kappa)


def test_certify_rejects_inconsistent_inputs():
    for sigmas, errors, kappa, level in [
        ([], [], 0.1, 0.95),
        ([0.1, 0.2], [0.01], 0.1, 0.95),
        ([float("nan")], [0.01], 0.1, 0.95),
        ([-0.1], [0.01], 0.1, 0.95),
        ([0.1], [0.01], float("nan"), 0.95),
        ([0.1], [0.01], 0.1, 1.0),
    ]:
        with pytest.raises(ConfidenceInputError):
            measures.certify(sigmas, errors, kappa, level)
