"""``search.enqueue``: validated starting points, enqueued in order after the defaults (no Ray)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from tiny import tiny_study

from kd_search.engine.spec import parse_study
from kd_search.errors import StudyFileError
from kd_search.service.search.optuna_study import create_or_resume

HINTON = {"epochs_intermediate": 0, "prediction_loss": "kl", "temperature": 4.0, "alpha": 0.1}


def _study(root, enqueue):
    data = tiny_study(root)
    data["distillation"]["epochs_total"] = 2
    data["search"] = {"trials": 4, "space": {
        "alpha": {"low": 0.0, "high": 0.5}, "temperature": {"low": 1.0, "high": 8.0, "log": True},
        "layer_weight": {"low": 0.25, "high": 2.0}, "epochs_intermediate": {"choices": [0, 1]},
        "prediction_loss": {"choices": ["soft_ce", "kl"]}}, "enqueue": enqueue}
    return parse_study(data)


@pytest.mark.parametrize("entry, message", [
    ({"dropout": 0.1}, r"search.enqueue\[0\].dropout: not a name of search.space"),
    ({"prediction_loss": "mse"}, r"search.enqueue\[0\].prediction_loss: 'mse' is not one of the choices"),
    ({"alpha": 0.9}, r"search.enqueue\[0\].alpha: 0.9 is outside the range \[0.0, 0.5\]"),
])
def test_enqueued_names_and_values_are_checked(tmp_path, entry, message):
    with pytest.raises(StudyFileError, match=message) as raised:
        _study(tmp_path, [entry])
    assert "\n" not in str(raised.value)


def test_starting_points_follow_the_defaults_in_order(tmp_path):
    second = {"prediction_loss": "soft_ce", "temperature": 2.0, "layer_weight_1": 0.5}
    study = _study(tmp_path, [HINTON, second])
    optuna_study, resumed = create_or_resume(study, f"sqlite:///{tmp_path / 'optuna.db'}", num_mapped_layers=1)
    waiting = optuna_study.get_trials(states=(TrialState.WAITING,))
    assert not resumed and len(waiting) == 3
    assert waiting[0].user_attrs == {"kd_search_baseline": True}
    assert waiting[0].system_attrs["fixed_params"]["prediction_loss"] == "soft_ce"
    assert [t.system_attrs["fixed_params"] for t in waiting[1:]] == [HINTON, second]
    assert [t.user_attrs["kd_search_enqueued"] for t in waiting[1:]] == [0, 1]
