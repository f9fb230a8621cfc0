"""What the commands print: tables that fit the terminal without cutting a word, the front,
the launch's closing summary and its live progress.

Rich shrinks a too-wide table by cutting cells to an ellipsis (``paramet…``); ``word_table``
gives each column its natural width and, where the row is wider than the terminal, takes
the excess from the columns' slack (natural width minus their longest word), so cells
wrap between words and no word is cut.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from kd_search.cli._options import location_args, self_command

if TYPE_CHECKING:
    from kd_search.service.search import Locations


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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    rows = [(key, format_value(value)) for key, value in metrics.items()]
    Console().print(word_table(title, ("metric", "value"), rows, left=("metric",)))


def interval_text(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def spread_text(mean: float | None, std: float | None) -> str:
    return f"{mean:.4f} ± {std:.4f}" if mean is not None and std is not None else "-"


def print_front(summary, title: str) -> None:
    """The front as a table, then each front trial's parameters on lines of their own: in
    a table column they were cut to a few letters on an 80-column terminal."""
    from kd_search.service.search import verdict_text

    columns = ("trial", summary.metric_name, "sigma [95% CI]", "kappa", "seeds",
               f"{summary.metric_name} / sigma mean ± sd", "verdict")
    rows = [(str(t.number), f"{t.metric:.4f}", interval_text(t.sigma, t.sigma_ci_low, t.sigma_ci_high), f"{t.kappa:g}",
             str(t.seeds), "-" if t.seeds < 2 else
             f"{spread_text(t.metric_mean, t.metric_std)} / {spread_text(t.sigma_mean, t.sigma_std)}", verdict_text(t))
            for t in summary.front]
    console = Console()
    console.print(word_table(title, columns, rows, left=("verdict",), console=console))
    for t in summary.front:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t.params.items()))
        console.print(f"trial {t.number}: {params}", markup=False, highlight=False)


def driver_text(lease) -> str:
    """Who drives a study now, for ``status``: a live driver, one taken as dead, or none."""
    from kd_search.service.search import driver_grace

    if lease is None:
        return "-"
    grace = driver_grace()
    if lease.is_dead(grace):
        return f"none (pid {lease.pid} on {lease.host} unseen for {lease.age:.0f} s > {grace:g} s: dead)"
    return f"running: {lease.describe()}"


def print_launch_summary(summary, locations: Locations) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts().items()))
    print_front(summary, f"{summary.name}: feasible Pareto front ({counts})")
    if not summary.front:
        click.echo("no trial satisfies phi_cnf (sigma <= kappa) yet")
    if summary.tracking_backlog:
        click.echo(f"warning: {summary.tracking_backlog} MLflow writes wait for the next launch of this study "
                   "(the tracking server was unreachable)", err=True)
    click.echo(f"browse: {self_command()} ui {shlex.quote(summary.name)}{location_args(locations, storage=False)}")


@contextmanager
def trial_events(out: Console):
    """A live bar of finished trials, with each trial event printed above it."""
    with Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("trials", total=None)

        def update(message: str, finished: int | None, target: int) -> None:
            if finished is not None:
                progress.update(task, completed=finished, total=target)
            progress.console.log(message)

        yield update
