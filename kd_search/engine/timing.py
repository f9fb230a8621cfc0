"""Where a trial's wall time goes: seconds per named phase, summed over repeats.

A trial's wall time is more than its training loops (``train_seconds``): data and
teacher set-up, per-epoch evaluation, checkpoints, the structure analysis. The phases
are measured so that ``benchmarks/study_overhead.py`` can show what to cut.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Wall seconds by phase; a phase entered again adds to its total.

    Example:
        >>> timer = PhaseTimer()
        >>> with timer.phase("checkpoint"):
        ...     pass
        >>> timer.add("train", 2.0)
        >>> sorted(timer.seconds), timer.seconds["train"]
        (['checkpoint', 'train'], 2.0)
    """

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` more for phase ``name``.

        Example:
            >>> timer = PhaseTimer({"report": 1.0})
            >>> timer.add("report", 0.5)
            >>> timer.seconds
            {'report': 1.5}
        """
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as phase ``name``.

        Example:
            >>> timer = PhaseTimer()
            >>> with timer.phase("report"):
            ...     pass
            >>> timer.seconds["report"] >= 0
            True
        """
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)
