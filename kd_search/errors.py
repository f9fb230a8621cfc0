"""Every error that means "the user asked for something that cannot be done".

All derive from :class:`KdSearchError`, so the command line catches that one class and
turns any of them into one ``error: ...`` line on stderr and exit code 2, never a
traceback. Each also keeps the built-in base it has always had (``ValueError`` for bad
input, ``RuntimeError`` for a run that cannot go on), so ``except ValueError`` keeps
working. This module imports nothing, so any layer may raise these cheaply.

Example:
    >>> issubclass(StudyFileError, KdSearchError), issubclass(StudyFileError, ValueError)
    (True, True)
"""

from __future__ import annotations


class KdSearchError(Exception):
    """A user error: its message is one line that names the file, field or server at fault."""


class StudyFileError(KdSearchError, ValueError):
    """A study file that cannot be used; the message is one line naming file and field."""


class PredictionFileError(KdSearchError, ValueError):
    """A prediction file that cannot be audited; the message names the file."""


class ConfidenceInputError(KdSearchError, ValueError):
    """Inputs that the metrics cannot be computed on (the message says which and why)."""


class DataError(KdSearchError, ValueError):
    """The task's data cannot be loaded; the message names the file or column."""


class ModelError(KdSearchError, ValueError):
    """A model that cannot be loaded or built; the message names it."""


class NonFiniteLossError(KdSearchError, RuntimeError):
    """The training loss became NaN or infinite; the trial cannot continue."""


class SearchError(KdSearchError, RuntimeError):
    """A study cannot be found, opened or resumed as asked; the message is one line."""


class CacheSpaceError(KdSearchError, RuntimeError):
    """The teacher-output cache cannot fit on its filesystem; the message gives both sizes."""


class TrackingError(KdSearchError, RuntimeError):
    """The study's MLflow runs cannot be found or reached; the message is one line."""


class OptionsError(KdSearchError, ValueError):
    """A command given options that do not go together; the message names them."""


class StateFileError(KdSearchError, ValueError):
    """A state file in the work dir (a backlog, a scheduler's state) that cannot be read
    back: a pickle, another format or version; the message names the file."""
