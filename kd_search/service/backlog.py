"""The MLflow writes a launch could not deliver, saved as versioned JSON for the next one.

A write is ``(method name, args, kwargs)`` of a buffered ``StudyTracker`` method. Its
arguments are numbers, strings, paths, dictionaries (keys may be trial numbers), a
summary table and figures, so each value that JSON cannot hold as it is becomes a
one-key object: ``{"$dict": [[key, value], ...]}``, ``{"$tuple": [...]}``,
``{"$float": "nan"}``, ``{"$path": "..."}``, ``{"$frame": {"columns": ..., "data": ...}}``
and ``{"$png": "<base64>"}`` (a figure, rendered once; it is logged back as the same PNG
artifact). Reading back rebuilds these values and nothing else: no code in the file runs.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "mlflow-backlog.json"
    >>> _ = save_backlog(path, [("set_verdicts", ({3: "certified"},), {"seed": None})])
    >>> load_backlog(path, {"set_verdicts"})
    [('set_verdicts', ({3: 'certified'},), {'seed': None})]
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Collection
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from kd_search.errors import StateFileError
from kd_search.state_files import read_state, refuse_pickle, write_state

KIND, VERSION = "kd-search MLflow backlog", 1
# Where kd-search before this schema kept the backlog, as a pickle: refused, never read.
LEGACY_NAME = "mlflow-backlog.pkl"

Write = tuple[str, tuple, dict]


def encode(value: Any) -> Any:
    """``value`` as JSON can hold it (see the module docstring for the tagged forms).

    Example:
        >>> encode({"sigma": float("nan"), "epochs": (1, 2)})
        {'$dict': [['sigma', {'$float': 'nan'}], ['epochs', {'$tuple': [1, 2]}]]}
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": str(value)}
    if isinstance(value, PurePath):
        return {"$path": str(value)}
    if isinstance(value, dict):
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [encode(item) for item in value]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, pd.DataFrame):
        return {"$frame": {"columns": encode(list(value.columns)), "data": encode(value.values.tolist())}}
    if hasattr(value, "savefig"):  # a matplotlib figure: its picture is what MLflow keeps
        buffer = io.BytesIO()
        value.savefig(buffer, format="png")
        return {"$png": base64.b64encode(buffer.getvalue()).decode("ascii")}
    raise TypeError(f"an MLflow write's argument of type {type(value).__name__} cannot be saved")


def decode(value: Any) -> Any:
    """The value ``encode`` wrote; a figure comes back as its PNG bytes.

    Example:
        >>> decode({'$dict': [[0, {'$float': 'inf'}]]})
        {0: inf}
    """
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError(f"unknown value {str(value)[:80]}")
    (tag, inner), = value.items()
    if tag == "$dict":
        return {decode(k): decode(v) for k, v in inner}
    if tag == "$tuple":
        return tuple(decode(item) for item in inner)
    if tag == "$float":
        return float(inner)
    if tag == "$path":
        return Path(inner)
    if tag == "$frame":
        return pd.DataFrame(decode(inner["data"]), columns=decode(inner["columns"]))
    if tag == "$png":
        return base64.b64decode(inner, validate=True)
    raise ValueError(f"unknown tag {tag!r}")


def save_backlog(path: str | Path, writes: list[Write]) -> Path:
    """Write the undelivered ``writes``, oldest first, to ``path``.

    Example:
        >>> import tempfile
        >>> save_backlog(Path(tempfile.mkdtemp()) / "b.json", []).name
        'b.json'
    """
    return write_state(path, KIND, VERSION, {"writes": [
        {"method": name, "args": encode(list(args)), "kwargs": encode(kwargs)} for name, args, kwargs in writes]})


def legacy_backlog(path: str | Path) -> Path:
    """Where an older kd-search kept the backlog that now lives at ``path``.

    Example:
        >>> legacy_backlog("runs/demo/mlflow-backlog.json").as_posix()
        'runs/demo/mlflow-backlog.pkl'
    """
    return Path(path).with_name(LEGACY_NAME)


def load_backlog(path: str | Path, methods: Collection[str]) -> list[Write]:
    """The writes saved at ``path``; each must name one of ``methods`` (the buffered ones).

    A pickled backlog an older kd-search left beside it is refused (``StateFileError``
    naming it), never loaded; so is a file of another schema or a write of another name.

    Example:
        >>> load_backlog("runs/demo/mlflow-backlog.json", {"log_epoch"})  # doctest: +SKIP
        [('log_epoch', (0, {'sigma': 0.1}), {'step': 1})]
    """
    legacy = legacy_backlog(path)
    if legacy.exists():
        raise refuse_pickle(legacy, "an MLflow backlog")
    state = read_state(path, KIND, VERSION)
    try:
        writes = [(entry["method"], tuple(decode(entry["args"])), decode(entry["kwargs"]))
                  for entry in state["writes"]]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise StateFileError(f"{path}: a damaged {KIND} ({error})") from None
    for name, _, kwargs in writes:
        if name not in methods or not isinstance(kwargs, dict):
            raise StateFileError(f"{path}: a {KIND} with an unknown write {name!r}")
    return writes
