"""`kd-search audit`: real prediction files in, a report or a one-line error out."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from kd_search.cli import main

TEACHER = pd.DataFrame({"p0": [0.9, 0.2, 0.7, 0.4, 0.6], "p1": [0.1, 0.8, 0.3, 0.6, 0.4], "label": [0, 1, 0, 1, 1]})
STUDENT = pd.DataFrame({"p0": [0.8, 0.3, 0.4, 0.1, 0.55], "p1": [0.2, 0.7, 0.6, 0.9, 0.45], "label": [0, 1, 0, 1, 1]})
SIGMA = math.sqrt(0.08 / 3)  # delta over both-correct rows 0, 1, 3 = [0.1, -0.1, 0.3]


def _write(frame: pd.DataFrame, path) -> str:
    suffix = str(path).rsplit(".", 1)[-1]
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return str(path)


def _audit_json(runner, teacher, student, *extra):
    result = runner.invoke(main, ["audit", "--teacher", teacher, "--student", student, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_audit_json_report(suffix, tmp_path, runner):
    t = _write(TEACHER, tmp_path / f"t.{suffix}")
    s = _write(STUDENT, tmp_path / f"s.{suffix}")
    report = _audit_json(runner, t, s, "--kappa", "0.2")
    assert report["sigma"] == pytest.approx(SIGMA)
    assert report["mean_delta"] == pytest.approx(0.1)
    assert report["n_both"] == 3
    assert report["teacher_accuracy"] == pytest.approx(0.8)
    assert report["student_accuracy"] == pytest.approx(0.6)
    assert report["agreement"] == pytest.approx(0.8)
    assert report["kappa"] == 0.2 and report["phi_cnf"] is True
    assert {"ece_teacher", "ece_student", "classwise_ece_teacher"} <= set(report)


def test_kappa_below_sigma_fails_phi(tmp_path, runner):
    report = _audit_json(runner, _write(TEACHER, tmp_path / "t.csv"), _write(STUDENT, tmp_path / "s.csv"), "--kappa", "0.1")
    assert report["phi_cnf"] is False


def test_rows_joined_on_id(tmp_path, runner):
    teacher = TEACHER.assign(id=["a", "b", "c", "d", "e"])
    shuffled = STUDENT.assign(id=["a", "b", "c", "d", "e"]).iloc[[4, 2, 0, 3, 1]]
    report = _audit_json(runner, _write(teacher, tmp_path / "t.csv"), _write(shuffled, tmp_path / "s.csv"))
    assert report["sigma"] == pytest.approx(SIGMA)


def test_logits_are_turned_into_probabilities(tmp_path, runner):
    logits = pd.DataFrame({"logit0": np.log(STUDENT.p0) + 3.0, "logit1": np.log(STUDENT.p1) + 3.0, "label": STUDENT.label})
    report = _audit_json(runner, _write(TEACHER, tmp_path / "t.csv"), _write(logits, tmp_path / "s.csv"))
    assert report["sigma"] == pytest.approx(SIGMA)


def test_table_output(tmp_path, runner):
    result = runner.invoke(main, ["audit", "--teacher", _write(TEACHER, tmp_path / "t.csv"),
                                  "--student", _write(STUDENT, tmp_path / "s.csv"), "--kappa", "0.1"])
    assert result.exit_code == 0
    assert "sigma" in result.output and "phi_cnf does NOT hold" in result.output



GOOD = TEACHER
# (description, student file name, content: DataFrame or raw text, expected error text)
MALFORMED = [
    ("missing label", "s.csv", STUDENT.drop(columns="label"), "missing column 'label'"),
    ("no probability columns", "s.csv", STUDENT.rename(columns={"p0": "a", "p1": "b"}), "needs probability columns"),
    ("only p0", "s.csv", STUDENT.drop(columns="p1"), "needs probability columns"),
    ("rows do not sum to 1", "s.csv", STUDENT.assign(p0=STUDENT.p0 + 0.2), "sums to"),
    ("negative probability", "s.csv", STUDENT.assign(p0=-0.1, p1=1.1), "outside [0, 1]"),
    ("NaN probability", "s.csv", STUDENT.assign(p0=[0.8, np.nan, 0.4, 0.1, 0.55]), "NaN"),
    ("text probability", "s.csv", STUDENT.assign(p0=["x"] * 5), "must be numeric"),
    ("fractional label", "s.csv", STUDENT.assign(label=[0, 0.5, 0, 1, 1]), "whole class numbers"),
    ("label out of range", "s.csv", STUDENT.assign(label=[0, 1, 0, 1, 2]), "outside 0..1"),
    ("fewer rows", "s.csv", STUDENT.iloc[:4], "4 rows, but"),
    ("labels differ", "s.csv", STUDENT.assign(label=[1, 1, 0, 1, 1]), "labels differ"),
    ("three classes vs two", "s.csv", pd.DataFrame({"p0": [1 / 3] * 5, "p1": [1 / 3] * 5, "p2": [1 / 3] * 5, "label": [0, 1, 0, 1, 1]}), "3 classes"),
    ("pred disagrees", "s.csv", STUDENT.assign(pred=[1, 1, 1, 1, 1]), "'pred' disagrees"),
    ("duplicate ids", "s.csv", STUDENT.assign(id=[1, 1, 2, 3, 4]), "duplicate"),
    ("id in one file only", "s.csv", STUDENT.assign(id=[1, 2, 3, 4, 5]), "has an 'id' column but"),
    ("empty file", "s.csv", "", "cannot parse"),
    ("header only", "s.csv", "p0,p1,label\n", "no rows"),
    ("garbled jsonl", "s.jsonl", "{not json\n", "cannot parse"),
    ("garbled parquet", "s.parquet", "not parquet", "cannot parse"),
    ("unsupported suffix", "s.txt", "p0,p1,label\n", "unsupported file type"),
    ("no both-correct rows", "s.csv", STUDENT.assign(p0=[0.1, 0.9, 0.1, 0.9, 0.9], p1=[0.9, 0.1, 0.9, 0.1, 0.1]), "no example is classified correctly by both"),
]


@pytest.mark.parametrize(("what", "name", "content", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_prediction_file_one_line_exit_2(what, name, content, expected, tmp_path, runner):
    teacher = _write(GOOD, tmp_path / "t.csv")
    student = tmp_path / name
    if isinstance(content, str):
        student.write_text(content)
    else:
        _write(content, student)
    result = runner.invoke(main, ["audit", "--teacher", teacher, "--student", str(student), "--json"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0], lines[0]


def test_ids_that_differ(tmp_path, runner):
    teacher = _write(TEACHER.assign(id=list("abcde")), tmp_path / "t.csv")
    student = _write(STUDENT.assign(id=list("abcdz")), tmp_path / "s.csv")
    result = runner.invoke(main, ["audit", "--teacher", teacher, "--student", student])
    assert result.exit_code == 2
    assert "ids differ" in result.output


def test_missing_file(tmp_path, runner):
    result = runner.invoke(main, ["audit", "--teacher", str(tmp_path / "t.csv"), "--student", str(tmp_path / "s.csv")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 't.csv'}: no such file"
