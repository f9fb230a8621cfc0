"""Whether a study's teacher and student can be distilled with its recipe, checked before any work.

Two things are refused in one line, before the data is tokenised or the teacher
fine-tuned: a pretrained student whose vocabulary differs from the teacher's (the
student learns from the teacher's outputs on the same token ids), and a loss that reads
attention scores (TinyBERT's attention loss, MiniLM's losses) where the teacher's or the
student's architecture cannot return them (:func:`~kd_search.engine.architectures.exposes_attention_scores`).
Hidden-state and prediction losses work with every architecture transformers classifies.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from kd_search.engine.architectures import exposes_attention_scores, model_class
from kd_search.engine.models import load_tokenizer, resolve_model
from kd_search.engine.spec import Study
from kd_search.engine.step import may_use_attention_scores, may_use_minilm, uses_intermediate_layers
from kd_search.engine.structure_catalog import MINILM_LOSSES
from kd_search.errors import ModelError


def model_config(name: str) -> PretrainedConfig:
    """The config of a model reference (local directory, hub id or embedded model).

    Example:
        >>> model_config("embedded:minilm-l6").model_type
        'bert'
    """
    try:
        return AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the config of {name!r}: {str(error).splitlines()[0]}") from None


def score_losses(study: Study) -> list[str]:
    """The losses a trial of the study may switch on that read attention scores, each
    named by the study-file field that turns it off.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> score_losses(parse_study({"name": "s", "student": {"teacher_layers": [2]}}))
        ['TinyBERT attention loss (distillation.gamma)']
    """
    if not uses_intermediate_layers(study):
        return []
    losses = ["TinyBERT attention loss (distillation.gamma)"] if may_use_attention_scores(study) else []
    if may_use_minilm(study):
        weights = study.distillation.structure
        losses += [f"{name} (distillation.structure.{name})" for name in MINILM_LOSSES
                   if getattr(weights, name) > 0 or f"weight_{name}" in study.search.space]
    return losses


def check_models(study: Study, teacher_tokenizer=None) -> None:
    """Refuse, in one line, a student vocabulary other than the teacher's and a loss on
    attention scores that the teacher's or student's architecture does not expose.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> check_models(parse_study({"name": "s", "student": {"teacher_layers": [2]}}))
    """
    teacher = model_config(study.teacher.model)
    student = teacher if study.student.model is None else model_config(study.student.model)
    if study.student.model is not None:
        teacher_vocab = (teacher_tokenizer or load_tokenizer(study.teacher.model)).get_vocab()
        if load_tokenizer(study.student.model).get_vocab() != teacher_vocab:
            raise ModelError(f"student.model: the vocabulary of {study.student.model!r} differs from the teacher's; "
                             "teacher and student must share a tokenizer")
    for loss in score_losses(study):
        for role, config in (("teacher", teacher), ("student", student)):
            if not exposes_attention_scores(config):
                field = loss[loss.index("(") + 1:-1]
                raise ModelError(f"{loss.split(' (')[0]} needs attention scores, which the {role}'s architecture "
                                 f"{model_class(config).__name__} does not expose: set {field} to 0 and leave it "
                                 "out of search.space (hidden-state and prediction losses work)")
