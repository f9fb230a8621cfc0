"""Everything a study asks of the teacher's and student's architecture, checked from their
``config.json`` alone, before any fine-tune, cache fill or Ray start.

A study file is valid on its own terms (:mod:`kd_search.engine.spec`), but some of its
fields only make sense against the models: layer counts (``student.teacher_layers``, the
layer map, ``distillation.layer_weights``, ``layer_weight_<m>`` in the search), the
vocabulary a pretrained student shares with its teacher, the hidden widths MiniLM's
value relation splits into the teacher's heads, and the positions ``task.max_length``
needs. :func:`check_architecture` reads both configurations (no weights)
and raises :class:`~kd_search.errors.StudyFileError` in one line naming the field, so
``kd-search validate`` and the start of ``launch`` refuse such a study before any work.

Example:
    >>> from kd_search.engine.spec import load_study
    >>> check_architecture(load_study("demo")).pairs
    [(1, 2), (2, 4), (3, 6)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kd_search.engine.hyperparameters import (
    default_hyperparameters,
    expand_search_space,
    uses_intermediate_layers,
)
from kd_search.engine.losses.layer_map import layer_pairs
from kd_search.engine.structure_catalog import STRUCTURE_LOSS_NEEDS
from kd_search.errors import ModelError, StudyFileError

if TYPE_CHECKING:
    from kd_search.engine.spec import Study


@dataclass(frozen=True)
class Architecture:
    """The shapes a study's training will meet: depths, widths, heads, vocabulary, positions."""

    teacher_layers: int
    teacher_hidden: int
    teacher_heads: int
    student_layers: int
    student_hidden: int
    pairs: list[tuple[int, int]]


class ConfigNotCached(StudyFileError):
    """A hub model's ``config.json`` is not in the local Hugging Face cache (and was not fetched)."""


def model_config(name: str, field: str, download: bool = True) -> Any:
    """The ``transformers`` configuration of a model reference (``config.json`` only);
    without ``download``, a hub model's is read from the local cache or
    :class:`ConfigNotCached` is raised.

    Example:
        >>> model_config("embedded:minilm-l6", "teacher.model").num_hidden_layers
        6
    """
    from transformers import AutoConfig

    from kd_search.engine.model_files import resolve_model

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
    if student.vocab_size != teacher.vocab_size:
        raise StudyFileError(f"student.model: vocabulary of {spec.model!r} ({student.vocab_size}) differs from "
                             f"the teacher's ({teacher.vocab_size}); they must share a tokenizer")
    return student.num_hidden_layers, student.hidden_size, student


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


def _minilm_may_run(study: Study) -> bool:
    weights = study.distillation.structure
    return uses_intermediate_layers(study) and any(
        needs.self_attention and (getattr(weights, name) > 0 or f"weight_{name}" in study.search.space)
        for name, needs in STRUCTURE_LOSS_NEEDS.items())


def check_architecture(study: Study, download: bool = True) -> Architecture:
    """Check every field that depends on the teacher's and student's architecture, from
    their configurations; return the shapes (the layer map among them). Without
    ``download``, a hub model's configuration must be cached (else :class:`ConfigNotCached`).

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> check_architecture(parse_study({"name": "s", "student": {"teacher_layers": [2, 4, 60]}}))
        Traceback (most recent call last):
        kd_search.errors.StudyFileError: student.teacher_layers: the teacher has only 6 layers, asked for 60
    """
    teacher = model_config(study.teacher.model, "teacher.model", download)
    depth, width, student = _student_shape(study, teacher, download)
    layer_map = study.distillation.layer_map
    try:
        pairs = layer_pairs(layer_map.kind, depth, teacher.num_hidden_layers, layer_map.pairs)
    except ValueError as error:
        raise StudyFileError(f"distillation.layer_map: {error}") from None
    _check_layer_weights(study, len(pairs))
    _check_positions(study, teacher, student)
    heads = teacher.num_attention_heads
    if width % heads and _minilm_may_run(study):
        raise StudyFileError(f"distillation.structure: MiniLM's value relation splits the student's width "
                             f"({width}) into the teacher's {heads} heads, which do not divide it")
    return Architecture(teacher.num_hidden_layers, teacher.hidden_size, heads, depth, width, pairs)
