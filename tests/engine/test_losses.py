"""Losses against hand computations on tiny tensors, and gradient flow."""

import math

import pytest
import torch

from kd_search.engine.losses import (
    attention_loss,
    embedding_loss,
    hard_cross_entropy,
    hidden_state_loss,
    intermediate_objective,
    kl_distillation,
    layer_pairs,
    prediction_objective,
    soft_cross_entropy,
)
from kd_search.engine.models import WidthProjection


def test_soft_cross_entropy_by_hand():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    # T=2: p_t = softmax([0, 1]) ; log q_s = log_softmax([0.5, 0])
    p1 = math.exp(1) / (1 + math.exp(1))
    log_q0 = 0.5 - math.log(math.exp(0.5) + 1)
    log_q1 = -math.log(math.exp(0.5) + 1)
    expected = -((1 - p1) * log_q0 + p1 * log_q1)
    assert float(soft_cross_entropy(student, teacher, 2.0)) == pytest.approx(expected, rel=1e-6)


def test_kl_has_t_squared_and_is_zero_when_equal():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    t = 3.0
    p = torch.softmax(teacher / t, -1)
    q = torch.softmax(student / t, -1)
    expected = t * t * float((p * (p.log() - q.log())).sum())
    assert float(kl_distillation(student, teacher, t)) == pytest.approx(expected, rel=1e-6)
    assert float(kl_distillation(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_hard_and_prediction_objective_by_hand():
    logits = torch.tensor([[2.0, 0.0]])
    labels = torch.tensor([1])
    hard = 2.0 + math.log(1 + math.exp(-2.0))  # -log softmax(z)_1
    assert float(hard_cross_entropy(logits, labels)) == pytest.approx(hard, rel=1e-6)
    soft = float(soft_cross_entropy(logits, torch.zeros(1, 2), 1.0))
    mixed = prediction_objective(logits, torch.zeros(1, 2), labels, 0.25, 1.0, soft_cross_entropy)
    assert float(mixed) == pytest.approx(0.25 * hard + 0.75 * soft, rel=1e-6)


def test_mse_losses_by_hand():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    t = torch.zeros(1, 2, 2)
    assert float(hidden_state_loss(s, t)) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert float(embedding_loss(s, s)) == 0.0


def test_attention_loss_zeroes_masked_scores():
    student = torch.tensor([[[[1.0, -1e4], [2.0, -1e4]]]])
    teacher = torch.tensor([[[[0.0, -3e38], [0.0, -3e38]]]])
    # Masked entries become 0 in both; the rest: (1^2 + 2^2) / 4 elements.
    assert float(attention_loss(student, teacher)) == pytest.approx(5 / 4)


def test_attention_loss_averages_heads_when_counts_differ():
    student = torch.ones(1, 2, 2, 2)
    teacher = torch.zeros(1, 4, 2, 2)
    assert float(attention_loss(student, teacher)) == pytest.approx(1.0)


def test_intermediate_objective_weights_layers():
    zeros = torch.zeros(1, 2, 2)
    ones = torch.ones(1, 2, 2)
    scores = [torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)]
    zero_scores = [torch.zeros(1, 1, 2, 2)] * 2
    # embeddings equal; layer 1 differs by 1 (MSE 1), layer 2 equal; attention of layer 1 MSE 1.
    total = intermediate_objective([zeros, ones, zeros], [zeros, zeros, zeros], scores, zero_scores,
                                   layer_weights=[2.0, 0.5], beta=3.0, gamma=5.0)
    assert float(total) == pytest.approx(3.0 * 2.0 * 1.0 + 5.0 * 2.0 * 1.0)


def test_gradients_reach_student_and_projection_never_teacher():
    torch.manual_seed(0)
    projection = WidthProjection(4, 8)
    student_hidden = torch.randn(2, 3, 4, requires_grad=True)
    teacher_hidden = torch.randn(2, 3, 8, requires_grad=True)
    student_logits = torch.randn(2, 2, requires_grad=True)
    teacher_logits = torch.randn(2, 2, requires_grad=True)
    loss = intermediate_objective([student_hidden, student_hidden], [teacher_hidden, teacher_hidden], None, None,
                                  [1.0], 1.0, 0.0, projection, projection)
    loss = loss + prediction_objective(student_logits, teacher_logits.detach(), torch.tensor([0, 1]), 0.5, 2.0,
                                       soft_cross_entropy)
    loss.backward()
    assert student_hidden.grad is not None and student_hidden.grad.abs().sum() > 0
    assert projection.dense.weight.grad is not None and projection.dense.weight.grad.abs().sum() > 0
    assert student_logits.grad.abs().sum() > 0
    # The teacher's outputs are targets: the trial feeds them detached / from the cache.
    assert teacher_logits.grad is None


def test_loss_gradcheck():
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: soft_cross_entropy(x, t, 2.0).double(), (s,))


@pytest.mark.parametrize(
    ("kind", "m", "n", "expected"),
    [
        ("uniform", 4, 12, [(1, 3), (2, 6), (3, 9), (4, 12)]),
        ("uniform", 6, 12, [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]),
        ("uniform", 3, 6, [(1, 2), (2, 4), (3, 6)]),
        ("last", 3, 6, [(1, 4), (2, 5), (3, 6)]),
        ("last", 4, 12, [(1, 9), (2, 10), (3, 11), (4, 12)]),
    ],
)
def test_layer_maps(kind, m, n, expected):
    assert layer_pairs(kind, m, n) == expected


def test_explicit_pairs_are_checked():
    assert layer_pairs("pairs", 2, 6, [(2, 6), (1, 1)]) == [(1, 1), (2, 6)]
    with pytest.raises(ValueError, match="outside"):
        layer_pairs("pairs", 2, 6, [(3, 6)])
    with pytest.raises(ValueError, match="M <= N"):
        layer_pairs("uniform", 8, 6)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t: kl_distillation(s, t, 2.0),
        lambda s, t: hidden_state_loss(s, t),
        lambda s, t: attention_loss(s.reshape(1, 1, 2, 3), t.reshape(1, 1, 2, 3)),
    ],
    ids=["kl", "hidden_mse", "attention_mse"],
)
def test_more_gradchecks(loss):
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))
