"""The bootstrap intervals every evaluation reports: named per the study, seeded, NaN when undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kd_search.engine import measures
from kd_search.engine.evaluation import interval_metrics
from kd_search.engine.spec import parse_study


def study(**objectives):
    return parse_study({"name": "s", "seed": 3, "student": {"teacher_layers": [1]},
                        "objectives": {"confidence": {"resamples": 200}} | objectives})


def outputs(size: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size)
    q_teacher = rng.uniform(0.6, 1.0, size)
    q_student = np.clip(q_teacher + rng.normal(0, 0.05, size), 0.51, 1.0)
    table = lambda q: np.stack([np.where(labels == 0, q, 1 - q), np.where(labels == 0, 1 - q, q)], 1)  # noqa: E731
    return {"teacher_probs": table(q_teacher), "student_probs": table(q_student), "labels": labels}


def test_intervals_follow_the_study_settings_and_seed():
    found = interval_metrics(study(task_metric="f1"), outputs(), [0, 1, 1, 0], [0, 1, 0, 0], 2)
    sigma = measures.sigma_interval(outputs()["teacher_probs"], outputs()["student_probs"], outputs()["labels"],
                                      resamples=200, seed=3)
    assert (found["sigma_ci_low"], found["sigma_ci_high"], found["sigma_se"]) == (sigma.low, sigma.high,
                                                                                   sigma.std_error)
    assert set(found) == {"sigma_ci_low", "sigma_ci_high", "sigma_se", "f1_ci_low", "f1_ci_high"}
    assert found == interval_metrics(study(task_metric="f1"), outputs(), [0, 1, 1, 0], [0, 1, 0, 0], 2)
    wider = interval_metrics(study(task_metric="f1", confidence={"resamples": 200, "level": 0.99}), outputs(),
                             [0, 1, 1, 0], [0, 1, 0, 0], 2)
    assert wider["sigma_ci_high"] - wider["sigma_ci_low"] > found["sigma_ci_high"] - found["sigma_ci_low"]


def test_undefined_sigma_gives_nan():
    wrong = outputs()
    wrong["labels"] = 1 - wrong["labels"]  # teacher and student always wrong: no both-correct example
    found = interval_metrics(study(task_metric="accuracy"), wrong, [0, 1], [0, 1], 2)
    assert all(math.isnan(found[name]) for name in ("sigma_ci_low", "sigma_ci_high", "sigma_se"))
    assert set(found) == {"sigma_ci_low", "sigma_ci_high", "sigma_se", "accuracy_ci_low", "accuracy_ci_high"}


@pytest.mark.parametrize("name", ["accuracy", "mcc"])
def test_metric_interval_brackets_the_metric(name):
    predictions, labels = np.arange(40) % 2, (np.arange(40) // 3) % 2
    found = interval_metrics(study(task_metric=name), outputs(), predictions, labels, 2)
    estimate = measures.task_metric(name, predictions, labels)
    assert found[f"{name}_ci_low"] <= estimate <= found[f"{name}_ci_high"]
