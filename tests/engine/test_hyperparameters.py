"""The recipe-aware search space: a trial suggests only what its recipe reads, and the
effective-configuration key tells students apart (real Optuna, in-memory storage)."""

from __future__ import annotations

import optuna
import pytest

from kd_search.engine.hyperparameters import (
    READERS,
    config_key,
    default_hyperparameters,
    effective,
    reads,
    search_distributions,
    suggest,
)
from kd_search.engine.spec import parse_study
from kd_search.engine.structure_catalog import STRUCTURE_LOSSES

INTERMEDIATE_ONLY = {"beta", "gamma", "layer_weight_1", "layer_weight_2", "layer_weight_3", "weight_pkd",
                     "learning_rate_intermediate"}


def demo_like(**distillation) -> object:
    return parse_study({
        "name": "s", "student": {"teacher_layers": [2, 4, 6]},
        "distillation": {"stages": [{"name": "intermediate"}, {"name": "prediction"}], "epochs_total": 2,
                         **distillation},
        "search": {"sampler": "random", "space": {
            "epochs_intermediate": {"choices": [0, 1]}, "alpha": {"low": 0.0, "high": 0.5},
            "beta": {"low": 0.1, "high": 10.0, "log": True}, "gamma": {"low": 0.1, "high": 10.0, "log": True},
            "temperature": {"low": 1.0, "high": 8.0, "log": True}, "layer_weight": {"low": 0.25, "high": 2.0},
            "weight_pkd": {"low": 0.0, "high": 1.0}, "learning_rate_intermediate": {"low": 1e-5, "high": 1e-3},
            "learning_rate_prediction": {"low": 1e-5, "high": 1e-3},
            "prediction_loss": {"choices": ["soft_ce", "kl"]}}}})


def test_a_prediction_only_trial_receives_no_intermediate_stage_parameter():
    study = demo_like()
    distributions, defaults = search_distributions(study, 3), default_hyperparameters(study, 3)
    optuna_study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    recipes = set()
    for _ in range(30):
        trial = optuna_study.ask()
        params, dropped = suggest(trial, study, distributions, defaults)
        recipe = trial.params["epochs_intermediate"]
        recipes.add(recipe)
        assert params["epochs_prediction"] == 2 - recipe and not dropped
        if recipe == 0:
            assert not INTERMEDIATE_ONLY & set(trial.params), trial.params
        else:
            assert INTERMEDIATE_ONLY <= set(trial.params)
        assert {"alpha", "temperature", "prediction_loss", "learning_rate_prediction"} <= set(trial.params)
        optuna_study.tell(trial, [0.5, 0.05])
    assert recipes == {0, 1}


def test_an_enqueued_point_keeps_what_its_recipe_reads_and_drops_the_rest():
    study = demo_like()
    optuna_study = optuna.create_study(directions=["maximize", "minimize"])
    optuna_study.enqueue_trial({"epochs_intermediate": 0, "alpha": 0.1, "gamma": 0.35, "layer_weight_1": 2.0})
    trial = optuna_study.ask()
    params, dropped = suggest(trial, study, search_distributions(study, 3), default_hyperparameters(study, 3))
    assert dropped == ["gamma", "layer_weight_1"]
    assert trial.params["alpha"] == 0.1 and "gamma" not in trial.params
    assert params["gamma"] == 1.0  # the study's default: what a trial that never reads it carries


def test_layer_weights_are_read_only_while_beta_or_gamma_weights_a_term():
    study = demo_like(beta=0.0, gamma=0.0)
    params = default_hyperparameters(study, 3)
    assert reads(study, params, "beta") and not reads(study, params, "layer_weight_1")
    assert reads(study, params | {"gamma": 0.5}, "layer_weight_1")


def test_every_structure_loss_has_a_reader_of_its_weight():
    assert {loss for loss in STRUCTURE_LOSSES if any(r.reads(f"weight_{loss}") for r in READERS)} == set(STRUCTURE_LOSSES)


def test_kappa_bound_reads_alpha_even_without_a_prediction_stage():
    fixed = parse_study({"name": "s", "student": {"teacher_layers": [2]},
                         "distillation": {"stages": [{"name": "intermediate"}]}})
    bound = fixed.with_changes(objectives={"confidence": {"kappa": "bound"}})
    params = default_hyperparameters(fixed, 1)
    assert not reads(fixed, params, "alpha") and reads(bound, params, "alpha")
    assert reads(fixed, params, "temperature")  # beta_X is measured after every epoch


@pytest.mark.parametrize("change, same", [
    ({"gamma": 0.35, "layer_weight_1": 2.0}, True),  # not read by a prediction-only recipe
    ({"temperature": 4.0 * (1 + 1e-8)}, True),  # below what training can show
    ({"temperature": 4.0 * (1 + 1e-4)}, False),
    ({"prediction_loss": "soft_ce"}, False),  # KL carries T^2 = 16
    ({"temperature": 1.0}, False),
    ({"temperature": 1.0, "prediction_loss": "soft_ce"}, False),
])
def test_the_effective_configuration_key(change, same):
    study = demo_like()
    hinton = default_hyperparameters(study, 3) | {"epochs_intermediate": 0, "epochs_prediction": 2,
                                                  "temperature": 4.0, "prediction_loss": "kl"}
    assert (config_key(study, hinton) == config_key(study, hinton | change)) is same
    assert "gamma" not in effective(study, hinton)


def test_at_temperature_one_kl_and_soft_cross_entropy_are_one_student():
    # The demo trained trials 3 and 6 (alpha 0, T 1, lr 3e-4; kl vs soft_ce) to the same
    # student: sigma 0.05499375 and 0.05499372. KL = CE - H(teacher) and T^2 = 1.
    study = demo_like()
    at_one = default_hyperparameters(study, 3) | {"epochs_intermediate": 0, "temperature": 1.0, "alpha": 0.0}
    assert config_key(study, at_one | {"prediction_loss": "kl"}) == config_key(study, at_one | {"prediction_loss": "soft_ce"})
    at_two = at_one | {"temperature": 2.0}
    assert config_key(study, at_two | {"prediction_loss": "kl"}) != config_key(study, at_two | {"prediction_loss": "soft_ce"})


def test_with_changes_validates_and_keeps_the_rest():
    study = demo_like()
    changed = study.with_changes(distillation={"seed": 5}, search={"trials": 3})
    assert changed.training_seed == 5 and study.training_seed == 0
    assert changed.search.space == study.search.space and changed.distillation.epochs_total == 2
    with pytest.raises(Exception, match="search.trials"):
        study.with_changes(search={"trials": 0})
