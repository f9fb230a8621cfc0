"""Prediction-layer losses: soft cross-entropy, Hinton's KL with T^2, hard-label CE."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kd_search.engine.losses.precision import full_precision


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """TinyBERT's prediction-layer loss (Jiao et al. 2020, eq. 10), averaged over the batch.

    L_pred = CE(z^T / t, z^S / t) = -sum_k softmax(z^T/t)_k * log_softmax(z^S/t)_k

    Example:
        >>> round(float(soft_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 1.0)), 4)
        0.6931
    """
    teacher_probs = F.softmax(full_precision(teacher_logits) / temperature, dim=-1)
    student_log_probs = F.log_softmax(full_precision(student_logits) / temperature, dim=-1)
    return -(teacher_probs * student_log_probs).sum(dim=-1).mean()


def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015 (eq. 2 and the T^2 scaling of Sec. 2.1), averaged over the batch.

    L_KD = T^2 * KL(softmax(z^T/T) || softmax(z^S/T))

    Example:
        >>> float(kl_distillation(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]), 4.0))
        0.0
    """
    teacher_log_probs = F.log_softmax(full_precision(teacher_logits) / temperature, dim=-1)
    student_log_probs = F.log_softmax(full_precision(student_logits) / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


PredictionLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
# The searchable ``prediction_loss`` hyperparameter: each name and the loss it selects.
PREDICTION_LOSSES: dict[str, PredictionLoss] = {"soft_ce": soft_cross_entropy, "kl": kl_distillation}


def prediction_distillation(name: str) -> PredictionLoss:
    """The prediction-layer distillation loss a ``prediction_loss`` name selects.

    Example:
        >>> prediction_distillation("kl").__name__, sorted(PREDICTION_LOSSES)
        ('kl_distillation', ['kl', 'soft_ce'])
    """
    try:
        return PREDICTION_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown prediction_loss {name!r} (known: {', '.join(PREDICTION_LOSSES)})") from None


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The usual cross-entropy with the gold labels, L_hard = -log softmax(z^S)_y.

    Example:
        >>> round(float(hard_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))), 4)
        0.6931
    """
    return F.cross_entropy(full_precision(student_logits), labels)
