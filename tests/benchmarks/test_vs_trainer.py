"""The vs_trainer benchmark's scoring and summary (the benchmark itself takes ~25 minutes)."""

import importlib.util
import json
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
    assert figures["trainer_best_feasible_accuracy_sd"] is None  # one seed: no spread, not 0.0
    assert figures["kd_search_best_feasible_accuracy_sd"] == pytest.approx(math.sqrt(0.005))
    assert figures["ratio_wall_seconds"] == pytest.approx(0.5)
    assert figures["ratio_hypervolume"] == pytest.approx(
        ((0.3 * 0.025) + (0.2 * 0.015)) / 2 / ((0.25 * 0.005) / 2))


def test_seconds_to_reach_is_the_first_finished_trial_whose_front_matches() -> None:
    timed = [(30.0, 0.9, 0.09), (10.0, 0.7, 0.05), (20.0, 0.8, 0.06), (40.0, 0.95, 0.01)]
    # (0.7, 0.05) alone: 0.2 * 0.025 = 0.005; with (0.8, 0.06) 0.0065; the infeasible 0.9 adds
    # nothing; (0.95, 0.01) dominates them all: 0.45 * 0.065 = 0.02925.
    assert vs_trainer.seconds_to_reach(timed, target=0.0049, kappa=0.075) == 10.0
    assert vs_trainer.seconds_to_reach(timed, target=0.006, kappa=0.075) == 20.0
    assert vs_trainer.seconds_to_reach(timed, target=0.029, kappa=0.075) == 40.0
    assert math.isnan(vs_trainer.seconds_to_reach(timed, target=0.03, kappa=0.075))
    # Matching a Trainer that found nothing feasible still takes a feasible trial.
    assert math.isnan(vs_trainer.seconds_to_reach([(5.0, 0.9, 0.09), (6.0, 0.8, math.nan)], 0.0, 0.075))


def test_ratio_to_match_only_when_every_seed_matched() -> None:
    def seed(kd_seconds_to_match: float) -> dict:
        kd = vs_trainer.scores([(0.8, 0.05)], 0.075, 100.0) | {"seconds_to_match_trainer": kd_seconds_to_match}
        return {"kd_search": kd, "trainer": vs_trainer.scores([(0.7, 0.06)], 0.075, 200.0)}

    figures = vs_trainer.summarise([seed(40.0), seed(80.0)])
    assert figures["kd_search_seeds_matched"] == 2
    assert figures["ratio_seconds_to_match"] == pytest.approx(60.0 / 200.0)
    figures = vs_trainer.summarise([seed(40.0), seed(math.nan)])
    assert figures["kd_search_seeds_matched"] == 1 and math.isnan(figures["ratio_seconds_to_match"])


def test_best_certified_accuracy_is_the_most_accurate_certified_trial() -> None:
    figures = vs_trainer.scores([(0.8, 0.05), (0.78, 0.06)], 0.075, 1.0, certified=[0.78])
    assert figures["best_certified_accuracy"] == 0.78 and figures["certified"] == 1
    assert math.isnan(vs_trainer.scores([(0.8, 0.05)], 0.075, 1.0)["best_certified_accuracy"])


def test_the_trainer_starts_where_the_demo_does_and_pads_a_batch_to_its_longest_row() -> None:
    import torch

    from kd_search.study_file import load_study

    assert vs_trainer.hinton_start(load_study("demo"), 3) == {"alpha": 0.1, "temperature": 4.0, "learning_rate": 1.5e-4}
    assert vs_trainer.hinton_start(load_study("demo").with_changes(search={"enqueue": []}), 3) is None
    rows = [{"input_ids": torch.tensor([5, 6, 7]), "token_type_ids": torch.zeros(3, dtype=torch.long),
             "attention_mask": torch.ones(3, dtype=torch.long), "labels": torch.tensor(1),
             "teacher_logits": torch.tensor([0.1, 0.2])},
            {"input_ids": torch.tensor([8]), "token_type_ids": torch.zeros(1, dtype=torch.long),
             "attention_mask": torch.ones(1, dtype=torch.long), "labels": torch.tensor(0),
             "teacher_logits": torch.tensor([0.3, 0.4])}]
    batch = vs_trainer.collate(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["teacher_logits"].shape == (2, 2)


def test_a_resumed_run_reads_back_only_seeds_measured_with_the_same_settings(tmp_path) -> None:
    settings = {"scale": "demo", "trials": 8, "kappa": 0.075}
    figures = {"kd_search": {"hypervolume": 0.004}, "trainer": {"hypervolume": 0.003}}
    lines = [{"seed": 0, "settings": settings} | figures,
             {"seed": 1, "settings": settings | {"trials": 6}} | figures,
             {"seed": 2, "scale": "demo"} | figures]  # written before settings were recorded
    (tmp_path / "per_seed.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert vs_trainer.finished_seeds(tmp_path / "per_seed.jsonl", settings) == {0: figures}
    assert vs_trainer.finished_seeds(tmp_path / "missing.jsonl", settings) == {}


def test_confirmations_of_trials_outside_the_final_selection_are_counted_as_lost() -> None:
    from kd_search.service.search.records import StudySummary, TrialRecord

    def confirmed(seeds: int) -> list[dict]:
        return [{"state": "COMPLETE", "seed": 1000 * (k + 1), "sigma": 0.05} for k in range(seeds)]

    trials = [TrialRecord(0, "COMPLETE", 0.70, 0.05, 0.075, {}, {}, confirmations=confirmed(1)),  # passed later
              TrialRecord(1, "COMPLETE", 0.80, 0.05, 0.075, {}, {}, confirmations=confirmed(2)),
              # Less accurate than trial 1 but surer: no certified trial dominates it.
              TrialRecord(2, "COMPLETE", 0.75, 0.04, 0.075, {}, {}, confirmations=confirmed(1)),
              TrialRecord(3, "COMPLETE", 0.90, 0.09, 0.075, {}, {})]  # infeasible: never confirmed
    spend = vs_trainer.confirmation_spend(StudySummary("demo", "accuracy", trials), top=2)
    assert spend == {"confirmations": 4, "confirmations_outside_final_top": 1}
    older = vs_trainer.scores([(0.8, 0.05)], 0.075, 1.0)  # a seed measured before the figure existed
    figures = vs_trainer.summarise([{"kd_search": older, "trainer": older},
                                    {"kd_search": older | spend, "trainer": older}])
    assert figures["kd_search_confirmations_outside_final_top_mean"] == 1  # a figure only a later seed has
