"""Structure-based distillation losses: FSD (CKA structures), PKD and RKD.

Each compares how the teacher and the student *arrange* their representations rather
than the representations themselves, so the widths may differ (PKD aside, which goes
through the width projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_search.losses.cka import full_precision, linear_cka


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


STRUCTURE_LOSSES = ("fsd_intra", "fsd_local", "pkd", "rkd_distance", "rkd_angle")


def structure_objective(student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor], mask: torch.Tensor,
                        weights: dict[str, float], projection=None) -> torch.Tensor:
    """sum_s w_s * L_s over the structure losses with a positive weight.

    ``*_hidden`` are [embeddings, mapped layer 1, ..., mapped layer M] as in TinyBERT's
    map. FSD and RKD use the last mapped layer (the features under the classifier: the
    pooled [CLS] vector for RKD); PKD uses every mapped layer's [CLS] vector.

    Example:
        >>> h = [torch.randn(4, 5, 8) for _ in range(2)]
        >>> float(structure_objective(h, h, torch.ones(4, 5), {"fsd_intra": 1.0}))
        0.0
    """
    unknown = set(weights) - set(STRUCTURE_LOSSES)
    if unknown:
        raise ValueError(f"unknown structure losses: {sorted(unknown)}")
    student_last, teacher_last = student_hidden[-1], teacher_hidden[-1].to(student_hidden[-1].dtype)
    terms = {
        "fsd_intra": lambda: fsd_intra_loss(student_last, teacher_last, mask),
        "fsd_local": lambda: fsd_local_loss(student_last, teacher_last, mask),
        "pkd": lambda: pkd_loss([h[:, 0] for h in student_hidden[1:]], [h[:, 0] for h in teacher_hidden[1:]],
                                projection),
        "rkd_distance": lambda: rkd_distance_loss(student_last[:, 0], teacher_last[:, 0]),
        "rkd_angle": lambda: rkd_angle_loss(student_last[:, 0], teacher_last[:, 0]),
    }
    total = torch.zeros((), device=student_last.device)
    for name, weight in weights.items():
        if weight > 0:
            total = total + weight * terms[name]()
    return total
