"""A tiny real trial's trust measures reach its MLflow run, its `pareto --json` item and its
model card: run_trial on a tiny random BERT, recorded by the search's own Driver (its Ray
callbacks called directly, as tests/tiny.py's finished_study does) and saved as a worker saves it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient
from tiny import tiny_study

from kd_search.cli import main
from kd_search.engine import measures
from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
from kd_search.engine.spec import parse_study
from kd_search.engine.trial import run_trial
from kd_search.service.export import model_card, save_student
from kd_search.service.search.driver import Driver
from kd_search.service.search.locations import Locations
from kd_search.service.search.optuna_study import create_or_resume
from kd_search.service.tracking import StudyTracker

MEASURES = ("sigma_train", "sigma_eval", *measures.TRUST_METRICS)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    spec = tiny_study(root, name="tiny-trust", objectives={"confidence": {"kappa": 1.0}},
                      search={"trials": 1, "sampler": "random", "enqueue_defaults": False,
                              "space": {"alpha": {"low": 0.0, "high": 0.5}}})
    # A teacher trained until it separates the classes: probabilities away from 1/2, so the
    # measures are not those of a uniform predictor.
    spec["teacher"]["fine_tune"] = {"epochs": 8, "learning_rate": 5e-3, "batch_size": 16}
    for stage in spec["distillation"]["stages"]:
        stage["learning_rate"] = 5e-3
    study = parse_study(spec)
    locations = Locations.resolve(study)
    optuna_study, _ = create_or_resume(study, locations.storage, num_mapped_layers=1)
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name, artifact_root=root / "mlartifacts")
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, 1),
                    default_hyperparameters(study, 1), [], 1, None)
    config = driver.suggest("run_00000")
    reported: list[dict] = []

    def report(metrics, _checkpoint_dir):
        reported.append(metrics)
        driver.on_result("run_00000", metrics)

    result = run_trial(study, config["params"], report, workdir=locations.workdir)
    out = locations.trial_dir(study.name, config["number"])  # as the worker saves a finished trial
    out.mkdir(parents=True)
    np.savez(out / "confidence.npz", **result.outputs)
    dumped = study.model_dump(mode="json")
    save_student(result.student, result.tokenizer, out / "student", card=model_card(dumped, result.params, result.metrics),
                 metrics=result.metrics)
    driver.on_complete("run_00000", reported[-1], error=False)
    return locations, tracker, result, config["number"]


def test_the_trial_measures_trust_on_the_arrays_it_saved(recorded):
    locations, _, result, number = recorded
    with np.load(locations.trial_dir("tiny-trust", number) / "confidence.npz") as saved:
        teacher, student, labels = saved["eval_teacher_probs"], saved["eval_student_probs"], saved["eval_labels"]
        direct = measures.trust_metrics(teacher, student, labels)
        sigma_train = float(np.std(measures.confidence_delta(saved["teacher_probs"], saved["student_probs"],
                                                               saved["labels"])))
    assert labels.size == 32  # the tiny task's eval split
    assert direct["brier_teacher"] < 0.25 and direct["kl_teacher_student"] > 0  # a trained, imperfect copy
    for name, value in direct.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert result.metrics["sigma_train"] == pytest.approx(sigma_train) == pytest.approx(result.metrics["sigma"])
    assert result.metrics["sigma_eval"] == pytest.approx(float(np.std(measures.confidence_delta(
        teacher, student, labels))))
    assert result.metrics["flip_rate"] == pytest.approx(1 - result.metrics["agreement"])


def test_the_mlflow_run_carries_the_trust_measures(recorded):
    locations, tracker, result, number = recorded
    run = MlflowClient(locations.tracking_uri).get_run(tracker.trial_run_id(number))
    for name in MEASURES:
        assert run.data.metrics[name] == pytest.approx(result.metrics[name]), name


def test_pareto_json_and_the_model_card_carry_the_trust_measures(recorded, runner, tmp_path):
    locations, _, result, number = recorded
    options = ["--workdir", str(locations.workdir)]
    shown = runner.invoke(main, ["pareto", "tiny-trust", "--json", *options])
    assert shown.exit_code == 0, shown.output
    [item] = json.loads(shown.output.strip().splitlines()[-1])
    assert item["trial"] == number
    for name in MEASURES:
        assert item[name] == pytest.approx(result.metrics[name]), name

    kept_card = (locations.trial_dir("tiny-trust", number) / "student" / "README.md").read_text()
    exported = runner.invoke(main, ["export", "tiny-trust", "--trial", str(number), "--out", str(tmp_path / "s"),
                                    *options])
    assert exported.exit_code == 0, exported.output
    for card in (kept_card, (tmp_path / "s" / "README.md").read_text()):
        lines = card.splitlines()
        assert "## Trust beyond sigma" in lines
        for name in MEASURES:
            assert f"| {name} | {result.metrics[name]:.4f} |" in lines, name
