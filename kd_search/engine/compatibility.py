"""Whether a study's teacher and student can run its recipe, checked from their
``config.json`` before any work: no fine-tune, cache fill or Ray start.

A study file is valid on its own terms (:mod:`kd_search.engine.spec`), but some of its
fields only make sense against the models: layer counts (``student.teacher_layers``, the
layer map, ``distillation.layer_weights``, ``layer_weight_<m>`` in the search), the
vocabulary a pretrained student shares with its teacher (the student learns from the
teacher's outputs on the same token ids), the hidden widths MiniLM's value relation
splits into the teacher's heads, the positions ``task.max_length`` needs, and the
attention scores TinyBERT's and MiniLM's losses read, which some architectures do not
expose (:func:`~kd_search.engine.architectures.exposes_attention_scores`; hidden-state
and prediction losses work with every architecture transformers classifies).

:func:`check_models` reads both configurations (no weights) and raises one line naming
the field, so ``kd-search validate``, the start of ``launch`` and
:func:`~kd_search.engine.setup.prepare` refuse such a study before any work. The
per-architecture adapters themselves live in :mod:`kd_search.engine.architectures`.

Example:
    >>> from kd_search.study_file import load_study
    >>> check_models(load_study("demo")).pairs
    [(1, 2), (2, 4), (3, 6)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_search.engine.hyperparameters import (
    default_hyperparameters,
    expand_search_space,
    may_use_attention_scores,
    may_use_minilm,
    uses_intermediate_layers,
)
from kd_search.engine.losses.layer_map import layer_pairs
from kd_search.engine.model_files import resolve_model
from kd_search.engine.structure_catalog import MINILM_LOSSES
from kd_search.errors import ModelError, StudyFileError

if TYPE_CHECKING:
    from kd_search.engine.spec import Study


@dataclass(frozen=True)
class ModelShapes:
    """The shapes a study's training will meet: depths, widths, heads, the layer map."""

    teacher_layers: int
    teacher_hidden: int
    teacher_heads: int
    student_layers: int
    student_hidden: int
    pairs: list[tuple[int, int]]


class ConfigNotCached(StudyFileError):
    """A hub model's ``config.json`` is not in the local Hugging Face cache (and was not fetched)."""


def model_config(name: str, field: str = "model", download: bool = True) -> Any:
    """The ``transformers`` configuration of a model reference (``config.json`` only);
    without ``download``, a hub model's is read from the local cache or
    :class:`ConfigNotCached` is raised.

    Example:
        >>> model_config("embedded:minilm-l6", "teacher.model").num_hidden_layers
        6
    """
    from transformers import AutoConfig

    try:
        path = resolve_model(name)
    except ModelError as error:
        raise StudyFileError(f"{field}: {error}") from None
    try:
        return AutoConfig.from_pretrained(path, local_files_only=not download)
    except (OSError, ValueError) as error:
        if not download and path == name:  # a hub id that is not cached here
            raise ConfigNotCached(f"{field}: {name!r} is not in the local Hugging Face cache") from None
        raise StudyFileError(f"{field}: cannot read the configuration of {name!r} "
                             f"({str(error).splitlines()[0]})") from None


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


def _student_shape(study: Study, teacher: Any, download: bool) -> tuple[int, int, Any]:
    """The student's depth, width and own configuration (None when it is the teacher's)."""
    spec = study.student
    if spec.teacher_layers is not None:
        if max(spec.teacher_layers) > teacher.num_hidden_layers:
            raise StudyFileError(f"student.teacher_layers: the teacher has only {teacher.num_hidden_layers} "
                                 f"layers, asked for {max(spec.teacher_layers)}")
        return len(spec.teacher_layers), teacher.hidden_size, None
    if spec.config is not None:
        return spec.config.layers, spec.config.hidden, None
    student = model_config(spec.model, "student.model", download)
    return student.num_hidden_layers, student.hidden_size, student


def _check_vocabulary(study: Study, teacher: Any, student: Any, download: bool, teacher_tokenizer: Any) -> None:
    """A pretrained student must tokenise as its teacher does: first the sizes from the
    configurations, then the tokens themselves where both tokenizers are at hand."""
    name = study.student.model
    refused = ModelError(f"student.model: the vocabulary of {name!r} differs from the teacher's; "
                         "teacher and student must share a tokenizer")
    if student.vocab_size != teacher.vocab_size:
        raise refused
    local = all(Path(resolve_model(n)).is_dir() for n in (study.teacher.model, name))
    if not (download or local):  # validate never downloads: launch compares the tokens
        return
    from kd_search.engine.models import load_tokenizer

    teacher_vocab = (teacher_tokenizer or load_tokenizer(study.teacher.model)).get_vocab()
    if load_tokenizer(name).get_vocab() != teacher_vocab:
        raise refused


def _check_positions(study: Study, teacher: Any, student: Any) -> None:
    for field, config in (("teacher.model", teacher), ("student.model", student)):
        positions = getattr(config, "max_position_embeddings", None) if config is not None else None
        if positions is not None and study.task.max_length > positions:
            raise StudyFileError(f"task.max_length: {study.task.max_length} tokens exceed the "
                                 f"{positions} positions of {field}")


def _check_layer_weights(study: Study, num_mapped: int) -> None:
    default_hyperparameters(study, num_mapped)  # distillation.layer_weights: one per mapped layer
    expand_search_space(study.search.space, num_mapped)  # search.space.layer_weight_<m>
    for number, entry in enumerate(study.search.enqueue):
        for name in entry:
            if name.startswith("layer_weight_") and int(name.rsplit("_", 1)[1]) > num_mapped:
                raise StudyFileError(f"search.enqueue[{number}].{name}: the layer map has only {num_mapped} layers")


def _check_attention_scores(study: Study, teacher: Any, student: Any) -> None:
    losses = score_losses(study)
    if not losses:
        return
    from kd_search.engine.architectures import exposes_attention_scores, model_class

    for loss in losses:
        for role, config in (("teacher", teacher), ("student", student)):
            if not exposes_attention_scores(config):
                field = loss[loss.index("(") + 1:-1]
                raise ModelError(f"{loss.split(' (')[0]} needs attention scores, which the {role}'s architecture "
                                 f"{model_class(config).__name__} does not expose: set {field} to 0 and leave it "
                                 "out of search.space (hidden-state and prediction losses work)")


def check_models(study: Study, download: bool = True, teacher_tokenizer: Any = None) -> ModelShapes:
    """Check every field that depends on the teacher's and student's models, from their
    configurations (and tokenizers, for a pretrained student); return the shapes, the
    layer map among them. Without ``download``, a hub model's configuration must be
    cached (else :class:`ConfigNotCached`) and tokens are compared only between local models.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> check_models(parse_study({"name": "s", "student": {"teacher_layers": [2, 4, 60]}}))
        Traceback (most recent call last):
        kd_search.errors.StudyFileError: student.teacher_layers: the teacher has only 6 layers, asked for 60
    """
    teacher = model_config(study.teacher.model, "teacher.model", download)
    depth, width, student = _student_shape(study, teacher, download)
    if student is not None:
        _check_vocabulary(study, teacher, student, download, teacher_tokenizer)
    layer_map = study.distillation.layer_map
    try:
        pairs = layer_pairs(layer_map.kind, depth, teacher.num_hidden_layers, layer_map.pairs)
    except ValueError as error:
        raise StudyFileError(f"distillation.layer_map: {error}") from None
    _check_layer_weights(study, len(pairs))
    _check_positions(study, teacher, student)
    heads = teacher.num_attention_heads
    if width % heads and uses_intermediate_layers(study) and may_use_minilm(study):
        raise StudyFileError(f"distillation.structure: MiniLM's value relation splits the student's width "
                             f"({width}) into the teacher's {heads} heads, which do not divide it")
    _check_attention_scores(study, teacher, student or teacher)
    return ModelShapes(teacher.num_hidden_layers, teacher.hidden_size, heads, depth, width, pairs)
