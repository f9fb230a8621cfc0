"""Students as Hugging Face directories: save_student, export_student and the model card."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_teacher_dir
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from kd_search.engine.models import load_classifier, load_tokenizer, student_from_teacher_layers
from kd_search.service.export import export_student, model_card, save_student

SENTENCES = ["the movie was good", "a dull plot", "great fun", "the plot is awful"]
METRICS = {"trial": 3, "accuracy": 0.8125, "teacher_accuracy": 0.875, "sigma": 0.0312, "kappa": 0.05,
           "phi_cnf": True, "ece": 0.061, "agreement": 0.9, "train_seconds": 12.5, "ray_trial_id": "abc_00003"}
PARAMS = {"temperature": 4.0, "alpha": 0.25, "beta": 0.001}


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """A one-layer student cut from a tiny random two-layer teacher, with the teacher's tokenizer."""
    teacher_dir = tiny_teacher_dir(tmp_path_factory.mktemp("teacher"))
    student = student_from_teacher_layers(load_classifier(str(teacher_dir), 2), [2]).eval()
    return student, load_tokenizer(str(teacher_dir))


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits


def test_save_student_writes_a_loadable_hugging_face_directory(tiny_student, tmp_path):
    student, tokenizer = tiny_student
    card = model_card({"name": "demo", "teacher": {"model": "teacher-2x32"}, "task": {"source": "files"}}, PARAMS, METRICS)
    out = save_student(student, tokenizer, tmp_path / "out" / "student", card, METRICS | {"params": PARAMS})
    assert out == tmp_path / "out" / "student"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["student"]  # no staging directory left
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "kd_search_metrics.json"} <= files
    assert "pytorch_model.bin" not in files
    assert (out / "README.md").read_text() == card
    assert json.loads((out / "kd_search_metrics.json").read_text()) == METRICS | {"params": PARAMS}
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config.num_hidden_layers == 1
    torch.testing.assert_close(logits(loaded, AutoTokenizer.from_pretrained(out)), logits(student, tokenizer))
    assert {r["label"] for r in pipeline("text-classification", model=str(out))(SENTENCES)} <= {"LABEL_0", "LABEL_1"}


def test_save_student_without_card_or_metrics_writes_neither(tiny_student, tmp_path):
    student, tokenizer = tiny_student
    out = save_student(student, tokenizer, tmp_path / "student")
    assert (out / "config.json").is_file()
    assert not (out / "README.md").exists() and not (out / "kd_search_metrics.json").exists()


def test_save_student_metrics_json_writes_what_json_cannot_as_text(tiny_student, tmp_path):
    student, tokenizer = tiny_student
    out = save_student(student, tokenizer, tmp_path / "student", metrics={"where": tmp_path, "sigma": 0.5})
    assert json.loads((out / "kd_search_metrics.json").read_text()) == {"where": str(tmp_path), "sigma": 0.5}


@pytest.fixture
def kept_student(tiny_student, tmp_path):
    """A kept trial student as the search writes it: trials/<n>/student with its own card."""
    student, tokenizer = tiny_student
    return save_student(student, tokenizer, tmp_path / "trials" / "3" / "student", card="trial card\n",
                        metrics={"sigma": 0.1})


def test_export_student_copies_the_kept_student_with_a_fresh_card(kept_student, tmp_path):
    out = export_student(kept_student, tmp_path / "export" / "student", "fresh card\n", METRICS)
    assert out == tmp_path / "export" / "student"
    assert {p.name for p in out.iterdir()} == {p.name for p in kept_student.iterdir()}
    assert (out / "model.safetensors").read_bytes() == (kept_student / "model.safetensors").read_bytes()
    assert (out / "README.md").read_text() == "fresh card\n"
    assert json.loads((out / "kd_search_metrics.json").read_text()) == METRICS
    # The kept student is copied, never changed.
    assert (kept_student / "README.md").read_text() == "trial card\n"
    assert json.loads((kept_student / "kd_search_metrics.json").read_text()) == {"sigma": 0.1}


def test_export_student_replaces_an_existing_output_directory_whole(kept_student, tmp_path):
    out = tmp_path / "export" / "student"
    (out / "nested").mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier export")
    (out / "nested" / "weights.bin").write_bytes(b"old")
    (out / "README.md").write_text("old card\n")
    export_student(kept_student, out, "fresh card\n", METRICS)
    # Replaced, not merged: nothing of the earlier directory survives.
    assert {p.name for p in out.iterdir()} == {p.name for p in kept_student.iterdir()}
    assert (out / "README.md").read_text() == "fresh card\n"
    assert [p.name for p in out.parent.iterdir()] == ["student"]


def failing_source(tmp_path, kept_student):
    """A student directory whose copy fails part way: a dangling link among real files."""
    source = tmp_path / "broken-student"
    source.mkdir()
    (source / "config.json").write_text((kept_student / "config.json").read_text())
    (source / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    return source


def old_output(tmp_path):
    out = tmp_path / "export" / "student"
    out.mkdir(parents=True)
    (out / "config.json").write_text('{"old": true}')
    (out / "README.md").write_text("old card\n")
    return out


def test_export_student_leaves_the_old_output_intact_when_the_copy_fails(kept_student, tmp_path):
    out = old_output(tmp_path)
    with pytest.raises(OSError):  # shutil.Error: the dangling link cannot be copied
        export_student(failing_source(tmp_path, kept_student), out, "fresh card\n", METRICS)
    assert {p.name for p in out.iterdir()} == {"config.json", "README.md"}
    assert (out / "config.json").read_text() == '{"old": true}'
    assert (out / "README.md").read_text() == "old card\n"
    # A missing source fails before anything is written, the old output again untouched.
    with pytest.raises(FileNotFoundError):
        export_student(tmp_path / "no-such-student", out, "fresh card\n", METRICS)
    assert (out / "README.md").read_text() == "old card\n"
    # The next export in this process clears what the failed one staged and succeeds.
    export_student(kept_student, out, "fresh card\n", METRICS)
    assert (out / "README.md").read_text() == "fresh card\n"
    assert [p.name for p in out.parent.iterdir()] == ["student"]


def test_export_student_leaves_no_staging_directory_when_the_copy_fails(kept_student, tmp_path):
    out = old_output(tmp_path)
    with pytest.raises(OSError):
        export_student(failing_source(tmp_path, kept_student), out, "fresh card\n", METRICS)
    assert [p.name for p in out.parent.iterdir()] == ["student"]


def test_export_student_accepts_a_source_without_config_json(tmp_path):
    # export_student copies what it is given; checking that a student was kept is kept_student's job.
    source = tmp_path / "not-a-student"
    source.mkdir()
    (source / "notes.txt").write_text("x")
    out = export_student(source, tmp_path / "out", "card\n", {})
    assert {p.name for p in out.iterdir()} == {"notes.txt", "README.md", "kd_search_metrics.json"}


def test_model_card_key_lines():
    card = model_card({"name": "demo", "teacher": {"model": "embedded:minilm-l6"}, "task": {"source": "rotten_tomatoes"}}, PARAMS, METRICS)
    lines = card.splitlines()
    assert card.endswith("|\n")
    assert lines[:5] == ["---", "library_name: transformers", "pipeline_tag: text-classification",
                         "tags: [knowledge-distillation, kd-search]", "---"]
    assert lines[5] == "# demo: distilled student"
    assert "Distilled with kd-search from teacher `embedded:minilm-l6` on `rotten_tomatoes`" in card
    assert "phi_cnf holds when sigma <= kappa" in card
    metrics_table = lines[lines.index("| metric | value |"):lines.index("## Hyperparameters") - 1]
    assert metrics_table == ["| metric | value |", "|---|---|", "| trial | 3 |", "| accuracy | 0.8125 |",
                             "| teacher_accuracy | 0.8750 |", "| sigma | 0.0312 |", "| kappa | 0.0500 |",
                             "| phi_cnf | True |", "| ece | 0.0610 |", "| agreement | 0.9000 |",
                             "| train_seconds | 12.5000 |"]
    assert "ray_trial_id" not in card  # only the card's metrics, in their fixed order
    assert lines[lines.index("## Hyperparameters") + 2:] == ["| name | value |", "|---|---|", "| alpha | 0.25 |",
                                                             "| beta | 0.001 |", "| temperature | 4 |"]


def test_model_card_skips_missing_metrics_and_shows_non_floats_as_text():
    card = model_card({"name": "demo", "teacher": {"model": "t"}, "task": {"source": "d"}}, {}, {"sigma": 0.05, "kappa": None, "accuracy": 1})
    assert "| sigma | 0.0500 |" in card and "| kappa | None |" in card and "| accuracy | 1 |" in card
    assert "teacher_accuracy" not in card and "| phi_cnf |" not in card
    assert card.endswith("## Hyperparameters\n\n| name | value |\n|---|---|\n")


def test_export_student_names_the_classes_so_a_pipeline_answers_with_them(kept_student, tmp_path):
    out = export_student(kept_student, tmp_path / "named", "card\n", METRICS, ["rotten", "fresh"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "rotten", "1": "fresh"} and config["label2id"] == {"rotten": 0, "fresh": 1}
    assert {r["label"] for r in pipeline("text-classification", model=str(out))(SENTENCES)} <= {"rotten", "fresh"}
    # Bare class numbers (no names) leave the kept student's config as it is.
    plain = export_student(kept_student, tmp_path / "plain", "card\n", METRICS, None)
    assert (plain / "config.json").read_bytes() == (kept_student / "config.json").read_bytes()
