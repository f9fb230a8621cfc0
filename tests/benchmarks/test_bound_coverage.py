"""The bound_coverage benchmark's configurations and counts (the benchmark itself trains for ~25 minutes)."""

import importlib.util
from pathlib import Path

import pytest

from kd_search.engine.hyperparameters import config_key, default_hyperparameters
from kd_search.engine.measures import certify
from kd_search.study_file import load_study

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bound_coverage.py"
_spec = importlib.util.spec_from_file_location("bound_coverage", _PATH)
bound_coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bound_coverage)


def test_the_configurations_are_distinct_students_starting_where_the_search_starts():
    study = load_study("smoke")
    configs = bound_coverage.draw_configurations(study, 3, 12, seed=0)
    keys = [config_key(study, params) for params in configs]
    assert len(configs) == 12 and len(set(keys)) == 12
    assert configs[0] == default_hyperparameters(study, 3)  # the study's own point, as the search's trial 0
    hinton = study.search.enqueue[0]
    assert all(configs[1][name] == pytest.approx(value) for name, value in hinton.items())
    # the random draws cover both recipes
    assert {params["epochs_intermediate"] for params in configs} == {0, 1}
    assert configs == bound_coverage.draw_configurations(study, 3, 12, seed=0)


def run(sigma: float, se: float = 0.002) -> dict:
    return {"sigma": sigma, "sigma_se": se}


def test_coverage_counts_fresh_seeds_under_the_bound_of_the_first_k_confirmations():
    tight = {"config": 0, "search": run(0.050), "confirmations": [run(0.051), run(0.049), run(0.090)],
             "fresh": [run(0.050), run(0.052), run(0.080)]}
    loose = {"config": 1, "search": run(0.100), "confirmations": [run(0.110), run(0.105), run(0.108)],
             "fresh": [run(0.104), run(0.200)]}
    two = bound_coverage.coverage_at([tight, loose], 2, kappas=[0.07])
    upper = certify([0.050, 0.051, 0.049], [0.002] * 3, kappa=1.0).upper_bound
    assert two["per_config"][0]["upper_bound"] == pytest.approx(upper)
    assert upper < 0.080  # the third fresh seed of the tight one lands above its bound
    assert two["coverage"]["n"] == 5 and two["coverage"]["rate"] == pytest.approx(3 / 5)
    assert two["coverage"]["low"] < 0.6 < two["coverage"]["high"]
    verdicts = two["at_kappa"]["0.07"]
    # tight is certified at 0.07 with two confirmations; two of its three fresh seeds hold
    assert verdicts["certified_hold_rate"]["rate"] == pytest.approx(2 / 3)
    assert verdicts["single_seed_hold_rate"]["n"] == 3
    # a third confirmation seed (0.090) widens tight's bound past kappa: nothing is certified
    three = bound_coverage.coverage_at([tight, loose], 3, kappas=[0.07])
    assert three["at_kappa"]["0.07"]["certified_hold_rate"]["n"] == 0


def test_decide_early_stops_at_the_first_decided_verdict():
    config = {"config": 0, "search": run(0.050), "confirmations": [run(0.051), run(0.049), run(0.090)],
              "fresh": [run(0.050), run(0.080)]}
    # certified at kappa 0.07 on the first confirmation already: the 0.090 seed is never trained
    verdict = bound_coverage.decided_early(config, 3, kappa=0.07)
    assert verdict.verdict.value == "certified" and verdict.seeds == 2
    early = bound_coverage.early_decision_at([config], 3, kappas=[0.07])
    assert early["at_kappa"]["0.07"]["mean_confirmation_seeds"] == 1
    assert early["at_kappa"]["0.07"]["certified_hold_rate"]["rate"] == 0.5
    # at 0.0506 the mean of the first two (0.0505) is below kappa and U above it, and so on: all three seeds
    assert bound_coverage.decided_early(config, 3, kappa=0.0506).seeds == 4
