"""Losses compute in float32 even under bf16 autocast: sums, traces and softmaxes lose too
much in half precision."""

from __future__ import annotations

import torch


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is a half type; float32 and float64 stay as they are.

    Example:
        >>> full_precision(torch.ones(1, dtype=torch.bfloat16)).dtype
        torch.float32
        >>> full_precision(torch.ones(1, dtype=torch.float64)).dtype
        torch.float64
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
