"""Structure analysis of a distilled student: how similar are its layers to the teacher's?

The CKA similarity (FSD eq. 4-5) between every student layer and every mapped teacher
layer, on token representations (each non-padding token of a sample of inputs is one
row), and the diagonal average over the layer map's pairs: 1 means the student arranges
its tokens exactly as the teacher does at the mapped depth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from kd_search.engine.losses.cka import CKA_EPS


def token_rows(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The (samples, tokens, width) tensor as one row per token ``mask`` keeps.

    Example:
        >>> token_rows(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]])).shape
        torch.Size([3, 4])
    """
    return hidden.reshape(-1, hidden.shape[-1])[mask.bool().reshape(-1)]


def layer_cka_matrix(student_tokens: list[torch.Tensor], teacher_tokens: list[torch.Tensor]) -> np.ndarray:
    """CKA of every (student layer, teacher layer) pair; each entry of the lists holds one
    layer's token rows (see :func:`token_rows`), the same tokens in the same order.

    Example:
        >>> h = [torch.randn(30, 8) for _ in range(2)]
        >>> np.round(layer_cka_matrix(h, h).diagonal(), 4).tolist()
        [1.0, 1.0]
    """
    # linear_cka_by_features per pair, with each layer centred and its own norm taken once
    # (the same operations on the same values: the same numbers, in half the products).
    def centred(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.double()
        return rows - rows.mean(dim=0, keepdim=True)

    students, teachers = [centred(s) for s in student_tokens], [centred(t) for t in teacher_tokens]
    student_norms = [torch.linalg.matrix_norm(s.T @ s) for s in students]
    teacher_norms = [torch.linalg.matrix_norm(t.T @ t) for t in teachers]
    return np.array([[float((t.T @ s).pow(2).sum() / (s_norm * t_norm + CKA_EPS))
                      for t, t_norm in zip(teachers, teacher_norms, strict=True)]
                     for s, s_norm in zip(students, student_norms, strict=True)])


def cka_diagonal(matrix: np.ndarray) -> float:
    """Mean CKA over the layer map's pairs (the matrix's diagonal).

    Example:
        >>> cka_diagonal(np.array([[0.9, 0.1], [0.2, 0.7]]))
        0.8
    """
    return float(np.mean(np.diagonal(matrix)))


def structure_metrics(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The structure metrics of a trial's outputs (or of the ``confidence.npz`` it saved):
    ``cka_diagonal`` of its ``cka_matrix`` and its ``relation_*`` differences, when present.

    Example:
        >>> structure_metrics({"cka_matrix": np.array([[0.9, 0.1], [0.2, 0.7]]),
        ...                    "relation_intra_cosine": np.array(0.25), "labels": np.zeros(3)})
        {'cka_diagonal': 0.8, 'relation_intra_cosine': 0.25}
    """
    metrics = {"cka_diagonal": cka_diagonal(outputs["cka_matrix"])} if "cka_matrix" in outputs else {}
    return metrics | {name: float(outputs[name]) for name in outputs if name.startswith("relation_")}


def relation_differences(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                         mask: torch.Tensor) -> dict[str, float]:
    """FSD's relation analysis (eq. 12-13, as the authors' code measures it): the mean
    absolute difference between the teacher's and the student's relations, by Euclidean
    distance and by cosine similarity,

    - intra-feature: between the tokens of each sample (padding excluded);
    - inter-feature: between the samples of the batch (mean-pooled tokens).

    Distances keep each model's own scale, as in FSD; cosines are comparable across widths.

    Example:
        >>> h = torch.randn(3, 4, 8)
        >>> d = relation_differences(h, h.clone(), torch.ones(3, 4))
        >>> sorted(d), max(d.values()) < 1e-5
        (['inter_cosine', 'inter_distance', 'intra_cosine', 'intra_distance'], True)
    """
    from kd_search.engine.losses.structure import masked_mean

    student_hidden, teacher_hidden, mask = student_hidden.double(), teacher_hidden.double(), mask.double()
    pairs = mask.unsqueeze(2) * mask.unsqueeze(1)  # (samples, tokens, tokens): both tokens real

    def intra(relation) -> float:
        gap = (relation(student_hidden) - relation(teacher_hidden)).abs() * pairs
        return float(gap.sum() / pairs.sum())

    # One "sample" of the batch's mean-pooled vectors, so the same relations apply.
    pooled_student, pooled_teacher = masked_mean(student_hidden, mask)[None], masked_mean(teacher_hidden, mask)[None]

    def inter(relation) -> float:
        return float((relation(pooled_student) - relation(pooled_teacher)).abs().mean())

    def distance(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x)

    def cosine(x: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize(x, dim=-1)
        return unit @ unit.transpose(-1, -2)

    return {"intra_distance": intra(distance), "intra_cosine": intra(cosine),
            "inter_distance": inter(distance), "inter_cosine": inter(cosine)}
