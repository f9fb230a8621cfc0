"""Server addresses and server errors as they may be shown: in one-line messages, logs,
MLflow params and tags."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[\w+.-]+://)(?P<user>[^/@:]*):(?P<password>[^/@]*)@")


def display_url(url: str) -> str:
    """``url`` with any password masked (storage URLs, tracking URIs, Ray addresses).

    Example:
        >>> display_url("postgresql+psycopg://kd:secret@db/optuna")
        'postgresql+psycopg://kd:***@db/optuna'
        >>> display_url("http://127.0.0.1:5000")
        'http://127.0.0.1:5000'
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password.

    Example:
        >>> has_password("postgresql+psycopg://kd@db/optuna")
        False
    """
    return _USERINFO.match(url) is not None


def error_reason(error: BaseException) -> str:
    r"""The first line of what a server error (or the driver error under it) says.

    Example:
        >>> error_reason(ConnectionError("connection refused\nIs the server running?"))
        'connection refused'
    """
    cause = error.__cause__ or error
    return next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
