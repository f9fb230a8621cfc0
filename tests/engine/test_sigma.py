"""sigma has one home: ``confidence.sigma``; evaluation, audit and figures call it."""

import ast
import math
from pathlib import Path

import numpy as np

from kd_search.engine import confidence
from kd_search.engine.audit import audit_report

PACKAGE = Path(__file__).resolve().parents[2] / "kd_search"


def test_sigma_is_the_population_std_and_nan_when_nothing_is_both_correct():
    delta = np.array([0.3, -0.1, 0.2, 0.0])
    assert confidence.sigma(delta) == np.std(delta, ddof=0) != np.std(delta, ddof=1)
    assert math.isnan(confidence.sigma(np.array([])))


def test_the_audit_reports_the_same_sigma_and_nan_bounds_when_undefined():
    teacher, student, labels = [[.9, .1], [.8, .2], [.3, .7]], [[.7, .3], [.6, .4], [.4, .6]], [0, 0, 1]
    report = audit_report(teacher, student, labels, resamples=50)
    delta = confidence.confidence_delta(teacher, student, labels)
    assert report["sigma"] == confidence.sigma(delta)
    assert confidence.sigma_interval_metrics(teacher, student, labels, resamples=50, seed=0)["sigma_se"] > 0
    undefined = confidence.sigma_interval_metrics([[.9, .1]] * 2, [[.2, .8]] * 2, [0, 0], resamples=50)
    assert all(math.isnan(v) for v in undefined.values()) and len(undefined) == 3


def test_no_module_but_confidence_computes_a_standard_deviation_of_delta():
    for path in PACKAGE.rglob("*.py"):
        calls = [ast.unparse(node) for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and ast.unparse(node.func) in ("np.std", "numpy.std")]
        if path.name == "confidence.py":
            # sigma itself, and the bootstrap's standard error (ddof=1 over resamples, not delta)
            assert len(calls) == 2 and sum("ddof=1" in call for call in calls) == 1, calls
        else:
            assert not calls, f"{path}: {calls}"
