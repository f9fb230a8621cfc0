"""The ``kd-search`` group: its options, its quiet libraries, and every user error as one
line on stderr with exit code 2."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from rich.console import Console

from kd_search.errors import KdSearchError

console = Console(stderr=True, log_path=False)


class _Commands(click.Group):
    """A click group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdSearchError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


def _quiet_progress_bars() -> None:
    # Our own rich progress replaces the libraries' tqdm bars, which would interleave
    # with the JSON line that --json promises on stdout. The libraries read these
    # variables when imported, which the commands do only after this; transformers' bars
    # follow the hub's variable.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A program that runs the commands in-process may have imported them already.
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kd-search")
def main() -> None:
    """Hyperparameter search for confidence-aware knowledge distillation.

    STUDY is a study file or the name of a study shipped with kd-search (see `kd-search studies`).
    """
    _quiet_progress_bars()
    for name in ("mlflow", "optuna", "alembic"):  # database migrations and study creation are not news
        logging.getLogger(name).setLevel(logging.WARNING)
