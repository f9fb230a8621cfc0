"""The MLflow UI on a study's tracking store, served on this machine until Ctrl-C.

The server is started by the Python that runs kd-search (``python -m mlflow``), so it
works where ``mlflow`` is not on PATH: a virtualenv that was never activated, a wheel
installed with pipx. It listens on loopback only; a study's runs are not for the network.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kd_search.errors import TrackingError

UI_HOST = "127.0.0.1"


def ui_server_command(tracking_uri: str, port: int, artifacts: str | Path) -> list[str]:
    """The MLflow UI server on ``tracking_uri``, on ``UI_HOST:port``, artifacts under ``artifacts``.

    Example:
        >>> ui_server_command("sqlite:////tmp/runs/mlflow.db", 5001, "/tmp/runs/mlartifacts")[1:]
        ['-m', 'mlflow', 'ui', '--backend-store-uri', 'sqlite:////tmp/runs/mlflow.db', '--host', '127.0.0.1',
         '--port', '5001', '--workers', '1', '--artifacts-destination', '/tmp/runs/mlartifacts']
    """
    # One worker: a viewer for one person; MLflow's default of four costs a core each to start.
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", UI_HOST,
            "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts)]


def check_local_store(tracking_uri: str) -> None:
    """Fail in one line when a SQLite tracking store does not exist (MLflow would create
    an empty one and show nothing).

    Example:
        >>> check_local_store("sqlite:////tmp/kd-search-doc/none/mlflow.db")
        Traceback (most recent call last):
        kd_search.errors.TrackingError: /tmp/kd-search-doc/none/mlflow.db: no MLflow store (...)
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TrackingError(f"{path}: no MLflow store (no study was launched with this --workdir "
                                "or --tracking-uri)")


def check_port_free(port: int) -> None:
    """Fail in one line when ``UI_HOST:port`` is taken.

    Example:
        >>> with socket.create_server((UI_HOST, 0)) as taken:
        ...     check_port_free(taken.getsockname()[1])
        Traceback (most recent call last):
        kd_search.errors.TrackingError: port ... on 127.0.0.1 is in use; choose another with --port
    """
    try:
        with socket.create_server((UI_HOST, port)):
            pass
    except OSError:
        raise TrackingError(f"port {port} on {UI_HOST} is in use; choose another with --port") from None


def serve_ui(tracking_uri: str, port: int, artifacts: str | Path) -> None:
    """Run the MLflow UI until Ctrl-C (or until it stops by itself, which is an error).

    Example:
        >>> serve_ui("sqlite:////tmp/runs/mlflow.db", 5000, "/tmp/runs/mlartifacts")  # doctest: +SKIP
    """
    # Its own process group: Ctrl-C reaches kd-search alone, which then stops the server
    # and every process it started, rather than leaving some behind. Without MLflow's job
    # execution (GenAI evaluation jobs, none of a study's business) it starts two processes,
    # not ten.
    server = subprocess.Popen(ui_server_command(tracking_uri, port, artifacts), start_new_session=True,
                              env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    # `kill` (SIGTERM) stops it as Ctrl-C does: a server left behind would hold the port.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = server.wait()
    except KeyboardInterrupt:
        _stop(server)
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise TrackingError(f"the MLflow UI stopped with exit code {code}")


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:  # whatever of the group is still there after the server's own shutdown
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()
