"""TinyBERT's intermediate-layer losses and the full objective (Jiao et al. 2020, Sec. 3.1).

Hidden states are (batch, tokens, width); attention scores are the *unnormalised*
scores Q K^T / sqrt(d_k) with the additive mask applied, (batch, heads, tokens, tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from kd_search.engine.losses.precision import full_precision
from kd_search.engine.losses.prediction import hard_cross_entropy

# TinyBERT zeroes masked attention scores (which carry a large negative mask) in both
# models before the MSE, so padding contributes nothing but zeros.
MASKED_SCORE_THRESHOLD = -1e2


def embedding_loss(student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor,
                   projection: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """L_embd = MSE(E^S W_e, E^T) (TinyBERT eq. 9); ``projection`` is W_e when widths differ.

    Example:
        >>> float(embedding_loss(torch.ones(1, 2, 4), torch.zeros(1, 2, 4)))
        1.0
    """
    projected = projection(student_embeddings) if projection is not None else student_embeddings
    return F.mse_loss(full_precision(projected), full_precision(teacher_embeddings))


def hidden_state_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                      projection: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """L_hidn = MSE(H^S W_h, H^T) (TinyBERT eq. 8); ``projection`` is W_h when widths differ.

    Example:
        >>> float(hidden_state_loss(torch.full((1, 2, 4), 2.0), torch.zeros(1, 2, 4)))
        4.0
    """
    projected = projection(student_hidden) if projection is not None else student_hidden
    return F.mse_loss(full_precision(projected), full_precision(teacher_hidden))


def attention_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """L_attn = 1/h sum_i MSE(A_i^S, A_i^T) (TinyBERT eq. 7) on unnormalised scores.

    Masked scores (<= -100) are set to 0 in both, as in TinyBERT's code. When the head
    counts differ, both sides are averaged over heads first.

    Example:
        >>> float(attention_loss(torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)))
        1.0
    """
    student = full_precision(student_scores)
    teacher = full_precision(teacher_scores)
    student = torch.where(student <= MASKED_SCORE_THRESHOLD, torch.zeros_like(student), student)
    teacher = torch.where(teacher <= MASKED_SCORE_THRESHOLD, torch.zeros_like(teacher), teacher)
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    return F.mse_loss(student, teacher)


def intermediate_objective(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    student_scores: Sequence[torch.Tensor] | None,
    teacher_scores: Sequence[torch.Tensor] | None,
    layer_weights: Sequence[float],
    beta: float,
    gamma: float,
    embedding_projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    hidden_projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """beta * sum_m lambda_m (L_hidn + L_emb) + gamma * sum_m lambda_m L_attn.

    ``student_hidden[0]`` / ``teacher_hidden[0]`` are the embedding outputs and entry m
    (1..M) the mapped layer pair m; ``*_scores[m-1]`` the attention scores of pair m.
    ``layer_weights`` are lambda_1..lambda_M. The embedding term is weighted by the mean
    of the lambdas, so that with all lambda_m = 1 it counts once, as in TinyBERT.

    Example:
        >>> h = [torch.zeros(1, 2, 4)] * 2
        >>> float(intermediate_objective(h, h, None, None, [1.0], beta=1.0, gamma=1.0))
        0.0
    """
    num_layers = len(layer_weights)
    if len(student_hidden) != num_layers + 1 or len(teacher_hidden) != num_layers + 1:
        raise ValueError(f"expected {num_layers + 1} hidden states (embeddings + mapped layers)")
    mean_weight = sum(layer_weights) / num_layers
    total = beta * mean_weight * embedding_loss(student_hidden[0], teacher_hidden[0], embedding_projection)
    for m, weight in enumerate(layer_weights, start=1):
        total = total + beta * weight * hidden_state_loss(student_hidden[m], teacher_hidden[m], hidden_projection)
    if gamma and student_scores is not None and teacher_scores is not None:
        for m, weight in enumerate(layer_weights):
            total = total + gamma * weight * attention_loss(student_scores[m], teacher_scores[m])
    return total


def prediction_objective(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    distillation_loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
) -> torch.Tensor:
    """alpha * L_hard + (1 - alpha) * L_pred(T).

    Example:
        >>> from kd_search.engine.losses.prediction import soft_cross_entropy
        >>> z = torch.zeros(1, 2)
        >>> round(float(prediction_objective(z, z, torch.tensor([0]), 0.5, 1.0, soft_cross_entropy)), 4)
        0.6931
    """
    soft = distillation_loss(student_logits, teacher_logits, temperature)
    if alpha == 0:
        return soft
    return alpha * hard_cross_entropy(student_logits, labels) + (1 - alpha) * soft
