"""Options several commands share (locations, driver grace, kappa) and the commands kd-search
prints for the user to run next, as a shell would run them."""

from __future__ import annotations

import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from kd_search.cli._main import console
from kd_search.errors import StudyFileError
from kd_search.urls import display_url

if TYPE_CHECKING:
    from kd_search.service.search import Locations


def workdir_option(function):
    return click.option("--workdir", envvar="KD_SEARCH_WORKDIR", default=None,
                        help="Where studies keep teachers, caches, storage and results "
                             "[default: the study file's tracking.workdir, else runs; env KD_SEARCH_WORKDIR].")(function)


def tracking_uri_option(function):
    return click.option("--tracking-uri", envvar=["KD_SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"], default=None,
                        help="MLflow tracking URI [default: sqlite:///<workdir>/mlflow.db; "
                             "env KD_SEARCH_TRACKING_URI or MLFLOW_TRACKING_URI].")(function)


def location_options(function):
    """--workdir, --storage and --tracking-uri: the same on every command that reads or writes a study."""
    function = tracking_uri_option(function)
    function = click.option("--storage", envvar="KD_SEARCH_STORAGE", default=None,
                            help="Optuna storage URL, e.g. postgresql+psycopg://user@host/db "
                                 "[default: sqlite:///<workdir>/optuna.db; env KD_SEARCH_STORAGE].")(function)
    return workdir_option(function)


def driver_grace_option(function):
    return click.option("--driver-grace", type=click.FloatRange(min=1), envvar="KD_SEARCH_DRIVER_GRACE", default=None,
                        help="Seconds a study's driver may go unseen before another launch takes it as dead and "
                             "adopts its RUNNING trials [default: 60; env KD_SEARCH_DRIVER_GRACE].")(function)


def ray_address_option(function):
    return click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
                        help="Join a running Ray cluster (e.g. auto) [default: start a local one of its own, even "
                             "beside a running cluster; env RAY_ADDRESS].")(function)


def kappa_option(function):
    # Text, parsed by check_kappa: a bad value is one line and exit 2, not click's usage block.
    return click.option("--kappa", "kappa", default=None, metavar="K",
                        help="Judge every trial against sigma <= K instead of the study's kappa "
                             "(from the stored trials, nothing is trained again).")(function)


@contextmanager
def progress_bar(out: Console = console):
    """A rich progress display; yields a callback(description, done, total).

    A long description (the cache's path) folds onto a second line and the bar is narrow,
    so that the counts and times stay whole at 80 columns (rich otherwise cuts them to
    "125/1…").
    """
    with Progress(TextColumn("{task.description}", table_column=Column(ratio=1, overflow="fold")),
                  BarColumn(bar_width=20), MofNCompleteColumn(table_column=Column(no_wrap=True)),
                  TimeElapsedColumn(table_column=Column(no_wrap=True)),
                  console=out, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        yield update


def parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    # The values stay text: hyperparameters() knows which name takes a number.
    overrides = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StudyFileError(f"--set {item!r}: expected name=value")
        overrides[name.strip()] = value.strip()
    return overrides


@contextmanager
def following(name: str, locations: Locations):
    """Refusals by a live driver name the command that follows it, with this command's locations."""
    from kd_search.service.search import DriverRunning

    try:
        yield
    except DriverRunning as running:
        follow = f"{self_command()} status {shlex.quote(name)}{location_args(locations)}"
        raise DriverRunning(running.lease, running.grace, follow) from None


def self_command() -> str:
    """How a shell runs this kd-search: its name when PATH finds this one, else its path
    (a virtualenv that was never activated), else this Python with ``-m kd_search.cli``."""
    script = Path(sys.executable).parent / "kd-search"
    found = shutil.which("kd-search")
    if found and script.is_file() and Path(found).resolve() == script.resolve():
        return "kd-search"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m kd_search.cli"


def location_args(locations: Locations, storage: bool = True) -> str:
    """The options that find these locations again, each only when it is not the default.
    Passwords stay masked: the command is printed, so give them again (or set the variables)."""
    from kd_search.service.search import Locations

    defaults = Locations.resolve(workdir=locations.workdir)
    args = [] if locations.workdir == Locations.resolve().workdir else ["--workdir", str(locations.workdir)]
    if storage and locations.storage != defaults.storage:
        args += ["--storage", display_url(locations.storage)]
    if locations.tracking_uri != defaults.tracking_uri:
        args += ["--tracking-uri", display_url(locations.tracking_uri)]
    return "".join(f" {shlex.quote(arg)}" for arg in args)
