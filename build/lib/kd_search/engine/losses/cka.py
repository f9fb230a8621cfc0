"""Centered Kernel Alignment with linear kernels, batched and safe for padded rows.

FSD (Jung et al., 2023) eq. 4-5, after Kornblith et al. (2019):

    HSIC(K, L) = tr(K H L H) / (n - 1)^2,     H = I - (1/n) 1 1^T
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T

X (n x d1) and Y (n x d2) hold the same n items (tokens of one sentence, or the
sentences of a batch) in two representations, so the widths may differ. With linear
kernels H K H = Xc Xc^T for the column-centred Xc, and the (n - 1)^2 cancels in the ratio.
"""

from __future__ import annotations

import torch

from kd_search.engine.losses.precision import full_precision

# Added to the denominator: a constant representation (zero centred Gram) has CKA 0, not NaN.
CKA_EPS = 1e-12


def centered_gram(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Xc Xc^T for ``x`` of shape (..., n, d), centring over the n rows that ``mask`` keeps.

    Masked-out rows (padding) get zero rows and columns, so they add nothing to any trace.

    Example:
        >>> centered_gram(torch.tensor([[1.0], [3.0]])).tolist()
        [[1.0, -1.0], [-1.0, 1.0]]
    """
    x = full_precision(x)
    if mask is None:
        centred = x - x.mean(dim=-2, keepdim=True)
    else:
        weights = mask.to(x.dtype).unsqueeze(-1)
        mean = (x * weights).sum(dim=-2, keepdim=True) / weights.sum(dim=-2, keepdim=True).clamp_min(1.0)
        centred = (x - mean) * weights
    return centred @ centred.transpose(-1, -2)


def linear_cka(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linear CKA between ``x`` (..., n, d1) and ``y`` (..., n, d2), one value per leading index.

    ``mask`` (..., n) marks the rows to compare (e.g. the attention mask over tokens).

    Example:
        >>> x = torch.randn(10, 4)
        >>> round(float(linear_cka(x, 3 * x)), 5)
        1.0
    """
    k, l_ = centered_gram(x, mask), centered_gram(y, mask)
    hsic_kl = (k * l_).sum(dim=(-1, -2))  # tr(K L) for symmetric K, L
    hsic_kk = (k * k).sum(dim=(-1, -2))
    hsic_ll = (l_ * l_).sum(dim=(-1, -2))
    return hsic_kl / (torch.sqrt(hsic_kk * hsic_ll) + CKA_EPS)


def linear_cka_by_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same linear CKA for (n, d1) and (n, d2) through d x d products, for many rows.

    tr(Xc Xc^T Yc Yc^T) = ||Yc^T Xc||_F^2 (Kornblith et al., 2019, eq. 3), so memory grows
    with the widths, not with n squared.

    Example:
        >>> x, y = torch.randn(50, 3), torch.randn(50, 4)
        >>> bool(torch.isclose(linear_cka_by_features(x, y), linear_cka(x, y), atol=1e-5))
        True
    """
    xc, yc = full_precision(x), full_precision(y)
    xc, yc = xc - xc.mean(dim=0, keepdim=True), yc - yc.mean(dim=0, keepdim=True)
    cross = (yc.T @ xc).pow(2).sum()
    return cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc) + CKA_EPS)
