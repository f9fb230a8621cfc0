"""Where a study's MLflow store is, and whether it can be reached.

``check_tracking_uri`` fails a launch at once on a dead server or database, before
MLflow's own retries would spend minutes on it; ``is_unreachable`` tells a brief outage
(a write worth buffering, see ``_delivery``) from an error that must be raised.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException, RestException

from kd_search.errors import TrackingError
from kd_search.urls import display_url, error_reason


def default_tracking_uri(workdir: str | Path) -> str:
    """The SQLite MLflow store kept beside the study's other files.

    Example:
        >>> default_tracking_uri("/tmp/runs")
        'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def check_tracking_uri(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail now, in one line, if the tracking server or database cannot be reached.

    MLflow's own client would retry a dead server for minutes (and a dead database for
    nearly an hour) before the first trial; a study should not start that way.

    Example:
        >>> check_tracking_uri("http://127.0.0.1:9", timeout=1)
        Traceback (most recent call last):
        kd_search.errors.TrackingError: MLflow tracking server http://127.0.0.1:9: unreachable (...)
    """
    if tracking_uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
        except requests.RequestException as error:
            raise TrackingError(f"MLflow tracking server {display_url(tracking_uri)}: unreachable "
                                f"({error_reason(error)[:200]})") from None
    elif not tracking_uri.startswith(("sqlite", "file:", "/", "databricks")) and "://" in tracking_uri:
        import sqlalchemy

        connect_args = {"connect_timeout": int(timeout)} if tracking_uri.startswith("postgresql") else {}
        try:
            with sqlalchemy.create_engine(tracking_uri, connect_args=connect_args).connect():
                pass
        except Exception as error:  # any driver's error: the user needs the URL and the reason
            raise TrackingError(f"MLflow backend {display_url(tracking_uri)}: cannot connect "
                                f"({error_reason(error)})") from None


def is_unreachable(error: BaseException) -> bool:
    """Whether an MLflow error means the server or its database is (briefly) out of reach.

    MLflow has already retried such a request; anything else (a bad request, a bug) is
    raised, never buffered.

    Example:
        >>> is_unreachable(MlflowException("API request to http://mlflow/api failed with exception ..."))
        True
        >>> is_unreachable(MlflowException("Invalid metric name"))
        False
    """
    if isinstance(error, RestException):
        return error.get_http_status_code() in (408, 429, 500, 502, 503, 504)
    if isinstance(error, MlflowException):
        return error.error_code == "TEMPORARILY_UNAVAILABLE" or str(error.message).startswith("API request to")
    return False

