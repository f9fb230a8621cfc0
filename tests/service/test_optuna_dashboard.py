"""What optuna-dashboard serves of a finished study: ``optuna-dashboard <storage>`` on a free
loopback port, read through its JSON API (what its pages show)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest
from servers import BIN, free_port, wait_until
from tiny import FINISHED_KAPPA, FINISHED_TRIALS, finished_study

from kd_search.service.search.optuna_study import CONSTRAINT, FRONT_ATTR

pytestmark = pytest.mark.slow


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The study's detail as the dashboard's API returns it."""
    if not (BIN / "optuna-dashboard").exists():
        pytest.skip("optuna-dashboard is not installed (the dev extra)")
    root = tmp_path_factory.mktemp("dashboard")
    study, locations, _ = finished_study(root / "work")
    url = f"http://127.0.0.1:{free_port()}"
    with open(root / "dashboard.log", "wb") as log:
        process = subprocess.Popen([str(BIN / "optuna-dashboard"), locations.storage, "--host", "127.0.0.1",
                                    "--port", url.rsplit(":", 1)[1]],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> bool:
            try:
                return bool(get(f"{url}/api/studies"))
            except OSError:
                return False

        wait_until(up, 60, f"optuna-dashboard (log: {root / 'dashboard.log'})")
        studies = get(f"{url}/api/studies")["study_summaries"]
        yield studies, get(f"{url}/api/studies/{studies[0]['study_id']}")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def attrs(entry: dict) -> dict[str, str]:
    return {attr["key"]: attr["value"] for attr in entry["user_attrs"]}


def test_the_dashboard_names_the_study_and_its_objectives(dashboard):
    studies, detail = dashboard
    assert [s["study_name"] for s in studies] == ["tiny-front"]
    assert detail["name"] == "tiny-front"
    assert detail["directions"] == ["maximize", "minimize"]
    assert detail["objective_names"] == ["accuracy", "sigma"]


def test_the_dashboard_shows_which_trials_are_feasible(dashboard):
    _, detail = dashboard
    trials = {t["number"]: t for t in detail["trials"]}
    assert {n: t["state"] for n, t in trials.items()} == {0: "Complete", 1: "Complete", 2: "Complete",
                                                         3: "Complete", 4: "Pruned"}
    for number, (accuracy, sigma) in enumerate(FINISHED_TRIALS):
        shown = attrs(trials[number])
        assert trials[number]["values"] == [accuracy, sigma]
        assert shown["phi_cnf"] == str(sigma <= FINISHED_KAPPA)
        assert float(shown[CONSTRAINT]) == pytest.approx(sigma - FINISHED_KAPPA)
    assert CONSTRAINT not in attrs(trials[4])  # a pruned trial has no constraint


def test_the_dashboard_shows_the_feasible_front_only(dashboard):
    _, detail = dashboard
    front = json.loads(attrs(detail)[FRONT_ATTR])
    assert front == [0, 1]
    feasible = {t["number"] for t in detail["trials"] if attrs(t).get("phi_cnf") == "True"}
    assert set(front) <= feasible and 2 not in front
