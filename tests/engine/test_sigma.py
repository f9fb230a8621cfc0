"""sigma has one home: ``measures.sigma``; evaluation, audit and figures call it."""

import ast
import math
from pathlib import Path

import numpy as np

from kd_search.engine import measures
from kd_search.engine.audit import audit_report

PACKAGE = Path(__file__).resolve().parents[2] / "kd_search"


def test_sigma_is_the_population_std_and_nan_when_nothing_is_both_correct():
    delta = np.array([0.3, -0.1, 0.2, 0.0])
    assert measures.sigma(delta) == np.std(delta, ddof=0) != np.std(delta, ddof=1)
    assert math.isnan(measures.sigma(np.array([])))


def test_the_audit_reports_the_same_sigma_and_nan_bounds_when_undefined():
    teacher, student, labels = [[.9, .1], [.8, .2], [.3, .7]], [[.7, .3], [.6, .4], [.4, .6]], [0, 0, 1]
    report = audit_report(teacher, student, labels, resamples=50)
    delta = measures.confidence_delta(teacher, student, labels)
    assert report["sigma"] == measures.sigma(delta)
    assert measures.sigma_interval_metrics(teacher, student, labels, resamples=50, seed=0)["sigma_se"] > 0
    undefined = measures.sigma_interval_metrics([[.9, .1]] * 2, [[.2, .8]] * 2, [0, 0], resamples=50)
    assert all(math.isnan(v) for v in undefined.values()) and len(undefined) == 3


def std_calls_by_function(tree: ast.Module) -> list[tuple[str, str]]:
    """(innermost enclosing function, call) for each np.std call ('' at module level)."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and ast.unparse(child.func) in ("np.std", "numpy.std"):
                found.append((function, ast.unparse(child)))
            visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)

    visit(tree, "")
    return found


def test_only_sigma_computes_a_standard_deviation_of_delta():
    expected = {
        "engine/measures/preservation.py": [("sigma", "np.std(array, ddof=0)")],
        # The bootstrap's standard error: ddof=1 over the resamples' values, not over delta.
        "engine/measures/bootstrap.py": [("_percentile_interval", "np.std(defined, ddof=1)")],
    }
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        assert std_calls_by_function(ast.parse(path.read_text())) == expected.get(name, []), name
