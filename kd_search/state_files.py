"""State kept in the work dir between launches: versioned JSON, never a pickle.

On a cluster the work dir is shared, so whoever can write a file there must not be able
to run code in the driver that reads it back: ``pickle.load`` would run whatever a
planted file's ``__reduce__`` names. State is written as JSON with its kind and a schema
version; reading checks both, and a pickle (an older kd-search wrote these as pickles) is
refused in one line naming the file, never loaded.

Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (strict
JSON has no literal for them); ``decode_float`` reads them back.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "state.json"
    >>> _ = write_state(path, "demo state", 1, {"rungs": [1, 2]})
    >>> read_state(path, "demo state", 1)
    {'rungs': [1, 2]}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kd_search.errors import StateFileError
from kd_search.files import write_file

# Every pickle protocol from 2 on starts with this opcode (PROTO); 0 and 1 are never written.
_PICKLE_START = b"\x80"


def encode_float(value: float) -> float | str:
    """``value``, or the string naming it when JSON has no literal for it.

    Example:
        >>> encode_float(0.5), encode_float(float("inf")), encode_float(float("nan"))
        (0.5, 'inf', 'nan')
    """
    return value if math.isfinite(value) else str(value)


def decode_float(value: float | str) -> float:
    """The float ``encode_float`` wrote.

    Example:
        >>> decode_float("-inf"), decode_float(0.25)
        (-inf, 0.25)
    """
    return float(value)


def write_state(path: str | Path, kind: str, version: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` as JSON tagged with its ``kind`` and schema ``version``.

    The file appears whole or not at all (see ``write_file``).

    Example:
        >>> import tempfile
        >>> path = write_state(Path(tempfile.mkdtemp()) / "s.json", "demo state", 1, {"n": 1})
        >>> json.loads(path.read_text())["format"]
        'demo state'
    """
    text = json.dumps({"format": kind, "version": version, **payload}, allow_nan=False)
    return write_file(path, lambda partial: partial.write_text(text))


def refuse_pickle(path: str | Path, what: str) -> StateFileError:
    """The one-line error for a pickle found where kd-search keeps ``what``.

    Example:
        >>> print(refuse_pickle("runs/x/mlflow-backlog.pkl", "an MLflow backlog"))
        runs/x/mlflow-backlog.pkl: an MLflow backlog saved as a pickle by an older kd-search; it is never loaded (a pickle can run code): delete the file to go on without it
    """
    return StateFileError(f"{path}: {what} saved as a pickle by an older kd-search; it is never loaded "
                          "(a pickle can run code): delete the file to go on without it")


def read_state(path: str | Path, kind: str, version: int) -> dict[str, Any]:
    """The payload ``write_state`` wrote to ``path``, after checking its kind and version.

    A pickle, a file that is not JSON, another kind or another version raises
    ``StateFileError`` naming the file; nothing in the file is executed.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.json"
        >>> _ = path.write_bytes(b"\\x80\\x04K\\x01.")
        >>> read_state(path, "demo state", 1)
        Traceback (most recent call last):
        kd_search.errors.StateFileError: ...: demo state saved as a pickle by an older kd-search; ...
    """
    data = Path(path).read_bytes()
    if data.startswith(_PICKLE_START):
        raise refuse_pickle(path, kind)
    try:
        state = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateFileError(f"{path}: not a {kind} file ({error})") from None
    if not isinstance(state, dict) or state.get("format") != kind:
        raise StateFileError(f"{path}: not a {kind} file")
    if state.get("version") != version:
        raise StateFileError(f"{path}: {kind} version {state.get('version')!r}, this kd-search reads "
                             f"version {version}: use the kd-search that wrote it, or delete the file")
    return {key: value for key, value in state.items() if key not in ("format", "version")}
