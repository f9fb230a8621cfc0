"""`pareto --json` rows: a trial's record with its bootstrap bounds from the recorded metrics."""

from __future__ import annotations

from kd_search.service.search import RECORDED_METRICS, TrialRecord


def test_front_rows_carry_the_recorded_bounds():
    attrs = {"accuracy": 0.8, "f1": 0.7, "sigma_ci_low": 0.03, "sigma_ci_high": 0.06, "f1_ci_low": 0.6,
             "f1_ci_high": 0.75}
    row = TrialRecord(3, "COMPLETE", 0.7, 0.04, 0.05, {"alpha": 0.1}, attrs).as_dict("f1")
    assert (row["sigma_ci_low"], row["sigma_ci_high"], row["f1_ci_low"], row["f1_ci_high"]) == (0.03, 0.06, 0.6, 0.75)
    assert {"sigma_ci_low", "sigma_ci_high", "sigma_se", "f1_ci_low", "mcc_ci_high"} <= set(RECORDED_METRICS)


def test_trials_recorded_without_bounds_give_none():
    row = TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {}, {"accuracy": 0.8}).as_dict("accuracy")
    assert row["sigma_ci_low"] is None and row["accuracy_ci_high"] is None
