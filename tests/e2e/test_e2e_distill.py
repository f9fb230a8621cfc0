"""End to end on the embedded assets: MiniLM-L6 teacher and Rotten Tomatoes, smoke limits."""

from __future__ import annotations

import json

import pytest

from kd_search.cli import main

SMOKE = "smoke"  # the shipped study, by name


@pytest.mark.e2e
def test_distill_smoke_study_end_to_end(tmp_path, runner):
    from transformers import pipeline

    out = tmp_path / "student"
    result = runner.invoke(main, ["distill", SMOKE, "--workdir", str(tmp_path / "work"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["n_both"] > 0 and 0 <= metrics["sigma"] < 0.5
    assert metrics["teacher_accuracy"] > 0.5
    # The teacher is stored once and reused by the next command.
    teachers = list((tmp_path / "work" / "teachers").iterdir())
    assert len(teachers) == 1 and (teachers[0] / "model.safetensors").is_file()
    again = runner.invoke(main, ["teacher", SMOKE, "--workdir", str(tmp_path / "work")])
    assert again.exit_code == 0 and "reused" in again.output
    prediction = pipeline("text-classification", model=str(out))("a warm, funny and moving film")
    assert prediction[0]["label"] in {"rotten", "fresh"}  # the embedded task names its classes
