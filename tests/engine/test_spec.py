"""The study file: valid files load, malformed ones fail with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kd_search.cli import main
from kd_search.engine.hyperparameters import default_hyperparameters, expand_search_space
from kd_search.engine.search_settings import ParameterRange
from kd_search.engine.spec import parse_study
from kd_search.errors import StudyFileError
from kd_search.study_file import load_comparison, load_study, resolve_study_file, shipped_studies


@pytest.mark.parametrize("name", shipped_studies())
def test_shipped_studies_validate(name, runner):
    result = runner.invoke(main, ["validate", name])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")


def test_shipped_studies_live_at_the_top_of_the_checkout():
    assert {"demo", "smoke", "compare_methods", "paper/sst2_tinybert4l"} <= set(shipped_studies())
    package = Path(__file__).resolve().parents[2] / "studies"
    assert resolve_study_file("demo") == package / "demo.yaml"
    assert resolve_study_file("paper/sst2_tinybert4l.yaml") == package / "paper" / "sst2_tinybert4l.yaml"


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch, minimal_study):
    monkeypatch.chdir(tmp_path)
    Path("smoke.yaml").write_text(yaml.safe_dump(minimal_study))
    assert load_study("smoke.yaml").name == "t"
    assert load_study("smoke").name == "smoke"  # no file named "smoke": the shipped study


def test_unknown_study_name_lists_the_shipped_ones(runner):
    result = runner.invoke(main, ["launch", "dmeo"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dmeo: no such study file or shipped study"), lines
    assert "demo, " in lines[0] and "paper/sst2_tinybert4l" in lines[0]


def test_comparison_base_study_may_be_a_shipped_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"study": "smoke", "seeds": [0], "methods": {"vkd": {}}}))
    comparison, studies = load_comparison(path)
    assert studies["vkd"].name == "smoke-vkd" and studies["vkd"].task.train_limit == 256


def test_studies_lists_names_trials_and_descriptions(runner, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one row per study
    result = runner.invoke(main, ["studies"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") == 4}
    assert set(rows) == set(shipped_studies())
    assert "8" in rows["demo"] and "Small limits of the demo study" in rows["smoke"]
    assert "6 methods x 3 seeds" in rows["compare_methods"]


def test_defaults_fill_the_flat_hyperparameter_namespace(minimal_study):
    study = parse_study(minimal_study)
    params = default_hyperparameters(study, 3)
    assert params["alpha"] == 0.0 and params["temperature"] == 1.0
    assert [params[f"layer_weight_{m}"] for m in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert params["epochs_intermediate"] == 1 and params["learning_rate_prediction"] == 5e-5


def test_bootstrap_settings_default_to_95_percent_and_1000_resamples(minimal_study):
    confidence = parse_study(minimal_study).objectives.confidence
    assert (confidence.level, confidence.resamples) == (0.95, 1000)


def test_layer_weight_shorthand_expands():
    space = expand_search_space({"layer_weight": ParameterRange(low=0.5, high=2), "alpha": ParameterRange(low=0, high=0.5)}, 3)
    assert sorted(space) == ["alpha", "layer_weight_1", "layer_weight_2", "layer_weight_3"]
    with pytest.raises(StudyFileError, match="layer_weight_4"):
        expand_search_space({"layer_weight_4": ParameterRange(low=0, high=1)}, 3)


def _with(base: dict, dotted: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(base))
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


BASE = {"name": "t", "student": {"teacher_layers": [2, 4, 6]}}

# (description, yaml text or dict, text expected in the one-line error)
MALFORMED: list[tuple[str, object, str]] = [
    ("unknown top-level key", _with(BASE, "colour", "red"), "colour: unknown key"),
    ("unknown nested key", _with(BASE, "search.bogus", 1), "search.bogus: unknown key"),
    ("missing name", {"student": {"teacher_layers": [1]}}, "name: required field is missing"),
    ("missing student", {"name": "t"}, "student: required field is missing"),
    ("bad study name", _with(BASE, "name", "a b/c"), "name:"),
    ("alpha of 1", _with(BASE, "distillation.alpha", 1.0), "distillation.alpha"),
    ("negative beta", _with(BASE, "distillation.beta", -1), "distillation.beta"),
    ("zero temperature", _with(BASE, "distillation.temperature", 0), "distillation.temperature"),
    ("string trials", _with(BASE, "search.trials", "many"), "search.trials"),
    ("zero trials", _with(BASE, "search.trials", 0), "search.trials"),
    ("unknown sampler", _with(BASE, "search.sampler", "grid"), "search.sampler"),
    ("concurrency above trials", _with(_with(BASE, "search.trials", 2), "search.concurrency", 4), "concurrency"),
    ("unknown space name", _with(BASE, "search.space", {"dropout": {"low": 0, "high": 1}}), "unknown hyperparameter 'dropout'"),
    ("inverted range", _with(BASE, "search.space", {"alpha": {"low": 0.5, "high": 0.1}}), "low (0.5) must be below high"),
    ("log range at zero", _with(BASE, "search.space", {"beta": {"low": 0, "high": 1, "log": True}}), "log range needs low > 0"),
    ("range and choices", _with(BASE, "search.space", {"beta": {"low": 0, "high": 1, "choices": [1]}}), "either choices"),
    ("alpha range reaching 1", _with(BASE, "search.space", {"alpha": {"low": 0, "high": 1}}), "high must be below 1"),
    ("space on missing stage", _with(BASE, "distillation.stages", [{"name": "prediction"}]) | {"search": {"space": {"epochs_intermediate": {"choices": [1, 2]}}}}, "no stage 'intermediate'"),
    ("duplicate stages", _with(BASE, "distillation.stages", [{"name": "prediction"}, {"name": "prediction"}]), "unique"),
    ("joint with others", _with(BASE, "distillation.stages", [{"name": "joint"}, {"name": "prediction"}]), "joint"),
    ("two student sources", _with(BASE, "student.model", "prajjwal1/bert-tiny"), "exactly one of"),
    ("unsorted teacher layers", _with(BASE, "student.teacher_layers", [4, 2]), "strictly increasing"),
    ("heads do not divide hidden", {"name": "t", "student": {"config": {"layers": 2, "hidden": 30, "heads": 4}}}, "divisible"),
    ("glue without task", _with(BASE, "task.source", "glue"), "glue_task is required"),
    ("unknown glue task", _with(_with(BASE, "task.source", "glue"), "task.glue_task", "imdb"), "task.glue_task"),
    ("files without eval", _with(_with(BASE, "task.source", "files"), "task.train_file", "a.csv"), "eval_file is required"),
    ("files with bad suffix", _with(BASE, "task", {"source": "files", "train_file": "a.txt", "eval_file": "b.csv"}), "train_file must end"),
    ("max length too short", _with(BASE, "task.max_length", 4), "task.max_length"),
    ("missing local teacher", _with(BASE, "teacher.model", "./no/such/dir"), "does not exist"),
    ("unknown embedded teacher", _with(BASE, "teacher.model", "embedded:gpt2"), "unknown embedded model"),
    ("bad kappa", _with(BASE, "objectives.confidence.kappa", "tight"), "objectives.confidence.kappa"),
    ("negative kappa", _with(BASE, "objectives.confidence.kappa", -0.1), "objectives.confidence.kappa"),
    ("unknown task metric", _with(BASE, "objectives.task_metric", "bleu"), "objectives.task_metric"),
    ("interval level of 1", _with(BASE, "objectives.confidence.level", 1.0), "objectives.confidence.level"),
    ("too few resamples", _with(BASE, "objectives.confidence.resamples", 99), "objectives.confidence.resamples"),
    ("pairs without pairs", _with(BASE, "distillation.layer_map", {"kind": "pairs"}), "pairs is required"),
    ("glue task without data", _with(_with(BASE, "task.source", "glue"), "task.glue_task", "stsb"),
     "task.glue_task: Input should be 'sst2', 'cola'"),
    ("pearson on a classifier", _with(BASE, "objectives.task_metric", "pearson"),
     "objectives.task_metric: pearson scores regression; kd-search trains classifiers"),
    ("spearman on a classifier", _with(BASE, "objectives.task_metric", "spearman"), "spearman scores regression"),
    ("infinite beta", _with(BASE, "distillation.beta", float("inf")), "distillation.beta: Input should be a finite number"),
    ("nan temperature", _with(BASE, "distillation.temperature", float("nan")), "distillation.temperature: Input should be a finite"),
    ("infinite kappa", _with(BASE, "objectives.confidence.kappa", float("inf")), "objectives.confidence.kappa: Input should be a finite"),
    ("infinite range", _with(BASE, "search.space", {"alpha": {"low": 0.0, "high": float("inf")}}),
     "search.space.alpha.high: Input should be a finite number"),
    ("nan choice", _with(BASE, "search.space", {"beta": {"choices": [float("nan"), 1.0]}}), "search.space.beta.choices.0"),
    ("unparseably deep yaml", "[" * 100000, "nested too deeply to be a study file"),
    ("deeply nested value", "name: t\nstudent: {teacher_layers: [2]}\ndescription: " + "[" * 300 + "]" * 300,
     "description: Input should be a valid string"),
    ("not a mapping", "- just\n- a list\n", "must be a mapping"),
    ("broken yaml", "name: [unclosed\n", "not valid YAML at line"),
    ("empty file", "", "must be a mapping"),
]


@pytest.mark.parametrize(("what", "content", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_study_one_line_exit_2(what, content, expected, tmp_path, runner):
    path = tmp_path / "study.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_missing_study_file(tmp_path, runner):
    result = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'nope.yaml'}: no such study file"


def test_load_study_reports_path_and_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nstudent: {teacher_layers: [1]}\ndistillation: {alpha: 2}\n")
    with pytest.raises(StudyFileError, match=r"s\.yaml: distillation\.alpha: Input should be less than 1"):
        load_study(path)


def test_schema_is_json_with_study_fields(runner):
    import json

    result = runner.invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert {"name", "task", "teacher", "student", "search"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_deeply_nested_comparison_is_one_line(tmp_path, runner):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    nested = "{a: " * 300 + "1" + "}" * 300
    path = tmp_path / "compare.yaml"
    path.write_text(f"study: base.yaml\nseeds: [0]\ncommon: {nested}\nmethods: {{m: {nested}}}\n")
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {path}: methods.m: a: unknown key"

