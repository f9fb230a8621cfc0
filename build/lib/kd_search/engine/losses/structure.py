"""Structure-based distillation losses: FSD (CKA structures), PKD, RKD and MiniLM.

Each compares how the teacher and the student *arrange* their representations rather
than the representations themselves, so the widths may differ (PKD aside, which goes
through the width projection). Each is registered under its catalog name
(:mod:`kd_search.engine.structure_catalog`), which also says what it reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_search.engine.losses.cka import linear_cka
from kd_search.engine.losses.minilm import (
    SelfAttentionPair,
    attention_distribution_loss,
    value_relation_loss,
)
from kd_search.engine.losses.precision import full_precision
from kd_search.engine.losses.registry import (
    STRUCTURE_TERMS,
    StructureInputs,
    register_structure_loss,
)
from kd_search.engine.structure_catalog import STRUCTURE_LOSS_NEEDS


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors (batch, tokens, width) over the tokens ``mask`` keeps.

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [9.0]]]), torch.tensor([[1, 1, 0]])).tolist()
        [[2.0]]
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def fsd_intra_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FSD intra-feature structure (eq. 6): mean over samples of 1 - CKA between the
    sample's token vectors in the student and in the teacher (padding excluded).

    Example:
        >>> h = torch.randn(2, 5, 8)
        >>> round(float(fsd_intra_loss(h, 2 * h, torch.ones(2, 5))), 5)
        0.0
    """
    return (1 - linear_cka(student_hidden, teacher_hidden, mask)).mean()


def fsd_local_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FSD local inter-feature structure (eq. 7): 1 - CKA between the samples of the
    mini-batch, each sample represented by its mean-pooled token vectors.

    Example:
        >>> h = torch.randn(4, 5, 8)
        >>> round(float(fsd_local_loss(h, -h, torch.ones(4, 5))), 5)
        0.0
    """
    return 1 - linear_cka(masked_mean(student_hidden, mask), masked_mean(teacher_hidden, mask))


def pkd_loss(student_cls: list[torch.Tensor], teacher_cls: list[torch.Tensor], projection=None) -> torch.Tensor:
    """Patient KD (Sun et al., 2019, eq. 3): squared distance of the L2-normalised [CLS]
    vectors of each mapped layer pair, summed over layers and averaged over the batch.

    Example:
        >>> v = torch.tensor([[3.0, 4.0]])
        >>> float(pkd_loss([v], [2 * v]))
        0.0
    """
    total = torch.zeros((), device=student_cls[0].device)
    for student, teacher in zip(student_cls, teacher_cls, strict=True):
        if projection is not None:
            student = projection(student)
        difference = F.normalize(full_precision(student), dim=-1) - F.normalize(full_precision(teacher), dim=-1)
        total = total + difference.pow(2).sum(dim=-1).mean()
    return total


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    squared = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt() * (1 - torch.eye(x.shape[0], device=x.device))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance-wise loss (Park et al., 2019, eq. 4-5): Huber loss between the pairwise
    distances of the batch's vectors, each normalised by its mean pairwise distance.

    Example:
        >>> x = torch.randn(6, 4)
        >>> round(float(rkd_distance_loss(5 * x, x)), 6)
        0.0
    """
    def normalised(x: torch.Tensor) -> torch.Tensor:
        distances = _pairwise_distances(full_precision(x))
        n = x.shape[0]
        return distances / (distances.sum() / max(n * (n - 1), 1)).clamp_min(1e-12)

    with torch.no_grad():
        target = normalised(teacher)
    return F.smooth_l1_loss(normalised(student), target)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle-wise loss (Park et al., 2019, eq. 6-7): Huber loss between the cosines of
    the angles every triplet of the batch's vectors forms.

    Example:
        >>> x = torch.randn(6, 4)
        >>> round(float(rkd_angle_loss(x + 1, 3 * x)), 6)
        0.0
    """
    def cosines(x: torch.Tensor) -> torch.Tensor:
        x = full_precision(x)
        differences = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=-1)  # e_ij = (x_j - x_i)/|.|
        return torch.bmm(differences, differences.transpose(1, 2)).flatten()

    with torch.no_grad():
        target = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), target)


def fsd_global_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, student_memory: torch.Tensor,
                    teacher_memory: torch.Tensor) -> torch.Tensor:
    """FSD global inter-feature structure (eq. 8-10) against memories of k items: the
    teacher's (k-means centroids of its features over the whole training set, fixed) and
    the student's (learned, its own width).

    - eq. 8: 1 - CKA between the two memories (the structure of the items);
    - eq. 9: each sample's Euclidean distances to the k items, student vs teacher (squared
      error; each side divided by its mean distance, as the widths' scales differ);
    - eq. 10: each sample's cosine similarities to the k items, student vs teacher.

    Features are (batch, width) rows, e.g. mean-pooled last-layer tokens.

    Example:
        >>> features, memory = torch.randn(4, 8), torch.randn(3, 8)
        >>> round(float(fsd_global_loss(2 * features, features, 2 * memory, memory)), 5)
        0.0
    """
    student_features, student_memory = full_precision(student_features), full_precision(student_memory)
    teacher_features, teacher_memory = full_precision(teacher_features).detach(), full_precision(teacher_memory)

    def scaled_distances(x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(x, items)
        return distances / distances.mean().clamp_min(1e-12)

    def cosines(x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ F.normalize(items, dim=-1).T

    structure = 1 - linear_cka(student_memory, teacher_memory.to(student_memory.dtype))
    distance = F.mse_loss(scaled_distances(student_features, student_memory),
                          scaled_distances(teacher_features, teacher_memory).to(student_features.dtype))
    cosine = F.mse_loss(cosines(student_features, student_memory),
                        cosines(teacher_features, teacher_memory).to(student_features.dtype))
    return structure + distance + cosine


@register_structure_loss("fsd_intra")
def _fsd_intra(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    return fsd_intra_loss(student, teacher, inputs.mask)


@register_structure_loss("fsd_local")
def _fsd_local(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    return fsd_local_loss(student, teacher, inputs.mask)


@register_structure_loss("fsd_global")
def _fsd_global(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    # FSD's features under the classifier: the mean-pooled tokens.
    return fsd_global_loss(masked_mean(student, inputs.mask), masked_mean(teacher, inputs.mask), *inputs.memories)


@register_structure_loss("pkd")
def _pkd(student: list[torch.Tensor], teacher: list[torch.Tensor], inputs: StructureInputs) -> torch.Tensor:
    return pkd_loss([h[:, 0] for h in student], [h[:, 0] for h in teacher], inputs.projection)


@register_structure_loss("rkd_distance")
def _rkd_distance(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    return rkd_distance_loss(student[:, 0], teacher[:, 0])


@register_structure_loss("rkd_angle")
def _rkd_angle(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    return rkd_angle_loss(student[:, 0], teacher[:, 0])


@register_structure_loss("minilm_attention")
def _minilm_attention(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    return attention_distribution_loss(inputs.attention.student_scores, inputs.attention.teacher_scores, inputs.mask)


@register_structure_loss("minilm_value")
def _minilm_value(student: torch.Tensor, teacher: torch.Tensor, inputs: StructureInputs) -> torch.Tensor:
    attention = inputs.attention
    return value_relation_loss(attention.student_values, attention.teacher_values, inputs.mask,
                               heads=attention.teacher_scores.shape[1])


def structure_objective(student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor], mask: torch.Tensor,
                        weights: dict[str, float], projection=None,
                        memories: tuple[torch.Tensor, torch.Tensor] | None = None,
                        attention: SelfAttentionPair | None = None) -> torch.Tensor:
    """sum_s w_s * L_s over the structure losses with a positive weight (FSD eq. 11).

    ``*_hidden`` are [embeddings, mapped layer 1, ..., mapped layer M] as in TinyBERT's
    map. FSD and RKD use the last mapped layer (the features under the classifier: the
    pooled [CLS] vector for RKD, mean-pooled tokens for FSD global); PKD uses every
    mapped layer's [CLS] vector. ``memories`` = (student memory, teacher memory) for
    ``fsd_global``; ``attention`` = the last mapped layer's self-attention for MiniLM
    (its value relation uses the teacher's head count).

    Example:
        >>> h = [torch.randn(4, 5, 8) for _ in range(2)]
        >>> float(structure_objective(h, h, torch.ones(4, 5), {"fsd_intra": 1.0}))
        0.0
    """
    unknown = set(weights) - set(STRUCTURE_TERMS)
    if unknown:
        raise ValueError(f"unknown structure losses: {sorted(unknown)}")
    active = [name for name, weight in weights.items() if weight > 0]
    for name in active:
        if STRUCTURE_LOSS_NEEDS[name].memory and memories is None:
            raise ValueError(f"{name} needs the student and teacher memories")
        if STRUCTURE_LOSS_NEEDS[name].self_attention and attention is None:
            raise ValueError(f"minilm losses need the last layer's attention scores and values ({name})")
    inputs = StructureInputs(mask, projection, memories, attention)
    last = student_hidden[-1], teacher_hidden[-1].to(student_hidden[-1].dtype)
    mapped = student_hidden[1:], teacher_hidden[1:]
    total = torch.zeros((), device=last[0].device)
    for name in active:
        student, teacher = mapped if STRUCTURE_LOSS_NEEDS[name].layers == "mapped" else last
        total = total + weights[name] * STRUCTURE_TERMS[name](student, teacher, inputs)
    return total
