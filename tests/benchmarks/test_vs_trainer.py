"""The vs_trainer benchmark's scoring and summary (the benchmark itself takes ~25 minutes)."""

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_trainer.py"
_spec = importlib.util.spec_from_file_location("vs_trainer", _PATH)
vs_trainer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs_trainer)


def test_scores_counts_only_points_within_kappa() -> None:
    figures = vs_trainer.scores([(0.8, 0.05), (0.9, 0.09), (0.7, math.nan)], kappa=0.075, seconds=3.0)
    assert figures["feasible"] == 1 and figures["trials"] == 3
    assert figures["best_feasible_accuracy"] == 0.8
    assert figures["lowest_sigma"] == 0.05
    assert figures["hypervolume"] == pytest.approx((0.8 - 0.5) * (0.075 - 0.05))


def test_summary_leaves_out_seeds_without_a_feasible_trial() -> None:
    infeasible = vs_trainer.scores([(0.9, 0.09)], kappa=0.075, seconds=2.0)
    per_seed = [{"kd_search": vs_trainer.scores([(0.8, 0.05)], 0.075, 1.0), "trainer": infeasible},
                {"kd_search": vs_trainer.scores([(0.7, 0.06)], 0.075, 1.0),
                 "trainer": vs_trainer.scores([(0.75, 0.07)], 0.075, 2.0)}]
    figures = vs_trainer.summarise(per_seed)
    assert figures["trainer_seeds_with_feasible"] == 1 and figures["kd_search_seeds_with_feasible"] == 2
    assert figures["trainer_best_feasible_accuracy_mean"] == 0.75  # the infeasible seed is not a NaN mean
    assert figures["kd_search_best_feasible_accuracy_sd"] == pytest.approx(math.sqrt(0.005))
    assert figures["ratio_wall_seconds"] == pytest.approx(0.5)
    assert figures["ratio_hypervolume"] == pytest.approx(
        ((0.3 * 0.025) + (0.2 * 0.015)) / 2 / ((0.25 * 0.005) / 2))
