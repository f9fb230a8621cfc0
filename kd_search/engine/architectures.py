"""What distillation needs from an encoder, found per architecture rather than by BERT's names.

The encoders teams fine-tune name their parts differently: BERT and RoBERTa keep their
layers in ``encoder.layer`` with ``attention.self.value``, DistilBERT in
``transformer.layer`` with ``attention.v_lin``, DeBERTa-v2/v3 in ``encoder.layer`` with
``attention.self.value_proj``, ModernBERT in ``layers`` with one fused ``attn.Wqkv``.
Here the stack of layers is the model's one ``ModuleList`` as long as its depth, and a
layer's value projection is found by the names these families use.

Attention scores (TinyBERT's attention loss, MiniLM's losses) need an architecture that
runs its attention through transformers' attention interface, so that the ``kd_scores``
implementation (:mod:`kd_search.engine.models`) can return unnormalised scores; DeBERTa's
disentangled attention does not, and a study using those losses on it is refused.

Example:
    >>> VALUE_PROJECTIONS["v_lin"], VALUE_PROJECTIONS["Wqkv"]
    (slice(None, None, None), 'last third')
"""

from __future__ import annotations

import copy

from torch import nn
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from kd_search.errors import ModelError

# A layer's value projection by its module name: the whole output, or the last third of
# a fused query/key/value projection (ModernBERT's Wqkv views its output as (3, heads, dim)).
VALUE_PROJECTIONS: dict[str, slice | str] = {
    "value": slice(None), "v_lin": slice(None), "value_proj": slice(None), "v_proj": slice(None),
    "Wqkv": "last third", "qkv_proj": "last third",
}


def layer_stack(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """The model's stack of transformer layers and its dotted name (as in the state dict).

    Example:
        >>> from transformers import DistilBertConfig
        >>> model = AutoModelForSequenceClassification.from_config(
        ...     DistilBertConfig(vocab_size=20, dim=16, n_layers=2, n_heads=2, hidden_dim=32))
        >>> layer_stack(model)[0]
        'distilbert.transformer.layer'
    """
    depth = model.config.num_hidden_layers
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.ModuleList) and len(module) == depth and name]
    if not stacks:
        raise ModelError(f"{type(model).__name__}: no stack of {depth} layers found to build a student from")
    # Were there several lists of that length, the layers are the one holding most weights.
    return max(stacks, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def value_projection(layer: nn.Module) -> tuple[nn.Linear, slice | str] | None:
    """The layer's value projection and which part of its output is the values, or None.

    Example:
        >>> from transformers import BertConfig
        >>> bert = AutoModelForSequenceClassification.from_config(
        ...     BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
        >>> projection, part = value_projection(layer_stack(bert)[1][0])
        >>> projection.out_features, part
        (16, slice(None, None, None))
    """
    for name, module in layer.named_modules():
        part = VALUE_PROJECTIONS.get(name.rsplit(".", 1)[-1])
        if part is not None and isinstance(module, nn.Linear):
            return module, part
    return None


def values_of(output, part: slice | str):
    """The value vectors in a value projection's output (see :data:`VALUE_PROJECTIONS`).

    Example:
        >>> import torch
        >>> values_of(torch.arange(6.0).view(1, 1, 6), "last third").tolist()
        [[[4.0, 5.0]]]
    """
    if part == "last third":
        width = output.shape[-1] // 3
        return output[..., 2 * width:]
    return output[..., part]


def model_class(config: PretrainedConfig) -> type:
    """The sequence-classification class of a config, without building the model.

    Example:
        >>> from transformers import RobertaConfig
        >>> model_class(RobertaConfig()).__name__
        'RobertaForSequenceClassification'
    """
    try:
        return AutoModelForSequenceClassification._model_mapping[type(config)]
    except KeyError:
        raise ModelError(f"{type(config).__name__}: no sequence-classification model in transformers") from None


def exposes_attention_scores(config: PretrainedConfig) -> bool:
    """Whether the architecture's attention can return unnormalised scores (it runs through
    transformers' attention interface, where ``kd_scores`` plugs in).

    Example:
        >>> from transformers import BertConfig, DebertaV2Config
        >>> exposes_attention_scores(BertConfig()), exposes_attention_scores(DebertaV2Config())
        (True, False)
    """
    return bool(getattr(model_class(config), "_supports_attention_backend", False))


def student_config(teacher_config: PretrainedConfig, layers: int, **widths: int) -> PretrainedConfig:
    """The teacher's config with ``layers`` layers (and, for fresh students, other widths:
    ``hidden``, ``heads``, ``intermediate``), per-layer settings cut to match.

    ``layer_types`` (ModernBERT's local/global attention per layer) keeps the first
    ``layers`` entries; :func:`~kd_search.engine.models.student_from_teacher_layers` sets
    the kept layers' own.

    Example:
        >>> from transformers import DistilBertConfig
        >>> config = student_config(DistilBertConfig(), 2, hidden=64, heads=2, intermediate=128)
        >>> config.n_layers, config.dim, config.n_heads, config.hidden_dim
        (2, 64, 2, 128)
    """
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = layers
    if "hidden" in widths:
        if getattr(config, "pooler_hidden_size", None) == config.hidden_size:  # DeBERTa's pooler follows the width
            config.pooler_hidden_size = widths["hidden"]
        config.hidden_size = widths["hidden"]
        config.num_attention_heads = widths["heads"]
        # DistilBERT calls the feed-forward width hidden_dim; the others intermediate_size.
        setattr(config, "hidden_dim" if hasattr(config, "hidden_dim") else "intermediate_size", widths["intermediate"])
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and types:
        config.layer_types = [types[i % len(types)] for i in range(layers)]
    return config
