"""What the driver confirms next, from a real (in-memory) Optuna study: front members
first, one seed at a time while the search goes on, nothing once a verdict is decided."""

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from kd_search.engine.hyperparameters import default_hyperparameters
from kd_search.engine.spec import parse_study
from kd_search.service.search._confirm import record_confirmation
from kd_search.service.search.confirmation_queue import ConfirmationQueue, is_confirmation

KAPPA = 0.05


def study_with(trials: list[tuple[float, ...]], seeds: int = 3, decide_early: bool = True, top: int = 1,
               concurrency: int = 1):
    study = parse_study({"name": "q", "student": {"teacher_layers": [2]}, "objectives": {"confidence": {"kappa": KAPPA}},
                         "search": {"concurrency": concurrency,
                                    "confirm": {"top": top, "seeds": seeds, "decide_early": decide_early}}})
    optuna_study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, sigma, *interval in trials:  # (accuracy, sigma[, sigma_ci_low, sigma_ci_high])
        ci = {"sigma_ci_low": interval[0], "sigma_ci_high": interval[1]} if interval else {}
        optuna_study.add_trial(create_trial(values=[accuracy, sigma], params={"alpha": 0.1},
                                            distributions={"alpha": FloatDistribution(0.0, 0.5)},
                                            user_attrs={"kappa": KAPPA, "sigma_se": 0.001, **ci}))
    return study, optuna_study, ConfirmationQueue(study, optuna_study, default_hyperparameters(study, 1))


def test_during_the_search_only_front_members_are_confirmed_one_seed_at_a_time():
    study, optuna_study, queue = study_with([(0.80, 0.03), (0.70, 0.09)])  # trial 1 fails kappa
    first = queue.next(front={0}, search_over=False)
    assert is_confirmation(first) and (first["number"], first["seed"]) == (0, 1000)
    assert first["params"]["alpha"] == 0.1
    # Trial 0's first seed still trains: its second waits while search trials can use the slot.
    assert queue.next(front={0}, search_over=False) is None
    # Off the front before its confirmation started: passed over.
    assert queue.next(front=set(), search_over=False) is None
    # Once the search is over every slot helps: the next seed of the final selection.
    assert (queue.next(front=set(), search_over=True) or {}).get("seed") == 2000


def test_confirmations_hold_half_the_slots_while_search_trials_wait_the_most_accurate_first():
    # Trial 1 is the more accurate: it is confirmed first although trial 0 finished first.
    study, optuna_study, queue = study_with([(0.75, 0.03), (0.80, 0.04)], top=2, concurrency=2)
    first = queue.next(front={0, 1}, search_over=False, search_waits=True)
    assert (first["number"], first["seed"]) == (1, 1000)
    # One of the two slots is the confirmations' share: the other goes to a search trial.
    assert queue.next(front={0, 1}, search_over=False, search_waits=True) is None
    # No search trial waits (the budget is spent while the last ones run): any slot helps.
    assert queue.next(front={0, 1}, search_over=False)["number"] == 0


def test_a_decided_verdict_stops_the_confirmation():
    study, optuna_study, queue = study_with([(0.80, 0.030)])
    queue.next(front={0}, search_over=False)
    record_confirmation(optuna_study, 0, 1000, {"state": "COMPLETE", "accuracy": 0.8, "sigma": 0.031,
                                               "sigma_se": 0.001, "kappa": KAPPA})
    queue.finished(0)
    assert queue.record(0).certified  # U from two close seeds is far below kappa
    assert queue.next(front={0}, search_over=True) is None  # seeds 2000 and 3000 are never trained


def test_without_decide_early_every_seed_is_trained_and_a_failed_one_waits_for_the_next_launch():
    study, optuna_study, queue = study_with([(0.80, 0.030)], seeds=2, decide_early=False)
    assert [queue.next(front={0}, search_over=False)["seed"] for _ in range(2)] == [1000, 2000]
    record_confirmation(optuna_study, 0, 1000, {"state": "FAIL", "failure": "lost worker"})
    queue.finished(0)
    assert queue.next(front={0}, search_over=True) is None
    relaunch = ConfirmationQueue(study, optuna_study, default_hyperparameters(study, 1))
    assert relaunch.next(front={0}, search_over=True)["seed"] == 1000


def test_at_the_end_each_trial_gets_its_next_seed_before_any_trial_gets_a_second():
    # Two trials confirmed side by side: one seed each may decide both, where both seeds
    # of the first would train its second even when the first decides.
    study, optuna_study, queue = study_with([(0.80, 0.03), (0.78, 0.02)], top=2, concurrency=2)
    first, second = (queue.next(front={0, 1}, search_over=True) for _ in range(2))
    assert [(c["number"], c["seed"]) for c in (first, second)] == [(0, 1000), (1, 1000)]
    assert (queue.next(front={0, 1}, search_over=True)["number"], queue.started) == (0, {(0, 1000), (1, 1000), (0, 2000)})


def test_a_trial_that_a_certified_trial_dominates_is_not_confirmed():
    # Trial 1 is less accurate and less sure than trial 0; trial 2 straddles kappa below trial 0.
    study, optuna_study, queue = study_with([(0.80, 0.030), (0.75, 0.040), (0.70, 0.049, 0.045, 0.055)], top=2)
    assert [record.number for record, _ in queue.pending(front={0, 1}, search_over=True)][:3] == [0, 1, 2]
    record_confirmation(optuna_study, 0, 1000, {"state": "COMPLETE", "accuracy": 0.8, "sigma": 0.031,
                                               "sigma_se": 0.001, "kappa": KAPPA})
    queue.stale()
    assert queue.record(0).certified
    # Whatever their verdicts, trials 1 and 2 are off the front and less accurate than a
    # certified trial: neither is trained again.
    assert queue.next(front={0}, search_over=True) is None


def test_once_a_trial_is_certified_confirmations_wait_for_slots_no_search_trial_waits_for():
    # The first certified student comes early; after it, a confirmation of a front member is
    # a bet that it stays in the final selection, so the search settles the front first.
    study, optuna_study, queue = study_with([(0.80, 0.030), (0.82, 0.035)], top=2, concurrency=2)
    record_confirmation(optuna_study, 0, 1000, {"state": "COMPLETE", "accuracy": 0.8, "sigma": 0.031,
                                               "sigma_se": 0.001, "kappa": KAPPA})
    queue.stale()
    assert queue.record(0).certified
    assert queue.next(front={0, 1}, search_over=False, search_waits=True) is None
    # The budget is spent while the last search trials run: the slot is free for trial 1.
    assert (queue.next(front={0, 1}, search_over=False)["number"]) == 1
