"""The searchable prediction loss and the epoch budget of a searched recipe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import numpy as np
import pytest
import torch
from tiny import tiny_study

from kd_search.engine.hyperparameters import default_hyperparameters
from kd_search.engine.losses import PREDICTION_LOSSES, kl_distillation, soft_cross_entropy
from kd_search.engine.spec import PREDICTION_LOSS_NAMES, DistillationSpec, parse_study
from kd_search.engine.step import distillation_loss, plan_stages
from kd_search.engine.teacher import evaluate_classifier
from kd_search.engine.teacher_cache import TeacherLayers
from kd_search.engine.trial import hyperparameters, prepare, run_trial, teacher_outputs
from kd_search.errors import StudyFileError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prediction-loss")


def test_the_names_of_the_spec_are_those_of_the_losses():
    assert tuple(PREDICTION_LOSSES) == PREDICTION_LOSS_NAMES
    assert get_args(DistillationSpec.model_fields["prediction_loss"].annotation) == PREDICTION_LOSS_NAMES


def test_kl_choice_trains_with_the_t2_scaled_kl():
    study = parse_study({"name": "s", "student": {"teacher_layers": [2]}})
    params = default_hyperparameters(study, 1) | {"prediction_loss": "kl", "temperature": 4.0,
                                                 "epochs_intermediate": 0}
    [plan] = plan_stages(study, params, [(1, 2)])
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    loss = distillation_loss(plan, SimpleNamespace(logits=student), SimpleNamespace(logits=teacher),
                             {"labels": torch.tensor([0, 1, 2, 0])}, {})
    assert float(loss) == pytest.approx(float(kl_distillation(student, teacher, 4.0)))
    assert float(loss) != pytest.approx(float(soft_cross_entropy(student, teacher, 4.0)))


def test_trial_measures_beta_x_with_its_own_loss(root):
    study = parse_study(tiny_study(root, objectives={"confidence": {"kappa": "bound"}}))
    setup = prepare(study, root / "work")
    result = run_trial(study, {"prediction_loss": "kl", "temperature": 3.0}, setup=setup)
    _, teacher_train, _ = teacher_outputs(setup, TeacherLayers())
    student_train = evaluate_classifier(result.student, setup.data.train, 128, setup.device)
    expected = max(0.0, float(kl_distillation(student_train, teacher_train, 3.0))) * len(setup.data.train)
    soft_ce = float(soft_cross_entropy(student_train, teacher_train, 3.0)) * len(setup.data.train)
    assert result.params["prediction_loss"] == "kl"
    assert result.metrics["prediction_loss_sum"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert result.metrics["prediction_loss_sum"] != pytest.approx(soft_ce, rel=1e-2)
    assert np.isfinite(result.metrics["kappa"])


def test_set_takes_a_loss_name_and_rejects_others(root):
    setup = prepare(parse_study(tiny_study(root)), root / "work")
    assert hyperparameters(setup, {"prediction_loss": "kl", "alpha": "0.25"})["alpha"] == 0.25
    with pytest.raises(StudyFileError, match="prediction_loss must be one of soft_ce, kl"):
        hyperparameters(setup, {"prediction_loss": "mse"})
    with pytest.raises(StudyFileError, match="alpha: 'kl' is not a number"):
        hyperparameters(setup, {"alpha": "kl"})


def test_epochs_total_keeps_the_budget_of_a_prediction_only_trial(root):
    data = tiny_study(root)
    data["distillation"]["epochs_total"] = 2
    setup = prepare(parse_study(data), root / "work")
    prediction_only = hyperparameters(setup, {"epochs_intermediate": "0"})
    assert (prediction_only["epochs_intermediate"], prediction_only["epochs_prediction"]) == (0, 2)
    assert hyperparameters(setup, {"epochs_intermediate": 0, "epochs_prediction": 2})["epochs_prediction"] == 2
    with pytest.raises(StudyFileError, match="disagrees with distillation.epochs_total"):
        hyperparameters(setup, {"epochs_prediction": 3})
    plans = plan_stages(setup.study, prediction_only, setup.pairs)
    assert [(p.name, p.epochs) for p in plans] == [("prediction", 2)]


@pytest.mark.parametrize("change, message", [
    ({"epochs_total": 2, "space": {"epochs_prediction": {"choices": [1, 2]}}},
     "search.space.epochs_prediction: derived from distillation.epochs_total"),
    ({"epochs_total": 1, "space": {"epochs_intermediate": {"choices": [0, 2]}}},
     "distillation.epochs_total (1) is below the 2 epochs"),
    ({"space": {"prediction_loss": {"choices": ["kl", "mse"]}}},
     "search.space.prediction_loss: give choices among soft_ce, kl"),
])
def test_bad_recipe_spaces_are_one_line_errors(root, change, message):
    data = tiny_study(root)
    data["distillation"]["epochs_total"] = change.get("epochs_total")
    data["search"]["space"] |= change["space"]
    with pytest.raises(StudyFileError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        parse_study(data)
    assert "\n" not in str(raised.value)
