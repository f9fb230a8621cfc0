"""Users' own data and models end to end: labels (numbers, names, booleans) x task shape
(one text, text pairs, 4 classes) x encoder family (BERT, RoBERTa, DistilBERT, DeBERTa-v2,
ModernBERT), on tiny random teachers and a few hundred examples written to CSV, JSONL,
Parquet and ``save_to_disk`` files in the test; then the class-name study of the README
through launch, confirm, export --best and a ``pipeline`` on the export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tiny import WORDS, sentiment_rows, tiny_encoder_dir, tiny_study, write_rows, write_study

from kd_search.cli import main

# (labels, task shape, architecture, train file suffix, eval file suffix): every label
# kind, every shape, every family and every file kind appears at least once.
MATRIX = {
    "names-single-bert": (("negative", "positive"), "single", "bert", ".csv", ".jsonl"),
    "bool-pair-roberta": ((False, True), "pair", "roberta", ".jsonl", ".parquet"),
    "numbers4-single-distilbert": ((0, 1, 2, 3), "single", "distilbert", ".parquet", ""),
    "names4-pair-deberta": (("anger", "joy", "fear", "calm"), "pair", "deberta-v2", "", ".csv"),
    "numbers-single-modernbert": ((0, 1), "single", "modernbert", ".csv", ".csv"),
}


def pair_rows(rows: list[dict], seed: int) -> list[dict]:
    # A second text of filler words beside each sentence: the class is in the first.
    rng = random.Random(seed)
    return [row | {"second": " ".join(rng.sample(WORDS[8:], k=3))} for row in rows]


def matrix_study(root, labels, shape, architecture, train_suffix, eval_suffix) -> dict:
    train, evaluation = sentiment_rows(240, labels), sentiment_rows(60, labels, seed=1)
    if shape == "pair":
        train, evaluation = pair_rows(train, 0), pair_rows(evaluation, 1)
    study = tiny_study(root)
    study["task"] |= {"train_file": str(write_rows(root / f"train{train_suffix}", train)),
                      "eval_file": str(write_rows(root / f"eval{eval_suffix}", evaluation)),
                      **({"text_pair_column": "second"} if shape == "pair" else {})}
    study["teacher"] = {"model": str(tiny_encoder_dir(root, architecture)),
                        "fine_tune": {"epochs": 6, "learning_rate": 3e-3, "batch_size": 16}}
    study["student"] = {"teacher_layers": [1, 3]}
    if architecture == "deberta-v2":  # no attention scores: hidden states and predictions only
        study["distillation"]["gamma"] = 0.0
    return study


@pytest.mark.parametrize("row", sorted(MATRIX))
def test_distill_on_users_data_and_encoders(tmp_path, runner, row):
    from transformers import AutoConfig, pipeline

    labels, shape, architecture, train_suffix, eval_suffix = MATRIX[row]
    study_file = write_study(tmp_path, matrix_study(tmp_path, labels, shape, architecture, train_suffix, eval_suffix))
    out = tmp_path / "student"
    result = runner.invoke(main, ["distill", str(study_file), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["teacher_accuracy"] > 1.5 / len(labels), metrics  # the teacher learnt the task
    assert metrics["n_both"] > 0 and metrics["sigma"] >= 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == architecture and AutoConfig.from_pretrained(out).num_hidden_layers == 2
    names = sorted(str(label).lower() for label in labels)
    expected = names if not isinstance(labels[0], int) or isinstance(labels[0], bool) else None
    if expected:  # names (and booleans) answer by name; class numbers keep the teacher's labels
        assert config["id2label"] == {str(i): name for i, name in enumerate(expected)}
    classifier = pipeline("text-classification", model=str(out))
    sentence = "the movie was good" if shape == "single" else {"text": "the movie was good", "text_pair": "a plot"}
    answer = classifier(sentence)
    answer = answer[0] if isinstance(answer, list) else answer
    assert answer["label"] in (expected or [f"LABEL_{i}" for i in range(len(labels))])


def test_pretrained_student_of_another_family_and_width_learns_through_the_projection(tmp_path, runner):
    # A 16-wide DistilBERT student (same tokenizer) of a 32-wide BERT teacher, with every loss on hidden states.
    study = matrix_study(tmp_path, ("negative", "positive"), "single", "bert", ".csv", ".csv")
    study["student"] = {"model": str(tiny_encoder_dir(tmp_path, "distilbert", layers=3, hidden=16))}
    result = runner.invoke(main, ["distill", str(write_study(tmp_path, study)), "--out", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["cka_diagonal"] > 0 and metrics["n_both"] > 0  # the intermediate stage ran across widths
    assert json.loads((tmp_path / "s" / "config.json").read_text())["dim"] == 16  # no projection exported


@pytest.mark.e2e
def test_four_class_text_pairs_launch_pareto_confirm_export_pipeline(tmp_path, runner):
    import ray
    from transformers import pipeline

    study = matrix_study(tmp_path, ("anger", "calm", "fear", "joy"), "pair", "roberta", ".parquet", "")
    study["name"] = "pairs4"
    study["objectives"] = {"task_metric": "f1", "confidence": {"kappa": 0.5}}
    options = ["--workdir", str(tmp_path / "work")]
    try:
        launched = runner.invoke(main, ["launch", str(write_study(tmp_path, study)), *options])
        assert launched.exit_code == 0, launched.output
        confirmed = runner.invoke(main, ["confirm", "pairs4", "--top", "1", *options])
        assert confirmed.exit_code == 0, confirmed.output
    finally:
        ray.shutdown()
    front = runner.invoke(main, ["pareto", "pairs4", "--json", *options])
    assert front.exit_code == 0 and json.loads(front.output.strip().splitlines()[-1]), front.output
    exported = runner.invoke(main, ["export", "pairs4", "--best", "--out", str(tmp_path / "out"), *options])
    assert exported.exit_code == 0, exported.output
    answer = pipeline("text-classification", model=str(tmp_path / "out"))(
        {"text": "the movie was good", "text_pair": "a plot"})
    answer = answer[0] if isinstance(answer, list) else answer
    assert answer["label"] in {"anger", "calm", "fear", "joy"}


def test_deberta_with_the_attention_loss_is_refused_before_any_work(tmp_path, runner):
    study = matrix_study(tmp_path, ("negative", "positive"), "single", "deberta-v2", ".csv", ".csv")
    study["distillation"].pop("gamma")
    result = runner.invoke(main, ["distill", str(write_study(tmp_path, study)), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(
        "error: TinyBERT attention loss needs attention scores, which the teacher's architecture "
        "DebertaV2ForSequenceClassification does not expose")
    assert not (tmp_path / "work" / "teachers").exists()  # nothing fine-tuned


EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "my_csv_study.yaml"


def fine_tuned_teacher(root: Path, train_file: Path, eval_file: Path) -> Path:
    """A tiny 6-layer BERT fine-tuned on the reviews by kd-search's own teacher step, as
    a user's fine-tuned teacher directory."""
    import shutil

    from kd_search.engine.data import load_task
    from kd_search.engine.models import load_tokenizer
    from kd_search.engine.spec import parse_study
    from kd_search.engine.teacher import prepare_teacher

    base = tiny_encoder_dir(root / "base", "bert", layers=6, positions=128)  # the example's max_length
    study = parse_study({"name": "t", "student": {"teacher_layers": [2]}, "device": "cpu", "task": {
        "source": "files", "train_file": str(train_file), "eval_file": str(eval_file), "text_column": "review",
        "label_column": "sentiment", "max_length": 16}, "teacher": {"model": str(base), "fine_tune": {
            "epochs": 6, "learning_rate": 3e-3, "batch_size": 16}}})
    path, _ = prepare_teacher(study, load_task(study.task, load_tokenizer(str(base))), root / "fine-tune")
    return Path(shutil.copytree(path, root / "my-teacher"))


@pytest.mark.e2e
def test_readme_csv_study_launch_confirm_export_pipeline(tmp_path, runner, monkeypatch):
    """The README's "my CSV and my teacher directory" study, as shipped, on tiny files:
    launch, confirm, export --best, and a pipeline on the export answering by class name."""
    import ray
    from transformers import pipeline

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert EXAMPLE.read_text().strip() in readme  # the README shows the shipped file as it is
    (tmp_path / "data").mkdir()
    rows = [{"review": r["sentence"], "sentiment": r["label"]} for r in sentiment_rows(300)]
    train = write_rows(tmp_path / "data" / "train.csv", rows[:240])
    evaluation = write_rows(tmp_path / "data" / "eval.jsonl", rows[240:])
    fine_tuned_teacher(tmp_path, train, evaluation)
    (tmp_path / "my_csv_study.yaml").write_text(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)  # the study's paths are relative to where it runs
    options = ["--workdir", str(tmp_path / "work")]
    try:
        assert runner.invoke(main, ["validate", "my_csv_study.yaml"]).output.endswith(
            "240 train / 60 eval examples, 2 classes: negative, positive)\n")
        launched = runner.invoke(main, ["launch", "my_csv_study.yaml", "--trials", "2", *options])
        assert launched.exit_code == 0, launched.output
        confirmed = runner.invoke(main, ["confirm", "my-reviews", "--top", "1", *options])
        assert confirmed.exit_code == 0, confirmed.output
    finally:
        ray.shutdown()
    exported = runner.invoke(main, ["export", "my-reviews", "--best", "--out", "my-student", *options])
    assert exported.exit_code == 0, exported.output
    config = json.loads((tmp_path / "my-student" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    answers = pipeline("text-classification", model=str(tmp_path / "my-student"))(["the movie was good", "a dull plot"])
    assert {a["label"] for a in answers} <= {"negative", "positive"}
