"""Structure analysis of a distilled student: how similar are its layers to the teacher's?

The CKA similarity (FSD eq. 4-5) between every student layer and every mapped teacher
layer, on token representations (each non-padding token of a sample of inputs is one
row), and the diagonal average over the layer map's pairs: 1 means the student arranges
its tokens exactly as the teacher does at the mapped depth.
"""

from __future__ import annotations

import numpy as np
import torch

from kd_search.losses.cka import linear_cka_by_features


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
    return np.array([[float(linear_cka_by_features(s.double(), t.double())) for t in teacher_tokens]
                     for s in student_tokens])


def cka_diagonal(matrix: np.ndarray) -> float:
    """Mean CKA over the layer map's pairs (the matrix's diagonal).

    Example:
        >>> cka_diagonal(np.array([[0.9, 0.1], [0.2, 0.7]]))
        0.8
    """
    return float(np.mean(np.diagonal(matrix)))
