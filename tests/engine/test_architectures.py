"""Encoders beyond BERT: students from teacher layers, values, attention scores and the
checks that refuse what an architecture cannot do, on tiny random models of each family."""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHITECTURES, tiny_encoder_dir, tiny_study

from kd_search.engine.architectures import exposes_attention_scores, layer_stack
from kd_search.engine.compatibility import check_models
from kd_search.engine.models import (
    capture_values,
    fresh_student,
    load_classifier,
    load_tokenizer,
    student_from_teacher_layers,
    use_attention_scores,
    width_projection,
)
from kd_search.engine.spec import FreshStudentConfig, parse_study
from kd_search.errors import ModelError

SENTENCES = ["the movie was good", "a dull plot", "great fun but the plot is awful and the movie was poor"]
SCORES = [a for a in ARCHITECTURES if a != "deberta-v2"]  # DeBERTa's attention is its own: no scores


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {a: tiny_encoder_dir(root, a) for a in ARCHITECTURES}


def inputs(directory):
    return dict(load_tokenizer(str(directory))(SENTENCES, padding=True, return_tensors="pt"))


def logits(model, batch):
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_student_of_all_teacher_layers_is_the_teacher(teachers, architecture):
    teacher = load_classifier(str(teachers[architecture]), 2).eval()
    student = student_from_teacher_layers(teacher, [1, 2, 3])
    batch = inputs(teachers[architecture])
    torch.testing.assert_close(logits(student, batch), logits(teacher, batch))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_student_from_a_subset_keeps_the_chosen_layers(teachers, architecture):
    teacher = load_classifier(str(teachers[architecture]), 2)
    student = student_from_teacher_layers(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and type(student) is type(teacher)
    teacher_layers, student_layers = layer_stack(teacher)[1], layer_stack(student)[1]
    for kept, source in ((0, 0), (1, 2)):
        for (name, value), (_, expected) in zip(student_layers[kept].state_dict().items(),
                                                teacher_layers[source].state_dict().items(), strict=True):
            torch.testing.assert_close(value, expected, msg=name)
    if architecture == "modernbert":  # layer 3 is local attention in the teacher and stays so
        assert student.config.layer_types == [teacher.config.layer_types[0], teacher.config.layer_types[2]]
    assert logits(student, inputs(teachers[architecture])).shape == (3, 2)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_value_vectors_are_captured_in_every_family(teachers, architecture):
    model = load_classifier(str(teachers[architecture]), 2)
    batch = inputs(teachers[architecture])
    with capture_values(model, [1, 3]) as values:
        model(**batch)
    assert sorted(values) == [1, 3]
    assert values[3].shape == (*batch["input_ids"].shape, 32)


@pytest.mark.parametrize("architecture", SCORES)
def test_attention_scores_replace_probabilities_and_keep_the_outputs(teachers, architecture):
    model = load_classifier(str(teachers[architecture]), 2).eval()
    batch = inputs(teachers[architecture])
    expected = logits(model, batch)
    use_attention_scores(model, True)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    torch.testing.assert_close(out.logits, expected)
    scores = out.attentions[0]
    assert len(out.attentions) == 3 and scores.shape[1:] == (2, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    assert (scores[~batch["attention_mask"].bool()[:, None, None, :].expand_as(scores)] < -1e30).all()  # masked
    assert not torch.allclose(scores.softmax(-1).sum(-1), scores.sum(-1))  # scores, not probabilities
    use_attention_scores(model, False)


def test_deberta_has_no_attention_scores_to_give(teachers):
    model = load_classifier(str(teachers["deberta-v2"]), 2)
    assert not exposes_attention_scores(model.config)
    use_attention_scores(model, False)  # a no-op, not a warning per call
    with pytest.raises(ModelError, match="^DebertaV2ForSequenceClassification does not expose attention scores$"):
        use_attention_scores(model, True)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fresh_narrower_student_of_each_family_uses_the_width_projection(teachers, architecture):
    teacher = load_classifier(str(teachers[architecture]), 2)
    student = fresh_student(FreshStudentConfig(layers=2, hidden=16, heads=2, intermediate=24), teacher)
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    assert student.config.hidden_size == 16
    assert width_projection(student, teacher).dense.weight.shape == (32, 16)
    with torch.no_grad():
        hidden = student(**inputs(teachers[architecture]), output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[-1].shape[-1] == 16


def study_on(root, teacher, **distillation) -> dict:
    study = tiny_study(root)
    study["teacher"] = {"model": str(teacher)}
    study["distillation"] |= distillation
    return study


def test_deberta_with_attention_losses_is_refused_naming_loss_and_architecture(teachers, tmp_path):
    study = parse_study(study_on(tmp_path, teachers["deberta-v2"]))
    with pytest.raises(ModelError) as error:
        check_models(study)
    assert str(error.value) == (
        "TinyBERT attention loss needs attention scores, which the teacher's architecture "
        "DebertaV2ForSequenceClassification does not expose: set distillation.gamma to 0 and leave it out of "
        "search.space (hidden-state and prediction losses work)")
    minilm = parse_study(study_on(tmp_path, teachers["deberta-v2"], gamma=0.0,
                                  structure={"minilm_value": 1.0}))
    with pytest.raises(ModelError, match=r"^minilm_value needs attention scores, .* DebertaV2ForSequenceClassification"):
        check_models(minilm)
    # Hidden states and predictions only: accepted.
    check_models(parse_study(study_on(tmp_path, teachers["deberta-v2"], gamma=0.0)))


def test_a_student_of_another_vocabulary_is_refused(teachers, tmp_path):
    other = tiny_encoder_dir(tmp_path, "bert", layers=2, words=["other", "words", "entirely", *"abcdefghijk"])
    study = study_on(tmp_path, teachers["bert"])
    study["student"] = {"model": str(other)}
    with pytest.raises(ModelError, match=r"^student.model: the vocabulary of '.*' differs from the teacher's; "
                                         "teacher and student must share a tokenizer$"):
        check_models(parse_study(study))
    # A student of another family and width but the same tokenizer is accepted.
    study["student"] = {"model": str(teachers["distilbert"])}
    check_models(parse_study(study))


def test_validate_refuses_a_recipe_the_local_teacher_cannot_run(teachers, tmp_path, runner):
    from tiny import write_study

    from kd_search.cli import main

    result = runner.invoke(main, ["validate", str(write_study(tmp_path, study_on(tmp_path, teachers["deberta-v2"])))])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: TinyBERT attention loss needs attention scores, which the teacher's "
                                    "architecture DebertaV2ForSequenceClassification does not expose")
