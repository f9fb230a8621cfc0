"""Labels as users have them: class numbers, class names, booleans; bad label data refused."""

from __future__ import annotations

import json

import pytest
from tiny import sentiment_rows, tiny_study, tiny_teacher_dir, write_rows, write_study

from kd_search.cli import main
from kd_search.engine.data import load_examples, load_task
from kd_search.engine.models import load_tokenizer
from kd_search.engine.spec import TaskSpec
from kd_search.errors import DataError


def files_task(root, train_rows, eval_rows, suffix=".csv", **task) -> TaskSpec:
    train = write_rows(root / f"train{suffix}", train_rows)
    evaluation = write_rows(root / f"eval{suffix}", eval_rows)
    return TaskSpec(source="files", train_file=str(train), eval_file=str(evaluation),
                    text_column="sentence", **task)


@pytest.mark.parametrize(("names", "expected"), [
    (("negative", "positive"), ("negative", "positive")),
    (("positive", "negative"), ("negative", "positive")),  # sorted: class numbers do not follow file order
    ((True, False), ("false", "true")),
    ((0, 1, 2, 3), None),
])
def test_labels_become_class_numbers_with_their_names(tmp_path, names, expected):
    task = files_task(tmp_path, sentiment_rows(40, names), sentiment_rows(12, names, seed=1), ".jsonl")
    examples = load_examples(task)
    assert examples.label_names == expected and examples.num_labels == len(names)
    assert examples.train.features["label"].dtype == "int64"
    order = expected or [str(n) for n in names]
    for part, rows in ((examples.train, sentiment_rows(40, names)), (examples.eval, sentiment_rows(12, names, seed=1))):
        assert list(part["label"]) == [order.index(str(r["label"]).lower() if expected else str(r["label"]))
                                       for r in rows]


def test_class_name_labels_tokenize_to_integer_tensors(tmp_path):
    # The reported failure: names mapped to numbers came back as the strings "0"/"1".
    task = files_task(tmp_path, sentiment_rows(20), sentiment_rows(8, seed=1), max_length=16)
    data = load_task(task, load_tokenizer(str(tiny_teacher_dir(tmp_path))))
    assert data.label_names == ("negative", "positive") and data.train.labels.dtype.is_floating_point is False
    assert data.train.labels.tolist() == [i % 2 for i in range(20)]


def test_embedded_task_names_its_classes():
    assert load_examples(TaskSpec(train_limit=50, eval_limit=10)).label_names == ("rotten", "fresh")


BAD_LABELS = {
    "unseen": ([{"sentence": "good", "label": "positive"}, {"sentence": "bad", "label": "negative"}],
               [{"sentence": "fine", "label": "neutral"}], "the eval split has labels the train split lacks: neutral"),
    "missing": ([{"sentence": "good", "label": "positive"}, {"sentence": "bad", "label": None}],
                [{"sentence": "fine", "label": "positive"}], "the train split's label column has missing values"),
    "missing_number": ([{"sentence": "good", "label": 1}, {"sentence": "bad", "label": None}],
                       [{"sentence": "fine", "label": 1}], "the train split's label column has missing values"),
    "mixed_splits": ([{"sentence": "good", "label": "positive"}, {"sentence": "bad", "label": "negative"}],
                     [{"sentence": "fine", "label": 1}], "the train and eval label columns differ in type (int, str)"),
    "negative_number": ([{"sentence": "good", "label": -1}, {"sentence": "bad", "label": 0}],
                        [{"sentence": "fine", "label": 0}], "label -1: class numbers must be 0..K-1"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_label_data_is_one_data_error(tmp_path, case):
    train, evaluation, message = BAD_LABELS[case]
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_examples(files_task(tmp_path, train, evaluation, ".jsonl"))


def test_mixed_types_in_one_column_are_refused(tmp_path):
    # JSON keeps each value's type: a column of numbers and names.
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in [{"sentence": "good", "label": "positive"},
                                                       {"sentence": "bad", "label": 0}]))
    evaluation.write_text(json.dumps({"sentence": "fine", "label": "positive"}))
    task = TaskSpec(source="files", train_file=str(train), eval_file=str(evaluation), text_column="sentence")
    with pytest.raises(DataError, match=r"^the train split's label column mixes types \(int, str\)$"):
        load_examples(task)


def test_numbers_beside_names_in_a_csv_column_are_refused(tmp_path):
    rows = [{"sentence": "good", "label": "positive"}, {"sentence": "bad", "label": "0"}]
    with pytest.raises(DataError, match="^the train split's label column mixes numbers and names$"):
        load_examples(files_task(tmp_path, rows, rows[:1]))


def bad_label_study(root, case: str) -> dict:
    train, evaluation, _ = BAD_LABELS[case]
    study = tiny_study(root)
    study["task"] |= {"train_file": str(write_rows(root / "bad-train.jsonl", train)),
                      "eval_file": str(write_rows(root / "bad-eval.jsonl", evaluation))}
    return study


@pytest.mark.parametrize("case", ["unseen", "missing", "mixed_splits"])
def test_validate_refuses_bad_labels_in_one_line(tmp_path, runner, case):
    result = runner.invoke(main, ["validate", str(write_study(tmp_path, bad_label_study(tmp_path, case)))])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    assert BAD_LABELS[case][2][:30] in result.output


@pytest.mark.parametrize("case", ["unseen", "missing", "mixed_splits"])
def test_launch_refuses_bad_labels_before_any_work(tmp_path, runner, case):
    study_file = write_study(tmp_path, bad_label_study(tmp_path, case))
    result = runner.invoke(main, ["launch", str(study_file), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: the ")
    assert "Traceback" not in result.output
    # Nothing was fine-tuned and no study was stored.
    assert not (tmp_path / "work" / "teachers").exists()
    assert not (tmp_path / "work" / "optuna.db").exists() or "tiny" not in (tmp_path / "work" / "optuna.db").read_bytes().decode("latin-1")


def test_validate_reports_the_classes_of_local_files(tmp_path, runner):
    study = tiny_study(tmp_path)
    study["task"] |= {"train_file": str(write_rows(tmp_path / "t.csv", sentiment_rows(30))),
                      "eval_file": str(write_rows(tmp_path / "e.jsonl", sentiment_rows(10, seed=2)))}
    result = runner.invoke(main, ["validate", str(write_study(tmp_path, study))])
    assert result.exit_code == 0, result.output
    assert "30 train / 10 eval examples, 2 classes: negative, positive" in result.output


def test_distilled_student_answers_class_names_in_a_pipeline(tmp_path, runner):
    from transformers import pipeline

    study = tiny_study(tmp_path)
    study["task"] |= {"train_file": str(write_rows(tmp_path / "t.csv", sentiment_rows(64))),
                      "eval_file": str(write_rows(tmp_path / "e.jsonl", sentiment_rows(32, seed=2)))}
    out = tmp_path / "student"
    result = runner.invoke(main, ["distill", str(write_study(tmp_path, study)), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    answers = pipeline("text-classification", model=str(out))(["the movie was good", "a dull plot"])
    assert {a["label"] for a in answers} <= {"negative", "positive"}
