"""`kd-search audit --teacher-model/--student-model --study`: two models run on a study's task
give the same report as the audit of their prediction files; bad models fail in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny import tiny_study, tiny_teacher_dir, write_study
from transformers import BertTokenizerFast

from kd_search.cli import main
from kd_search.engine.data import load_task
from kd_search.engine.models import load_classifier, load_tokenizer
from kd_search.engine.spec import parse_study
from kd_search.engine.teacher import evaluate_classifier, prepare_teacher
from kd_search.study_file import load_study


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-audit")


def fine_tuned(root: Path, model: Path) -> Path:
    study = parse_study(tiny_study(root) | {"teacher": {"model": str(model), "fine_tune": {
        "epochs": 8, "learning_rate": 2e-3, "batch_size": 8}}})
    data = load_task(study.task, load_tokenizer(str(model)))
    return Path(prepare_teacher(study, data, root / "work")[0])


@pytest.fixture(scope="module")
def models(root) -> tuple[Path, Path, Path]:
    """A teacher, a student of one layer (same tokenizer), both fine-tuned, and a study on
    the tiny CSV task that audits them without fine-tuning."""
    teacher = fine_tuned(root, tiny_teacher_dir(root))
    student = fine_tuned(root, tiny_teacher_dir(root / "student", layers=1, seed=1))
    study = tiny_study(root)
    study["teacher"] = {"model": str(teacher)}
    return teacher, student, write_study(root, study)


def predictions_file(model: Path, teacher: Path, study_file: Path, path: Path) -> str:
    """The model's logits on the study's confidence split, as `audit --teacher/--student` reads them."""
    split = load_task(load_study(study_file).task, load_tokenizer(str(teacher))).train
    logits = evaluate_classifier(load_classifier(str(model), 2), split, 128, torch.device("cpu"))
    frame = pd.DataFrame(logits.double().numpy(), columns=["logit0", "logit1"])
    frame.insert(0, "label", split.labels.numpy())
    frame.insert(0, "id", split.ids)
    frame.to_csv(path, index=False)
    return str(path)


def audit_json(runner, *arguments: str) -> dict:
    result = runner.invoke(main, ["audit", *arguments, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_model_audit_equals_the_audit_of_their_predictions(models, root, runner):
    teacher, student, study_file = models
    from_models = audit_json(runner, "--teacher-model", str(teacher), "--student-model", str(student),
                             "--study", str(study_file))
    from_files = audit_json(runner, "--teacher", predictions_file(teacher, teacher, study_file, root / "t.csv"),
                            "--student", predictions_file(student, teacher, study_file, root / "s.csv"),
                            "--kappa", "0.05")
    assert from_models.pop("split") == "train"
    assert set(from_models) == set(from_files)
    for key, value in from_files.items():
        if isinstance(value, str):
            assert from_models[key] == value, key
        else:
            assert from_models[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert from_files["n"] == 64 and from_files["n_both"] > 0 and from_files["sigma"] > 0
    assert from_files["resamples"] == 1000 and from_files["ci_level"] == 0.95  # the study's settings
    assert from_files["sigma_ci_low"] <= from_files["sigma"] <= from_files["sigma_ci_high"]


def test_options_override_the_study(models, runner):
    teacher, student, study_file = models
    report = audit_json(runner, "--teacher-model", str(teacher), "--student-model", str(student),
                        "--study", str(study_file), "--level", "0.8", "--resamples", "200", "--seed", "7",
                        "--kappa", "0.3")
    assert (report["ci_level"], report["resamples"], report["seed"], report["kappa"]) == (0.8, 200, 7, 0.3)


def test_table_output_names_the_models(models, runner):
    teacher, student, study_file = models
    result = runner.invoke(main, ["audit", "--teacher-model", str(teacher), "--student-model", str(student),
                                  "--study", str(study_file)])
    assert result.exit_code == 0, result.output
    assert "sigma_ci_high" in result.output and "phi_cnf" in result.output


def with_labels(source: Path, target: Path, num_labels: int) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    (target / "config.json").write_text(json.dumps(config))
    return target


def with_other_tokenizer(source: Path, target: Path, lowercase: bool, extra_words: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target)
    known = load_tokenizer(str(source)).get_vocab()
    vocab = sorted(known, key=known.get) + list(extra_words)
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=lowercase).save_pretrained(target)
    return target


BAD_STUDENTS = [
    ("three labels", lambda s, r: with_labels(s, r / "three", 3), "3 labels, but the task has 2 classes"),
    ("missing dir", lambda s, r: r / "no-such-student", "no such directory"),
    ("no config.json", lambda s, r: (r / "empty").mkdir() or r / "empty", "no config.json"),
    ("other vocabulary", lambda s, r: with_other_tokenizer(s, r / "vocab", True, ("extra",)), "vocabulary"),
    ("other splitting", lambda s, r: with_other_tokenizer(s, r / "cased", False), "splits"),
]


@pytest.mark.parametrize(("what", "make", "expected"), BAD_STUDENTS, ids=[b[0] for b in BAD_STUDENTS])
def test_bad_student_model_one_line_exit_2(what, make, expected, models, tmp_path, runner):
    teacher, student, study_file = models
    bad = make(student, tmp_path)
    result = runner.invoke(main, ["audit", "--teacher-model", str(teacher), "--student-model", str(bad),
                                  "--study", str(study_file)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output


def test_teacher_with_wrong_label_count(models, tmp_path, runner):
    teacher, student, study_file = models
    result = runner.invoke(main, ["audit", "--teacher-model", str(with_labels(teacher, tmp_path / "t3", 3)),
                                  "--student-model", str(student), "--study", str(study_file)])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: teacher model {tmp_path / 't3'}: 3 labels, but the task has 2 classes")


FORMS = [
    ("neither", []),
    ("both", ["--teacher", "t.csv", "--student", "s.csv", "--teacher-model", "t", "--student-model", "s",
              "--study", "x.yaml"]),
    ("files without student", ["--teacher", "t.csv"]),
    ("models without study", ["--teacher-model", "t", "--student-model", "s"]),
    ("file and model", ["--teacher", "t.csv", "--student-model", "s"]),
]


@pytest.mark.parametrize(("what", "arguments"), FORMS, ids=[f[0] for f in FORMS])
def test_exactly_one_form(what, arguments, runner):
    result = runner.invoke(main, ["audit", *arguments])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: give either --teacher and --student (prediction files) or "
                                     "--teacher-model, --student-model and --study")
