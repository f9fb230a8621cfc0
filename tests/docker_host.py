"""A Docker engine, the stack's images and the compose stack itself, for the docker tests.

``docker_engine`` uses the engine that answers, or starts ``dockerd`` (as root) for the
test session; ``build_images`` builds the images as ``make image`` does; ``compose_stack``
brings ``docker/compose.yaml`` up under a project name of its own, with fresh secrets,
free loopback ports and a work dir on the host mounted at the same path in every Ray
container (so kd-search on the host reads the checkpoints too), and takes it down with its
volumes. Each skips the test, saying why, only where Docker cannot run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers import BIN, free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IMAGE = "kd-search:0.1.0"


def docker_answers() -> bool:
    """Whether a Docker engine answers on the default socket."""
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[None]:
    """A running Docker engine: the one already up, else a dockerd started here (as root)."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed; .ci/run installs docker.io")
    if docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("no Docker engine runs, and dockerd cannot be started here (needs docker.io and root)")
    log = log_dir / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not docker_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            pytest.skip(f"dockerd could not start: {log.read_text()[-500:]}")
        time.sleep(1)
    yield
    process.terminate()
    process.wait(timeout=60)


def build_images() -> str:
    """The kd-search and PostgreSQL images, built as `make image` builds them (cached)."""
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed; .ci/run installs it")
    out = subprocess.run([str(DOCKER / "build-image.sh"), IMAGE], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return IMAGE


@dataclass
class ComposeStack:
    """One compose project of docker/compose.yaml, and kd-search on the host pointed at it."""

    project: str
    env_file: Path
    settings: dict[str, str]
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600) -> str:
        binary = shutil.which("docker-compose")
        if binary is None:
            pytest.skip("Debian's docker-compose is not installed; .ci/run installs it")
        out = subprocess.run([binary, "-p", self.project, "-f", str(DOCKER / "compose.yaml"), "--env-file",
                              str(self.env_file), *args], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"docker-compose {' '.join(args)}:\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        return out.stdout

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    @property
    def host_env(self) -> dict[str, str]:
        """kd-search and Ray's CLI on the host, against the stack's services."""
        return {**os.environ, "PGPASSWORD": self.settings["POSTGRES_PASSWORD"],
                "KD_SEARCH_STORAGE": f"postgresql+psycopg://kd@127.0.0.1:{self.ports['postgres']}/optuna",
                "KD_SEARCH_TRACKING_URI": f"http://127.0.0.1:{self.ports['mlflow']}",
                "KD_SEARCH_WORKDIR": str(self.workdir), "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.settings["RAY_AUTH_TOKEN"]}

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.ports['ray']}"

    def submit(self, job_id: str, *command: str) -> None:
        """``ray job submit --no-wait`` of a kd-search command, run by the Ray head."""
        out = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.jobs_address, "--submission-id",
                              job_id, "--no-wait", "--", *command], capture_output=True, text=True,
                             env=self.host_env, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    def job(self, job_id: str) -> tuple[str, str]:
        """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its logs."""
        probe = ("import sys; from ray.job_submission import JobSubmissionClient as Client; "
                 "client = Client(sys.argv[1]); print(client.get_job_status(sys.argv[2]).value); "
                 "print(client.get_job_logs(sys.argv[2]))")
        out = subprocess.run([sys.executable, "-c", probe, self.jobs_address, job_id], capture_output=True,
                             text=True, env=self.host_env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        state, _, logs = out.stdout.partition("\n")
        return state.strip(), logs

    def wait_for_job(self, job_id: str, timeout: float = 900) -> str:
        """Wait for the job to end; assert it succeeded; return its logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, logs = self.job(job_id)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                assert state == "SUCCEEDED", logs[-4000:]
                return logs
            time.sleep(3)
        raise TimeoutError(f"job {job_id} did not end in {timeout:.0f} s")

    def ray_nodes(self) -> list[dict]:
        """The Ray cluster's nodes (id, IP, alive) as Ray's state API lists them."""
        out = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", self.jobs_address, "--format", "json",
                              "--detail"], capture_output=True, text=True, env=self.host_env, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    def container_ip(self, container: str) -> str:
        out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              container], capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip()

    def kd_search(self, *args: str) -> subprocess.CompletedProcess:
        """kd-search on the host, against the stack."""
        return subprocess.run([str(BIN / "kd-search"), *args], capture_output=True, text=True,
                              env={**self.host_env, "COLUMNS": "200"}, timeout=600)


@contextmanager
def compose_stack(root: Path, workers: int = 2) -> Iterator[ComposeStack]:
    """docker/compose.yaml up with ``workers`` Ray workers of one CPU each, then down with its volumes."""
    workdir = root / "runs"
    workdir.mkdir(parents=True)
    workdir.chmod(0o777)  # the containers run as uid 1000
    ports = {"postgres": free_port(), "mlflow": free_port(), "ray": free_port()}
    settings = {"POSTGRES_USER": "kd", "POSTGRES_PASSWORD": secrets.token_hex(12),
                "RAY_AUTH_TOKEN": secrets.token_hex(32), "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(12),
                "BIND_ADDRESS": "127.0.0.1", "RUNS_VOLUME": str(workdir), "KD_SEARCH_WORKDIR": str(workdir),
                "RAY_WORKER_CPUS": "1", "POSTGRES_PORT": str(ports["postgres"]),
                "MLFLOW_PORT": str(ports["mlflow"]), "RAY_DASHBOARD_PORT": str(ports["ray"])}
    env_file = root / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    stack = ComposeStack(f"kdtest{os.getpid()}", env_file, settings, workdir, ports)
    try:
        stack.compose("up", "-d", "--scale", f"ray-worker={workers}", timeout=900)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", timeout=600)
