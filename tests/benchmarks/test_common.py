"""The benchmarks' shared helper: one mean ± sd rule (the package's), validated study copies,
a strict JSON last line; and every benchmark uses it instead of its own copy."""

import argparse
import ast
import json
import math
from pathlib import Path

import pytest
from _common import format_mean_sd, json_line, mean_sd, reference_kappa, search_only, study_copy

from kd_search.errors import StudyFileError
from kd_search.service.search.records import TrialRecord
from kd_search.study_file import load_study

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_one_seed_has_no_sd_in_the_benchmarks_and_in_the_records_alike():
    assert mean_sd([0.04]) == (0.04, None) and format_mean_sd(0.04, None) == "0.0400 (one seed)"
    record = TrialRecord(3, "COMPLETE", 0.8, 0.04, 0.05, params={}, attrs={}, metric_name="accuracy")
    assert (record.sigma_mean, record.sigma_std) == mean_sd(record.seed_sigmas) == (0.04, None)
    mean, sd = mean_sd([0.02, 0.04, 0.09])
    assert mean == pytest.approx(0.05) and sd == pytest.approx(math.sqrt(0.0013))  # ddof=1
    assert mean_sd([]) == (None, None)


def test_study_copy_changes_nested_fields_and_validates_them(tmp_path):
    base = load_study("smoke")
    teacher = str(tmp_path)
    copy = search_only(base, name="copy", search__trials=3, objectives__confidence__kappa=0.1,
                       teacher={"model": teacher})
    assert (copy.name, copy.search.trials, copy.search.confirm.top) == ("copy", 3, 0)
    assert copy.objectives.confidence.kappa == 0.1 and copy.teacher.model == teacher
    assert base.search.trials != 3 and base.name == "smoke"  # the original is untouched
    with pytest.raises(StudyFileError, match="search.trials"):
        study_copy(base, search__trials=-1)


def test_the_last_line_is_strict_json(capsys):
    json_line({"ratio": math.nan, "per_seed": [1.5, math.inf], "sd": None})
    line = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(line) == {"ratio": None, "per_seed": [1.5, None], "sd": None}


def test_every_benchmark_uses_the_shared_helper_and_no_copy_of_its_rules():
    for path in sorted(BENCHMARKS.glob("[!_]*.py")):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "_common" in imported, f"{path.name} does not use benchmarks/_common.py"
        calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        assert not {"statistics.stdev", "statistics.pstdev", "np.std"} & calls, f"{path.name} computes its own sd"
        assert not any(call.endswith("model_copy") for call in calls), f"{path.name} copies a study by hand"
        last_print = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and ast.unparse(node.func) == "print" and "json.dumps" in ast.unparse(node)
                      and not ast.unparse(node).startswith("print(f")]
        assert not last_print, f"{path.name} prints JSON without json_line"


def test_the_hypervolume_reference_is_the_studys_kappa_and_a_bound_kappa_is_a_usage_error(capsys):
    demo = load_study("demo")
    assert reference_kappa(argparse.ArgumentParser(), demo, "demo") == 0.075
    bound = study_copy(demo, objectives__confidence__kappa="bound")
    with pytest.raises(SystemExit) as exit_info:
        reference_kappa(argparse.ArgumentParser(prog="bench"), bound, "my.yaml")
    assert exit_info.value.code == 2
    assert "my.yaml: objectives.confidence.kappa must be a number here" in capsys.readouterr().err
