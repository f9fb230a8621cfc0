"""Mean and standard deviation over seeds: the one rule every table and benchmark uses.

The standard deviation is the sample one (``ddof=1``, Bessel's correction), as over a few
seeds it should be. Of a single seed it is ``None``, not ``0.0``: one value says nothing
about the spread, and a ``± 0.0000`` would read as a perfectly stable result. The mean of
no values is ``None`` too.

Example:
    >>> mean_sd([0.03, 0.05])
    (0.04, 0.014142135623730952)
    >>> mean_sd([0.03])
    (0.03, None)
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_sd(values: Iterable[float]) -> tuple[float | None, float | None]:
    """The mean and sample standard deviation of ``values``; ``None`` where undefined.

    Example:
        >>> mean_sd([])
        (None, None)
        >>> mean_sd([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    values = list(values)
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
