"""`kd-search ui`: the MLflow UI of a study's tracking store, served for real on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, wait_until

from kd_search.cli import main
from kd_search.service.tracking import StudyTracker, default_tracking_uri

ROOT = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _tiny_store(workdir: Path, study: str) -> str:
    """A SQLite MLflow store holding one study's parent run and one trial run; its experiment id."""
    tracker = StudyTracker(default_tracking_uri(workdir), "kd-search", study)
    tracker.start_trial(0, {"alpha": 0.1}, ray_trial_id="t0")
    return tracker.experiment_id


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ui_serves_the_study_until_ctrl_c_or_kill(tmp_path, stop):
    experiment_id = _tiny_store(tmp_path, "tiny")
    port, elsewhere = free_port(), tmp_path / "elsewhere"
    elsewhere.mkdir()
    ui = subprocess.Popen([sys.executable, "-m", "kd_search.cli", "ui", "tiny", "--workdir", str(tmp_path),
                           "--port", str(port)], cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/") or ui.poll() is not None, 180, "kd-search ui")
        assert ui.poll() is None, ui.stdout.read()
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=kd-search"
        with urllib.request.urlopen(api, timeout=10) as response:
            assert json.load(response)["experiment"]["experiment_id"] == experiment_id
        ui.send_signal(stop)  # what Ctrl-C (or `kill`) sends
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
    output = ui.stdout.read()
    assert f"open: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=kd-search-front-tiny" in output, output
    assert not _answers(f"http://127.0.0.1:{port}/"), "the MLflow server outlived kd-search ui"
    assert list(elsewhere.iterdir()) == [], "the UI wrote into the current directory"


def test_ui_without_a_store_fails_in_one_line(tmp_path, runner):
    result = runner.invoke(main, ["ui", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {tmp_path.resolve() / 'mlflow.db'}: no MLflow store (no study was "
                                     "launched with this --workdir or --tracking-uri)")


def test_ui_unknown_study_and_taken_port_fail_in_one_line(tmp_path, runner):
    _tiny_store(tmp_path, "tiny")
    result = runner.invoke(main, ["ui", "other", "--workdir", str(tmp_path), "--port", str(free_port())])
    assert result.exit_code == 2
    assert result.output.strip().endswith("no MLflow run of study 'other'"), result.output
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["ui", "tiny", "--workdir", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: port {port} on 127.0.0.1 is in use; choose another with --port"
