"""The optimizer and learning-rate schedule shared by teacher fine-tuning and distillation."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel: the same update in one pass over all parameters
    (on one CPU core the for-loop kernel took 0.105 s of a 0.66 s demo step, this 0.021 s).

    Example:
        >>> weight = torch.nn.Parameter(torch.ones(2))
        >>> adamw([weight], learning_rate=0.1, weight_decay=0.0).defaults["fused"]
        True
    """
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 10% of steps, then linear decay to 0 (BERT's schedule).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = linear_warmup_schedule(opt, 20)
        >>> opt.param_groups[0]["lr"]
        0.5
    """
    warmup = max(1, total_steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
