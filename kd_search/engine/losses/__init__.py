"""Pure distillation losses on tensors. Nothing here imports the rest of the package but
the structure losses' catalog (plain data).

Example:
    >>> import torch
    >>> from kd_search.engine.losses import soft_cross_entropy
    >>> float(soft_cross_entropy(torch.zeros(1, 2), torch.zeros(1, 2), temperature=1.0))
    0.6931...
"""

from kd_search.engine.losses.cka import linear_cka
from kd_search.engine.losses.layer_map import layer_pairs
from kd_search.engine.losses.minilm import (
    SelfAttentionPair,
    attention_distribution_loss,
    value_relation_loss,
)
from kd_search.engine.losses.precision import full_precision
from kd_search.engine.losses.prediction import (
    PREDICTION_LOSSES,
    hard_cross_entropy,
    kl_distillation,
    prediction_distillation,
    soft_cross_entropy,
)
from kd_search.engine.losses.structure import structure_objective
from kd_search.engine.losses.tinybert import (
    attention_loss,
    embedding_loss,
    hidden_state_loss,
    intermediate_objective,
    prediction_objective,
)
from kd_search.engine.structure_catalog import MINILM_LOSSES, STRUCTURE_LOSSES

__all__ = [
    "MINILM_LOSSES",
    "PREDICTION_LOSSES",
    "STRUCTURE_LOSSES",
    "SelfAttentionPair",
    "attention_distribution_loss",
    "linear_cka",
    "structure_objective",
    "value_relation_loss",
    "attention_loss",
    "full_precision",
    "embedding_loss",
    "hard_cross_entropy",
    "hidden_state_loss",
    "intermediate_objective",
    "kl_distillation",
    "layer_pairs",
    "prediction_distillation",
    "prediction_objective",
    "soft_cross_entropy",
]
