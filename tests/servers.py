"""Real servers on loopback for the cluster tests: PostgreSQL, an MLflow tracking server and
a Ray cluster of several nodes. Each helper skips the test, with the reason, only when the
server's program is missing (``.ci/run`` installs them)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PG_USER, PG_PASSWORD = "kd", "pg-Secret-4711"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


# --- PostgreSQL -------------------------------------------------------------------------

def _pg_binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@dataclass
class Postgres:
    data_dir: Path
    port: int
    run_as: list[str]

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{PG_PASSWORD}" if password else ""
        return f"postgresql+psycopg://{PG_USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, _pg_binary("pg_ctl"), "-D", str(self.data_dir), *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.data_dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on a free loopback port, user kd with a password."""
    if _pg_binary("initdb") is None or _pg_binary("pg_ctl") is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed; .ci/run installs them")
    # PostgreSQL refuses to run as root; CI runs as root, so the server runs as 'postgres'.
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Its own directory: pytest's are private to root, and the server runs as 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="kd-search-pg-"))
    data = root / "pgdata"
    password_file = root / "pw"
    password_file.write_text(PG_PASSWORD + "\n")
    if run_as:
        shutil.chown(root, "postgres")
        shutil.chown(password_file, "postgres")
        root.chmod(0o755)
    subprocess.run([*run_as, _pg_binary("initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={password_file}",
                    "--auth=scram-sha-256", "--no-sync"], check=True, capture_output=True, timeout=120)
    server = Postgres(data, free_port(), run_as)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # a test that stopped it already
        shutil.rmtree(root, ignore_errors=True)


# --- MLflow tracking server -----------------------------------------------------------

@dataclass
class MlflowServer:
    backend: str
    artifacts: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend, "--artifacts-destination",
                 str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.healthy, 120, f"mlflow server on port {self.port} (log: {self.log})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        wait_until(lambda: not self.healthy(), 30, "mlflow server shutdown")


@contextmanager
def mlflow_server(root: Path, backend: str | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, proxying artifacts to ``root/artifacts``."""
    if not (BIN / "mlflow").exists():
        pytest.skip("the mlflow command is not installed in this environment")
    root.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(backend or f"sqlite:///{root / 'mlflow-server.db'}", root / "artifacts", free_port(),
                          root / "mlflow-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- Ray: a head and worker nodes started with `ray start` -------------------------------

@dataclass
class RayCluster:
    address: str
    env: dict[str, str]
    worker_ports: list[int]
    metrics_port: int

    def metrics(self) -> str:
        """The head node's Prometheus page (what the compose stack's Prometheus scrapes)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                return response.read().decode()
        except OSError:
            return ""

    def add_worker(self, num_cpus: int) -> int:
        """Start one more node; returns its node-manager port (which names its raylet)."""
        port = free_port()
        subprocess.run([str(BIN / "ray"), "start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                        f"--num-cpus={num_cpus}",
                        f"--node-manager-port={port}", "--disable-usage-stats"],
                       check=True, capture_output=True, env=self.env, timeout=120)
        self.worker_ports.append(port)
        return port

    def kill_worker(self, port: int) -> None:
        """Lose the node started with this node-manager port, as when its machine dies: SIGKILL
        its raylet and every worker process it started, at once."""
        out = subprocess.run(["pgrep", "-f", f"raylet.*--node_manager_port={port}"], capture_output=True, text=True)
        raylets = [int(p) for p in out.stdout.split()]
        if not raylets:
            raise RuntimeError(f"no raylet with node-manager port {port}")
        children = subprocess.run(["pgrep", "-P", ",".join(map(str, raylets))], capture_output=True, text=True)
        for pid in [*raylets, *(int(p) for p in children.stdout.split())]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def ray_cluster(root: Path, head_cpus: int = 1) -> Iterator[RayCluster]:
    """A Ray head on 127.0.0.1 (no dashboard) started by ``ray start --head``."""
    if not (BIN / "ray").exists():
        pytest.skip("the ray command is not installed in this environment")
    port, metrics_port = free_port(), free_port()
    # Loopback only, so no token authentication (the docker stack uses a token). Every process
    # of this cluster, drivers included, gets this environment: a ray.init() earlier in the
    # test process sets RAY_AUTH_MODE=token in os.environ, which would lock them out. A lost node is declared dead after about 3 s instead of 15 s or more.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    f"--num-cpus={head_cpus}", "--include-dashboard=false", f"--metrics-export-port={metrics_port}",
                    "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=120)
    cluster = RayCluster(f"127.0.0.1:{port}", env, [], metrics_port)
    try:
        yield cluster
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)
