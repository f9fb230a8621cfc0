"""The learning-rate schedule shared by teacher fine-tuning and distillation."""

from __future__ import annotations

import torch


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
