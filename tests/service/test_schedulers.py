"""Multi-objective ASHA: its ranking, its rung decisions, the scheduler alone and under Ray Tune."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from kd_search.service.search.schedulers import (
    MultiObjectiveASHA,
    SearchTrialsOnly,
    constrained_nondominated_ranks,
    make_scheduler,
    rung_decision,
    rung_milestones,
)

KAPPA = 0.05
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def point(metric: float, sigma: float) -> tuple[float, float, float]:
    return (metric, sigma, sigma - KAPPA)


def test_ranks_match_optunas_constrained_non_domination_rank():
    rng = random.Random(0)
    for _ in range(200):
        # Few distinct values, so ties, duplicates and equal violations are common.
        points = [(rng.choice([0.6, 0.7, 0.8, 0.9]), rng.choice([0.01, 0.03, 0.05, 0.07, 0.2]),
                   rng.choice([-0.02, 0.0, 0.01, 0.03])) for _ in range(rng.randint(1, 12))]
        loss = np.array([[-m, s] for m, s, _ in points])
        penalty = np.array([max(0.0, v) for _, _, v in points])
        assert constrained_nondominated_ranks(points) == \
            _fast_non_domination_rank(loss, penalty=penalty).tolist()


def test_a_feasible_trial_outranks_an_infeasible_more_accurate_one():
    feasible, infeasible = point(0.70, 0.03), point(0.90, 0.20)
    assert constrained_nondominated_ranks([infeasible, feasible]) == [1, 0]
    assert rung_decision([feasible], infeasible, reduction_factor=2) is False
    assert rung_decision([infeasible], feasible, reduction_factor=2) is True


def test_two_infeasible_trials_compare_by_violation_alone():
    far, near = point(0.95, 0.20), point(0.50, 0.06)
    assert constrained_nondominated_ranks([far, near]) == [1, 0]
    assert rung_decision([far], near, reduction_factor=2) is True
    assert rung_decision([near], far, reduction_factor=2) is False
    # Equal violations share a front whatever their accuracy.
    assert constrained_nondominated_ranks([point(0.9, 0.1), point(0.5, 0.1)]) == [0, 0]


def test_a_dominated_feasible_trial_stops():
    assert rung_decision([point(0.80, 0.02)], point(0.70, 0.03), reduction_factor=2) is False
    assert rung_decision([point(0.70, 0.03)], point(0.80, 0.02), reduction_factor=2) is True


def test_pareto_ties_keep_both_ends_of_the_front():
    accurate, middle, calm = point(0.90, 0.04), point(0.80, 0.02), point(0.70, 0.01)
    assert constrained_nondominated_ranks([accurate, middle, calm]) == [0, 0, 0]
    # Three at the rung, two go on: the ends (infinite crowding distance), not the middle,
    # so the lowest-sigma trial survives where ASHA's accuracy cutoff (0.8) stops it.
    assert rung_decision([accurate, middle], calm, reduction_factor=2) is True
    assert rung_decision([accurate, calm], middle, reduction_factor=2) is False
    assert rung_decision([middle, calm], accurate, reduction_factor=2) is True
    # One of two goes on: equal crowding, so the higher metric wins.
    assert rung_decision([accurate], calm, reduction_factor=2) is False
    assert rung_decision([calm], accurate, reduction_factor=2) is True
    # A trial equal to one that went on goes on too: nobody is strictly ahead of it.
    assert rung_decision([middle], middle, reduction_factor=2) is True


def test_the_quota_is_the_top_ceil_n_over_eta():
    chain = [point(0.9 - 0.05 * i, 0.01 + 0.005 * i) for i in range(5)]  # each dominates the next
    assert constrained_nondominated_ranks(chain) == [0, 1, 2, 3, 4]

    def goes_on(position: int, n: int, eta: float) -> bool:
        others = [p for i, p in enumerate(chain[:n]) if i != position]
        return rung_decision(others, chain[position], reduction_factor=eta)

    assert goes_on(0, 1, 2) and goes_on(0, 2, 2) and not goes_on(1, 2, 2)  # at least one
    assert goes_on(2, 5, 2) and not goes_on(3, 5, 2)  # ceil(5 / 2) = 3
    assert goes_on(1, 5, 3) and not goes_on(2, 5, 3)  # ceil(5 / 3) = 2
    assert goes_on(1, 2, 1.5) and not goes_on(2, 3, 1.5)  # ceil(2 / 1.5) = ceil(3 / 1.5) = 2
    assert rung_milestones(1, 2, 4) == [1, 2] and rung_milestones(2, 3, 20) == [2, 6, 18]


def trial(trial_id: str) -> Trial:
    return Trial("synthetic", trial_id=trial_id, stub=True)


def result(epoch: int, accuracy: float, sigma: float, intermediate_epochs: int = 0) -> dict:
    """A trial's result at ``epoch``, after ``intermediate_epochs`` on intermediate layers."""
    return {"epoch": epoch, "prediction_epoch": max(0, epoch - intermediate_epochs), "total_epochs": 4,
            "accuracy": accuracy, "sigma": sigma, "kappa": KAPPA}


def test_the_scheduler_stops_dominated_and_infeasible_trials_asynchronously():
    scheduler = make_scheduler("mo_asha", "accuracy", total_epochs=4)
    asha = make_scheduler("asha", "accuracy", total_epochs=4)
    trials = {name: trial(name) for name in "abcdef"}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
        asha.on_trial_add(None, t)
    # Interleaved as concurrent trials report: (trial, epoch, accuracy, sigma, decision).
    steps = [
        ("a", 1, 0.70, 0.03, CONTINUE),  # first at rung 1
        ("b", 1, 0.80, 0.02, CONTINUE),  # dominates a
        ("a", 2, 0.72, 0.03, CONTINUE),  # first at rung 2
        ("c", 1, 0.90, 0.20, STOP),      # most accurate, infeasible: last of three
        ("d", 1, 0.60, 0.04, STOP),      # feasible but dominated by a and b
        ("b", 2, 0.82, 0.02, CONTINUE),  # dominates a at rung 2
        ("e", 1, 0.85, 0.01, CONTINUE),  # dominates everyone
        ("f", 1, 0.75, 0.06, STOP),      # infeasible: 5th of 6, quota 3
        ("a", 3, 0.73, 0.03, CONTINUE),  # between rungs
        ("e", 2, 0.86, 0.01, CONTINUE),
        ("a", 4, 0.74, 0.03, STOP),      # max_t, as ASHA
    ]
    for name, epoch, accuracy, sigma, decision in steps:
        assert scheduler.on_trial_result(None, trials[name], result(epoch, accuracy, sigma)) \
            == decision, (name, epoch)
    assert set(scheduler.recorded(1)) == set("abcdef") and set(scheduler.recorded(2)) == set("abe")
    # ASHA on accuracy alone keeps the infeasible c and would stop the calm a at rung 2.
    assert asha.on_trial_result(None, trials["a"], result(1, 0.70, 0.03)) == CONTINUE
    assert asha.on_trial_result(None, trials["b"], result(1, 0.80, 0.02)) == CONTINUE
    assert asha.on_trial_result(None, trials["c"], result(1, 0.90, 0.20)) == CONTINUE
    assert "num_stopped=3" in scheduler.debug_string()


def test_a_two_stage_trial_is_judged_only_once_its_predictions_have_trained():
    # Its intermediate epochs measure an untrained head: never judged there, and at each
    # rung it meets the trials with as many epochs of prediction training.
    for kind in ("mo_asha", "asha"):
        scheduler = make_scheduler(kind, "accuracy", total_epochs=4)
        one_stage, two_stage = trial("one-stage"), trial("two-stage")
        for t in (one_stage, two_stage):
            scheduler.on_trial_add(None, t)
        assert scheduler.on_trial_result(None, one_stage, result(1, 0.80, 0.02)) == CONTINUE
        for epoch in (1, 2):  # dominated by far, on intermediate layers still
            assert scheduler.on_trial_result(None, two_stage, result(epoch, 0.50, 0.30, 2)) == CONTINUE, kind
        # Its first prediction epoch is judged at rung 1 against the other's: dominated, stopped.
        assert scheduler.on_trial_result(None, two_stage, result(3, 0.50, 0.30, 2)) == STOP, kind


def test_confirmations_run_to_their_end_and_never_enter_the_rungs():
    # A confirmation trains trial 0's recipe with another seed: Ray gives it trial 0's number.
    for kind in ("mo_asha", "asha"):
        scheduler = SearchTrialsOnly(make_scheduler(kind, "accuracy", total_epochs=4))
        search = Trial("synthetic", config={"number": 0}, trial_id="search", stub=True)
        confirmation = Trial("synthetic", config={"number": 0, "seed": 1000}, trial_id="confirm", stub=True)
        weak = Trial("synthetic", config={"number": 1}, trial_id="weak", stub=True)
        for t in (search, confirmation, weak):
            scheduler.on_trial_add(None, t)
        assert scheduler.on_trial_result(None, search, result(1, 0.80, 0.02)) == CONTINUE
        # Dominated by far at the rung, and at max_t: it goes on all the same.
        for epoch in (1, 4):
            assert scheduler.on_trial_result(None, confirmation, result(epoch, 0.40, 0.40)) == CONTINUE, kind
        scheduler.on_trial_complete(None, confirmation, result(4, 0.40, 0.40))
        # The rung holds the search's trial alone: a weak search trial is still stopped against it.
        assert scheduler.on_trial_result(None, weak, result(1, 0.50, 0.30)) == STOP, kind


def test_a_resumed_trial_is_neither_recorded_nor_judged_twice():
    scheduler = MultiObjectiveASHA("accuracy", max_t=8)
    a, b, c = trial("a"), trial("b"), trial("c")
    assert scheduler.on_trial_result(None, a, result(1, 0.70, 0.03)) == CONTINUE
    assert scheduler.on_trial_result(None, a, result(2, 0.71, 0.03)) == CONTINUE
    assert scheduler.on_trial_result(None, b, result(1, 0.80, 0.02)) == CONTINUE
    assert scheduler.on_trial_result(None, b, result(2, 0.81, 0.02)) == CONTINUE
    # a crashes after epoch 2 and restarts from its epoch-1 checkpoint: its second epoch 2
    # is worse than b's, but a was judged at rung 2 already (it went on: first there).
    assert scheduler.on_trial_result(None, a, result(2, 0.60, 0.04)) == CONTINUE
    assert scheduler.recorded(2) == {"a": point(0.71, 0.03), "b": point(0.81, 0.02)}
    # The driver relaunches and a finishing trial's last result arrives again: not re-recorded.
    scheduler.on_trial_complete(None, b, result(2, 0.5, 0.5))
    assert scheduler.recorded(2)["b"] == point(0.81, 0.02)
    # A trial that ends at a rung without a result there is recorded by its completion.
    scheduler.on_trial_complete(None, c, result(1, 0.9, 0.01))
    assert set(scheduler.recorded(1)) == {"a", "b", "c"}
    scheduler.on_trial_remove(None, c)
    scheduler.on_trial_error(None, c)


def test_results_without_the_objectives_are_not_judged_and_nan_ranks_last():
    scheduler = MultiObjectiveASHA("accuracy", max_t=4)
    a, b = trial("a"), trial("b")
    assert scheduler.on_trial_result(None, a, {"nonfinite": 1, "error": "nan loss"}) == CONTINUE
    assert scheduler.on_trial_result(None, a, {"epoch": 1, "accuracy": 0.7}) == CONTINUE
    assert scheduler.recorded(1) == {}
    assert scheduler.on_trial_result(None, a, result(1, 0.1, 0.9)) == CONTINUE
    assert scheduler.on_trial_result(None, b, result(1, 0.9, math.nan)) == STOP
    assert scheduler.recorded(1)["b"] == (0.9, math.inf, math.inf)


def test_the_scheduler_pickles_saves_and_restores(tmp_path):
    scheduler = MultiObjectiveASHA("accuracy", max_t=4)
    assert scheduler.set_search_properties("loss", "min") is True and scheduler.metric == "accuracy"
    scheduler.on_trial_result(None, trial("a"), result(1, 0.7, 0.03))
    scheduler.on_trial_result(None, trial("b"), result(1, 0.9, 0.2))
    copy = pickle.loads(pickle.dumps(scheduler))
    assert copy.recorded(1) == scheduler.recorded(1) and copy.debug_string() == scheduler.debug_string()
    scheduler.save(str(tmp_path / "scheduler.json"))
    restored = MultiObjectiveASHA("accuracy", max_t=4)
    restored.restore(str(tmp_path / "scheduler.json"))
    assert restored.recorded(1) == scheduler.recorded(1)
    # Still keyed by trial id after the round trip: a is not judged again at rung 1.
    assert restored.on_trial_result(None, trial("a"), result(1, 0.1, 0.9)) == CONTINUE


def test_a_relaunched_scheduler_ranks_against_the_replayed_rungs_by_trial_number():
    # Before the restart: study trials 0 and 1 reached rung 1 (Ray trial ids lost with the driver).
    stored = {0: [result(1, 0.80, 0.02)], 1: [result(1, 0.75, 0.03), result(2, 0.78, 0.03)]}
    latecomer = result(1, 0.90, 0.20)  # the most accurate, but infeasible
    fresh = MultiObjectiveASHA("accuracy", max_t=4)
    assert fresh.on_trial_result(None, trial("new"), latecomer) == CONTINUE  # alone at the rung
    relaunched = MultiObjectiveASHA("accuracy", max_t=4)
    for number, results in stored.items():
        relaunched.replay(number, results)
    assert set(relaunched.recorded(1)) == {"trial 0", "trial 1"} and set(relaunched.recorded(2)) == {"trial 1"}
    assert relaunched.on_trial_result(None, trial("new"), latecomer) == STOP  # ranked behind both
    # Trial 1 adopted under a new Ray id, re-reporting rung 2 from its checkpoint: not judged twice.
    adopted = Trial("synthetic", trial_id="adopted", config={"number": 1}, stub=True)
    assert relaunched.on_trial_result(None, adopted, result(2, 0.10, 0.90)) == CONTINUE
    assert relaunched.recorded(2) == {"trial 1": point(0.78, 0.03)}


def test_make_scheduler_builds_each_kind():
    assert isinstance(make_scheduler("fifo", "accuracy", 4), FIFOScheduler)
    asha = make_scheduler("asha", "f1", 1)
    assert isinstance(asha, ASHAScheduler) and asha._metric == "f1" and asha._max_t == 2
    mo = make_scheduler("mo_asha", "f1", 9)
    assert mo.metric == "f1" and list(mo._rungs) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="unknown scheduler 'hyperband'"):
        make_scheduler("hyperband", "accuracy", 4)
    with pytest.raises(ValueError, match="reduction_factor"):
        MultiObjectiveASHA("accuracy", max_t=4, reduction_factor=1)
    with pytest.raises(ValueError, match="grace_period"):
        MultiObjectiveASHA("accuracy", max_t=1, grace_period=2)


# Synthetic trials, in the order Ray starts them: (accuracy at epoch 1, sigma).
SYNTHETIC = {"a": (0.70, 0.03), "b": (0.80, 0.02), "c": (0.90, 0.20),
             "d": (0.60, 0.04), "e": (0.85, 0.01), "f": (0.75, 0.06)}


def run_synthetic(scheduler: TrialScheduler, storage: str) -> dict[str, int]:
    from ray import tune

    synthetic, kappa = dict(SYNTHETIC), KAPPA

    def synthetic_trainable(config: dict) -> None:
        # Nested, so Ray pickles it by value: its workers cannot import this test module.
        accuracy, sigma = synthetic[config["name"]]
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "prediction_epoch": epoch, "total_epochs": 4, "accuracy": accuracy + 0.01 * epoch,
                         "sigma": sigma, "kappa": kappa})

    tuner = tune.Tuner(
        synthetic_trainable, param_space={"name": tune.grid_search(list(SYNTHETIC))},
        # One at a time, so the asynchronous decisions do not depend on timing; one reused
        # actor keeps it quick.
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, max_concurrent_trials=1,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, verbose=0))
    return {r.config["name"]: r.metrics["epoch"] for r in tuner.fit()}


@pytest.mark.ray
def test_under_ray_tune_mo_asha_stops_the_dominated_and_infeasible_trials(tmp_path):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert run_synthetic(make_scheduler("fifo", "accuracy", 4), str(tmp_path)) == \
            dict.fromkeys(SYNTHETIC, 4)
        scheduler = make_scheduler("mo_asha", "accuracy", 4)
        epochs = run_synthetic(scheduler, str(tmp_path))
    finally:
        ray.shutdown()
    assert epochs == {"a": 4, "b": 4, "c": 1, "d": 1, "e": 4, "f": 1}
    copy = pickle.loads(pickle.dumps(scheduler))
    assert set(copy.recorded(1)) == set(scheduler.recorded(1)) and len(copy.recorded(1)) == 6
    assert copy.recorded(2) == scheduler.recorded(2) and len(copy.recorded(2)) == 3
