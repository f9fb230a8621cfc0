"""Tables that fit the terminal without cutting a word.

Rich shrinks a too-wide table by cutting cells to an ellipsis (`paramet…`,
`unconfirme…`); here each column gets its natural width, and when the row is wider
than the terminal the columns give up their slack (natural width minus their longest
word) in proportion, so cells wrap between words and no word is cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def fit_widths(naturals: Sequence[int], minimums: Sequence[int], available: int) -> list[int]:
    """Column widths summing to at most ``available``, none below its minimum.

    Each column gives up a share of its slack (natural minus minimum) proportional to it;
    when even the minimums do not fit, the minimums.

    Example:
        >>> fit_widths([10, 30], [5, 10], available=30)
        [8, 22]
        >>> fit_widths([10, 30], [5, 10], available=50)
        [10, 30]
    """
    excess = sum(naturals) - available
    slack = [natural - minimum for natural, minimum in zip(naturals, minimums, strict=True)]
    if excess <= 0:
        return list(naturals)
    if excess >= sum(slack):
        return list(minimums)
    cuts = [excess * s // sum(slack) for s in slack]
    for i in sorted(range(len(slack)), key=lambda i: slack[i] - cuts[i], reverse=True):
        if sum(cuts) == excess:
            break
        cuts[i] += 1  # the rounding remainder, from the columns with the most slack left
    return [natural - cut for natural, cut in zip(naturals, cuts, strict=True)]


def word_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
               left: Sequence[str] = (), console: Console | None = None) -> Table:
    """A rich ``Table`` of ``rows`` under ``columns`` whose cells wrap only between words on
    ``console`` (the terminal's width); columns named in ``left`` are left-aligned, the
    others right-aligned.

    Example:
        >>> table = word_table("front", ["trial", "verdict"], [["0", "holds on one seed (unconfirmed)"]])
        >>> [column.width for column in table.columns]
        [5, 31]
    """
    console = console or Console()
    texts = [[column, *(row[i] for row in rows)] for i, column in enumerate(columns)]
    naturals = [max(len(text) for text in column) for column in texts]
    minimums = [max(len(word) for text in column for word in text.split() or [""]) for column in texts]
    borders = 3 * len(columns) + 1  # "│ " before each cell, " " after, and the last "│"
    available = console.width - borders
    # Where even the longest words do not fit side by side, rich's own shrinking (cut cells).
    widths = fit_widths(naturals, minimums, available) if sum(minimums) <= available else [None] * len(columns)
    table = Table(title=title)
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column, justify="left" if column in left else "right", width=width)
    for row in rows:
        table.add_row(*row)
    return table
