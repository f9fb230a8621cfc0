"""End to end: `kd-search launch` on the smoke study with real Ray, Optuna on SQLite and MLflow,
then pareto, status, export (loaded by a pipeline, registered in MLflow) and report."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from mlflow import MlflowClient

from kd_search.cli import main
from kd_search.service import pareto
from kd_search.service.search import CONSTRAINT, Locations

SMOKE = "smoke"  # the shipped study, by name
SEARCHED = {"alpha", "beta", "gamma", "temperature", "layer_weight_1", "layer_weight_2", "layer_weight_3",
            "learning_rate_prediction", "prediction_loss", "epochs_intermediate"}
# What a prediction-only recipe (epochs_intermediate 0) does not read, so never suggests.
INTERMEDIATE_ONLY = {"beta", "gamma", "layer_weight_1", "layer_weight_2", "layer_weight_3"}


def read_by(epochs_intermediate: float) -> set[str]:
    return SEARCHED if float(epochs_intermediate) > 0 else SEARCHED - INTERMEDIATE_ONLY


@pytest.mark.e2e
def test_launch_smoke_study_then_pareto_export_report(tmp_path, runner):
    import ray
    from transformers import pipeline

    workdir = tmp_path / "work"
    options = ["--workdir", str(workdir)]
    try:
        result = runner.invoke(main, ["launch", SMOKE, *options])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    # The printed way to browse the front: `kd-search ui smoke` with this workdir.
    assert re.search(r"browse: \S*kd-search ui smoke --workdir \S+\n", result.output), result.output

    # Storage: 4 finished trials, two values each (accuracy up, sigma down) and the constraint.
    locations = Locations.resolve(None, workdir)
    stored = optuna.load_study(study_name="smoke", storage=locations.storage)
    assert [d.name for d in stored.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = stored.trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        assert len(t.values) == 2 and set(t.params) == read_by(t.params["epochs_intermediate"])
        assert t.constraints[CONSTRAINT] == pytest.approx(t.values[1] - t.user_attrs["kappa"])
    assert trials[0].user_attrs.get("kd_search_baseline")  # the TinyBERT defaults ran first

    # MLflow: one parent, four nested children with params, per-epoch metrics, tags, figures.
    client = MlflowClient(locations.tracking_uri)
    experiment = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([experiment.experiment_id], "tags.kd_search_study = 'smoke'")
    parents = [r for r in runs if r.data.tags["kd_search_role"] == "study"]
    children = [r for r in runs if r.data.tags["kd_search_role"] == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"pareto_front.png", "study_summary.json"}
    front_numbers = {t.number for t in stored.best_trials}
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["state"] == "COMPLETE" and tags["ray_trial_id"]
        assert tags["pareto"] == ("true" if int(tags["optuna_trial_number"]) in front_numbers else "false")
        assert read_by(child.data.params["epochs_intermediate"]) <= set(child.data.params)
        if float(child.data.params["epochs_intermediate"]) == 0:
            assert not INTERMEDIATE_ONLY & set(child.data.params)
        assert {"accuracy", "sigma", "kappa", "phi_cnf", "ece", "agreement", "train_seconds"} <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        pictures = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "confidence.png" in pictures
        # The layer analysis runs when the student learnt from intermediate layers.
        if float(child.data.params["epochs_intermediate"]) > 0:
            assert "layer_cka.png" in pictures
            assert 0 < child.data.metrics["cka_diagonal"] <= 1
            assert child.data.metrics["relation_intra_cosine"] >= 0  # FSD's relation analysis
        else:
            assert "layer_cka.png" not in pictures and "cka_diagonal" not in child.data.metrics

    # pareto --json is the feasible front recomputed from the stored values.
    result = runner.invoke(main, ["pareto", "smoke", "--json", *options])
    assert result.exit_code == 0, result.output
    front = json.loads(result.output.strip().splitlines()[-1])
    points = [tuple(t.values) for t in trials]
    feasible = [t.values[1] <= t.user_attrs["kappa"] for t in trials]
    assert sorted(item["trial"] for item in front) == sorted(trials[i].number for i in pareto.pareto_front(points, feasible))
    assert sorted(item["trial"] for item in front) == sorted(front_numbers)
    assert front, "the smoke study's loose kappa should leave a feasible trial"

    result = runner.invoke(main, ["status", *options])
    assert result.exit_code == 0 and "smoke" in result.output

    # Export the best feasible student (no confirmation ran: not certified, so only with
    # --allow-unconfirmed); it loads with a pipeline and is registered in MLflow.
    out = tmp_path / "student"
    result = runner.invoke(main, ["export", "smoke", "--best", "--allow-unconfirmed", "--out", str(out),
                                  "--register", "smoke-student", *options])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "sigma" in card and "kappa" in card and "phi_cnf" in card and "embedded:minilm-l6" in card
    prediction = pipeline("text-classification", model=str(out))("a warm, funny and moving film")
    assert prediction[0]["label"] in {"rotten", "fresh"}  # the embedded task names its classes
    version = client.get_model_version_by_alias("smoke-student", "best-unconfirmed")
    assert str(version.version) == "1"

    report = tmp_path / "smoke.html"
    result = runner.invoke(main, ["report", "smoke", "--out", str(report), *options])
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "Pareto front" in html and html.count("data:image/png;base64,") >= 3
    assert "smoke.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
