"""The engine's progress callback: ``progress(description, done, total)`` as work advances.

Example:
    >>> seen = []
    >>> callback: ProgressCallback = lambda description, done, total: seen.append((description, done, total))
    >>> callback("caching teacher outputs", 1, 4)
    >>> seen
    [('caching teacher outputs', 1, 4)]
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int], None]
