"""The ``kd-search`` command line: parses options, calls the layers below, prints.

Every user error (a bad study file, a bad prediction file, ...) ends as one line on
stderr starting with ``error:`` and exit code 2, never as a traceback.

Heavy libraries (torch, transformers, datasets, Ray, Optuna, MLflow, pandas) and the
modules built on them are imported inside the commands that use them, so ``--help``,
``validate`` and ``schema`` answer at once.

``_main`` holds the group, ``_study_commands`` the commands on one study file,
``_search_commands`` those over a search's life, ``_options`` what they share and
``_render`` what they print.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(main, ["validate", "smoke"]).exit_code
    0
"""

from kd_search.cli import _search_commands, _study_commands  # noqa: F401 (they register the commands)
from kd_search.cli._main import main

__all__ = ["main"]
