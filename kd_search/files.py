"""Files and directories no reader sees half-written: built beside the target, then renamed.

A rename within one file system is atomic, so a reader (another trial, a later launch,
``from_pretrained``) finds either nothing or the whole thing. The staging name carries
the process id, so concurrent writers never share one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _staging(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write the file ``path`` by ``write(partial)`` on a file beside it, then rename it into place.

    Writers of the same content may race: the last rename wins, whole.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "backlog.json"
        >>> write_file(target, lambda partial: partial.write_text("done")).read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _staging(path)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_directory(path: str | Path, write: Callable[[Path], object], replace: bool = True) -> Path:
    """Build the directory ``path`` by ``write(staging)``, then rename the staging directory to it.

    ``write`` gets a path that does not exist yet. A directory already at ``path`` is
    replaced, or with ``replace=False`` kept: another process stored the same content
    first, and this copy is discarded.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "student"
        >>> def save(staging: Path) -> None:
        ...     staging.mkdir()
        ...     (staging / "config.json").write_text("{}")
        >>> sorted(p.name for p in write_directory(target, save).iterdir())
        ['config.json']
    """
    path = Path(path)
    staging = _staging(path)
    shutil.rmtree(staging, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(staging)
        if replace:
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(staging, path)
        except OSError:  # a non-empty directory is there: another process stored it first
            if replace:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
