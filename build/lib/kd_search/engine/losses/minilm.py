"""MiniLM's deep self-attention distillation of the last layer (Wang et al. 2020, Sec. 3).

Both losses compare row distributions over tokens, teacher || student, with KL:

* attention distributions, A = softmax(Q K^T / sqrt(d_k)) (Sec. 3.1, L_AT);
* value relations, VR = softmax(V V^T / sqrt(d_k)) (Sec. 3.2, L_VR).

L = 1/(A_h |x|) sum_a sum_t KL(R^T_{a,t} || R^S_{a,t}), averaged over the batch, where
padding is neither a query (|x| counts real tokens) nor a key (it gets no probability).
MiniLM needs the same head count in teacher and student for L_AT; the value relation
splits both sides into the same number of relation heads (MiniLMv2), so it works for any
head counts and widths whose division is exact.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from kd_search.engine.losses.precision import full_precision

# A finite stand-in for -inf at padded keys: their probability underflows to exactly 0,
# and no inf - inf (NaN) appears in the KL or its gradient.
_MASKED_LOGIT = -1e9


class SelfAttentionPair(NamedTuple):
    """The last mapped layer's self-attention of student and teacher, MiniLM's inputs.

    ``*_scores`` are unnormalised scores (batch, heads, tokens, tokens); padded keys may
    hold anything (the mask decides). ``*_values`` are the value vectors V = H W_V + b_V,
    (batch, tokens, width), all heads side by side.
    """

    student_scores: torch.Tensor
    teacher_scores: torch.Tensor
    student_values: torch.Tensor
    teacher_values: torch.Tensor


def _log_distributions(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keys = mask.bool()[:, None, None, :]
    return torch.log_softmax(full_precision(scores).masked_fill(~keys, _MASKED_LOGIT), dim=-1)


def _relation_kl(student_log: torch.Tensor, teacher_log: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1/(A_h |x|) sum_a sum_t KL(teacher_t || student_t), mean over the batch."""
    teacher_log = teacher_log.detach().to(student_log.dtype)
    kl_rows = (teacher_log.exp() * (teacher_log - student_log)).sum(dim=-1)  # (batch, heads, queries)
    queries = mask.to(kl_rows.dtype)[:, None, :]
    per_sample = (kl_rows * queries).sum(dim=(1, 2)) / (queries.sum(dim=-1).squeeze(1).clamp_min(1) * kl_rows.shape[1])
    return per_sample.mean()


def _head_average(log_probs: torch.Tensor) -> torch.Tensor:
    # log of the mean distribution over heads: still a distribution per query token.
    return torch.logsumexp(log_probs, dim=1, keepdim=True) - math.log(log_probs.shape[1])


def attention_distribution_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                                mask: torch.Tensor) -> torch.Tensor:
    """MiniLM L_AT (Sec. 3.1): KL between the teacher's and the student's attention
    distributions softmax(Q K^T / sqrt(d_k)), per head and real query token.

    When the head counts differ, each side's distributions are averaged over its heads
    first (one mean distribution per token), as TinyBERT's attention loss here does.

    Example:
        >>> scores = torch.randn(2, 3, 4, 4)
        >>> float(attention_distribution_loss(scores, scores, torch.ones(2, 4)))
        0.0
    """
    student_log, teacher_log = _log_distributions(student_scores, mask), _log_distributions(teacher_scores, mask)
    if student_log.shape[1] != teacher_log.shape[1]:
        student_log, teacher_log = _head_average(student_log), _head_average(teacher_log)
    return _relation_kl(student_log, teacher_log, mask)


def value_relation(values: torch.Tensor, heads: int) -> torch.Tensor:
    """MiniLM's value relation V_a V_a^T / sqrt(d_k) of each of ``heads`` heads, unnormalised:
    (batch, tokens, width) -> (batch, heads, tokens, tokens), with d_k = width / heads.

    Example:
        >>> value_relation(torch.ones(1, 3, 8), heads=2)[0, 0].tolist()[0]
        [2.0, 2.0, 2.0]
    """
    batch, tokens, width = values.shape
    if width % heads:
        raise ValueError(f"value width {width} does not split into {heads} relation heads")
    per_head = full_precision(values).view(batch, tokens, heads, width // heads).transpose(1, 2)
    return per_head @ per_head.transpose(-1, -2) / (width // heads) ** 0.5


def value_relation_loss(student_values: torch.Tensor, teacher_values: torch.Tensor, mask: torch.Tensor,
                        heads: int) -> torch.Tensor:
    """MiniLM L_VR (Sec. 3.2): KL between the teacher's and the student's value relations
    softmax(V_a V_a^T / sqrt(d_k)) over ``heads`` relation heads (the teacher's head count
    reproduces MiniLM; other counts are MiniLMv2's relation heads). Widths may differ.

    Example:
        >>> v = torch.randn(2, 4, 8)
        >>> float(value_relation_loss(v, v, torch.ones(2, 4), heads=2))
        0.0
    """
    student_log = _log_distributions(value_relation(student_values, heads), mask)
    teacher_log = _log_distributions(value_relation(teacher_values, heads), mask)
    return _relation_kl(student_log, teacher_log, mask)
