"""The compute_to_front benchmark's curve, read from a real SQLite study (the benchmark takes ~30 minutes)."""

import importlib.util
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "compute_to_front.py"
_spec = importlib.util.spec_from_file_location("compute_to_front", _PATH)
compute_to_front = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compute_to_front)


def test_the_curve_counts_every_trials_epochs_and_only_feasible_complete_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="bench", storage=storage, directions=["maximize", "minimize"])
    alpha = {"alpha": FloatDistribution(0.0, 0.5)}
    for state, values, epochs in [(TrialState.COMPLETE, [0.8, 0.05], 4),   # feasible
                                  (TrialState.PRUNED, None, 1),             # stopped at rung 1
                                  (TrialState.COMPLETE, [0.9, 0.09], 4),    # sigma above kappa
                                  (TrialState.COMPLETE, [0.7, 0.03], 4)]:   # feasible, widens the front
        study.add_trial(create_trial(state=state, values=values, params={"alpha": 0.1}, distributions=alpha,
                                     user_attrs={"epoch": epochs}))
    curve = compute_to_front.front_curve("bench", storage, kappa=0.075)
    first = (0.8 - 0.5) * (0.075 - 0.05)
    assert [epochs for epochs, _ in curve] == [4, 5, 9, 13]
    assert [volume for _, volume in curve[:3]] == pytest.approx([first] * 3)
    assert curve[3][1] == pytest.approx(first + (0.7 - 0.5) * (0.05 - 0.03))
    assert compute_to_front.volume_at(curve, 8) == pytest.approx(first)
    assert compute_to_front.volume_at(curve, 3) == 0.0
