"""Optuna's SQL storage that waits out a database restart instead of ending the study.

On a cluster the study's PostgreSQL is a container or a managed server that restarts
(an upgrade, a failover, a node drained). Every storage call of a running driver then
fails for the few seconds the server is away. ``PatientRDBStorage`` retries such a call,
with the same arguments, until the server answers or ``patience_seconds`` have passed,
saying once per outage that it waits and once that it is back. Each Optuna storage call
is one transaction that the server rolls back when its connection drops, so a retried
call is applied once. Errors that are not an outage (a bug, bad data) are never retried.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import optuna

from kd_search.errors import SearchError
from kd_search.urls import display_url, error_reason

# Seconds between two tries while the server is away.
RETRY_SECONDS = 2.0
# How long a launch waits for its storage server by default; KD_SEARCH_STORAGE_PATIENCE
# (seconds, 0 to give up at once) overrides it.
PATIENCE_ENV = "KD_SEARCH_STORAGE_PATIENCE"
DEFAULT_PATIENCE_SECONDS = 300.0
# The calls that go to the server; the rest (sessions, local checks) never wait.
_SERVER_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial_param",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_params",
    "get_trial_user_attrs", "get_trial_system_attrs", "record_heartbeat",
    # Optuna's _CachedStorage (every optuna.Study's storage) calls these RDBStorage internals.
    "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param",
)


def storage_patience_seconds() -> float:
    """How long a running study waits for its storage server: ``KD_SEARCH_STORAGE_PATIENCE``.

    Example:
        >>> storage_patience_seconds()
        300.0
    """
    text = os.environ.get(PATIENCE_ENV, "").strip()
    if not text:
        return DEFAULT_PATIENCE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise SearchError(f"{PATIENCE_ENV}={text!r}: expected seconds, a number >= 0")
    return seconds


def is_storage_outage(error: BaseException | None) -> bool:
    """Whether ``error`` means the storage server went away (not a bug, not bad data).

    Example:
        >>> is_storage_outage(ValueError("bad value"))
        False
    """
    from sqlalchemy.exc import DBAPIError, OperationalError

    while error is not None:
        if isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated):
            return True
        error = error.__cause__ or error.__context__
    return False


class PatientRDBStorage(optuna.storages.RDBStorage):
    """An ``RDBStorage`` whose calls wait up to ``patience_seconds`` for a server that went away.

    ``notify`` receives one line when an outage starts and one when it ends.

    Example:
        >>> storage = PatientRDBStorage("postgresql+psycopg://kd@db:5432/optuna",
        ...                             patience_seconds=300, notify=print)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, patience_seconds: float, notify: Callable[[str], None],
                 **rdb_options: Any) -> None:
        super().__init__(url, **rdb_options)
        self.patience_seconds, self.notify = patience_seconds, notify
        self._away_since: float | None = None

    def _wait_or_raise(self, error: Exception, first_failure: float) -> None:
        now = time.monotonic()
        if not is_storage_outage(error) or now - first_failure >= self.patience_seconds:
            raise error
        if self._away_since is None:
            self._away_since = first_failure
            self.notify(f"storage {display_url(self.url)} unreachable ({error_reason(error)}); "
                        f"retrying for up to {self.patience_seconds:.0f} s, the study waits")
        time.sleep(RETRY_SECONDS)

    def _answered(self) -> None:
        if self._away_since is not None:
            self.notify(f"storage {display_url(self.url)} reachable again after "
                        f"{time.monotonic() - self._away_since:.0f} s; the study goes on")
            self._away_since = None


def _patient(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def patient_call(self: PatientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        first_failure = None
        while True:
            try:
                result = call(self, *args, **kwargs)
            except Exception as error:  # SQLAlchemy and the driver raise many types
                first_failure = first_failure or time.monotonic()
                self._wait_or_raise(error, first_failure)
                continue
            self._answered()
            return result

    return patient_call


for _name in _SERVER_CALLS:
    setattr(PatientRDBStorage, _name, _patient(getattr(optuna.storages.RDBStorage, _name)))
