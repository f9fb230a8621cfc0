"""`kd-search compare`: methods of one comparison file, each over several seeds, one teacher."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient
from tiny import tiny_study, write_study

from kd_search.cli import main


def comparison_file(tmp_path, **extra) -> str:
    base = tiny_study(tmp_path)
    base["distillation"]["stages"] = [{"name": "joint", "epochs": 1, "learning_rate": 1e-3}]
    write_study(tmp_path, base)
    comparison = {"study": "study.yaml", "seeds": [0, 1],
                  "common": {"distillation": {"alpha": 0.5, "prediction_loss": "kl", "temperature": 4.0}},
                  "methods": {"vkd": {"distillation": {"stages": [{"name": "prediction", "epochs": 1,
                                                                   "learning_rate": 1e-3}]}},
                              "fsd": {"distillation": {"beta": 0.0, "gamma": 0.0,
                                                       "structure": {"fsd_intra": 1.0, "fsd_local": 1.0}}}},
                  **extra}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(comparison, sort_keys=False))
    return str(path)


def test_compare_runs_every_method_per_seed_with_one_teacher(tmp_path, runner):
    result = runner.invoke(main, ["compare", comparison_file(tmp_path), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "work" / "compare" / "compare" / "runs.json").read_text())
    assert [(r["method"], r["seed"]) for r in runs] == [("vkd", 0), ("vkd", 1), ("fsd", 0), ("fsd", 1)]
    assert len({r["teacher_accuracy"] for r in runs}) == 1  # the seed moves the student, not the teacher
    assert len(list((tmp_path / "work" / "teachers").iterdir())) == 1
    assert runs[0]["accuracy"] != runs[1]["accuracy"] or runs[0]["sigma"] != runs[1]["sigma"]
    assert all(0.0 <= r["cka_diagonal"] <= 1.0 for r in runs)  # VKD has no intermediate stage, still measured
    assert "| vkd |" in result.output and "| fsd |" in result.output and "±" in result.output
    assert all(r["sigma_ci_low"] <= r["sigma"] <= r["sigma_ci_high"] for r in runs) and "sigma CI" in result.output
    # MLflow: one parent run for the comparison, one nested run per method and seed.
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kd-search").experiment_id
    [parent] = client.search_runs([experiment], "tags.kd_search_role = 'study'")
    assert parent.info.run_name.startswith("compare-compare-") and parent.info.status == "FINISHED"
    assert parent.data.params["methods"] == "vkd, fsd"
    assert {"comparison.png", "study_summary.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    assert [c.info.run_name for c in children] == ["vkd-seed0", "vkd-seed1", "fsd-seed0", "fsd-seed1"]
    for child, run in zip(children, runs, strict=True):
        assert child.info.status == "FINISHED" and child.data.params["method"] == run["method"]
        assert child.data.metrics["sigma"] == pytest.approx(run["sigma"])
        assert child.data.metrics["cka_diagonal"] == pytest.approx(run["cka_diagonal"])
        assert {"confidence.png", "layer_cka.png"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "accuracy")] == [1]


def test_compare_rejects_bad_files_in_one_line(tmp_path, runner):
    for extra, expected in (({"budget": 1}, "budget"),
                            ({"methods": {"x": {"distillation": {"alpha": 2.0}}}}, "methods.x: distillation.alpha")):
        result = runner.invoke(main, ["compare", comparison_file(tmp_path, **extra)])
        assert result.exit_code == 2
        assert result.output.startswith("error: ") and expected in result.output and result.output.count("\n") == 1
