"""The driver lease on real SQLite and PostgreSQL storage: one live driver per study,
a dead one (SIGKILLed) taken over only after the grace period, releases however a
driver ends, and exactly one winner among drivers starting at the same instant."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import postgres_server

from kd_search.cli import main
from kd_search.errors import OptionsError
from kd_search.service.search.lease import (
    DriverRunning,
    acquire,
    driver_grace,
    heartbeat_interval,
    hold_lease,
    read_lease,
    release,
)
from kd_search.service.search.optuna_study import open_storage

GRACE = 3.0


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.cluster)])
def storage(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    server = request.getfixturevalue("postgres")
    database = f"lease_{tmp_path.name[-20:].lower().replace('-', '_')}"
    server.create_database(database)
    return server.url(database)


def _holder(storage: str, grace: float) -> subprocess.Popen:
    """Another process holding the lease of study 'demo' until killed."""
    code = ("import sys, time; from kd_search.service.search.lease import hold_lease\n"
            "with hold_lease(sys.argv[1], 'demo', grace=float(sys.argv[2])):\n"
            "    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, storage, str(grace)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_one_driver_at_a_time_and_a_released_lease_is_free(storage):
    with hold_lease(storage, "demo", grace=GRACE) as replaced:
        assert replaced is None
        lease = read_lease(storage, "demo")
        assert (lease.host, lease.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(DriverRunning) as refused:
            acquire(storage, "demo", GRACE)
        message = str(refused.value)
        assert "\n" not in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "last seen" in message and "`kd-search status demo`" in message
        time.sleep(GRACE + 1)  # the heartbeat keeps a live driver young beyond the grace period
        assert read_lease(storage, "demo").age < GRACE
        with pytest.raises(DriverRunning):
            acquire(storage, "demo", GRACE)
        with hold_lease(storage, "other", grace=GRACE):  # another study is another lease
            pass
    assert read_lease(storage, "demo") is None
    token, replaced = acquire(storage, "demo", GRACE)
    assert replaced is None and release(storage, "demo", token)


def test_lease_is_released_when_the_driver_raises_or_is_interrupted(storage):
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with hold_lease(storage, "demo", grace=GRACE):
                raise error
        assert read_lease(storage, "demo") is None


@pytest.mark.slow
def test_a_sigkilled_driver_is_taken_over_only_after_the_grace_period(storage):
    holder = _holder(storage, GRACE)
    with pytest.raises(DriverRunning):  # alive
        acquire(storage, "demo", GRACE)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed_at = time.monotonic()
    with pytest.raises(DriverRunning) as refused:  # dead, but not unseen for the grace period yet
        acquire(storage, "demo", GRACE)
    assert f"pid {holder.pid}" in str(refused.value)
    time.sleep(max(0.0, GRACE + 0.5 - (time.monotonic() - killed_at)))
    token, replaced = acquire(storage, "demo", GRACE)
    assert replaced.pid == holder.pid and replaced.age > GRACE
    assert read_lease(storage, "demo").pid == os.getpid()
    release(storage, "demo", token)


@pytest.mark.slow
def test_a_short_grace_never_takes_a_slow_heartbeat_for_dead(storage):
    holder = _holder(storage, 60.0)  # beats every 5 s
    try:
        time.sleep(GRACE + 0.5)
        with pytest.raises(DriverRunning):  # 3 of its own beats count, not the reader's 3 s
            acquire(storage, "demo", GRACE)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_drivers_starting_at_the_same_instant_get_one_lease(storage, tmp_path):
    go = tmp_path / "go"
    code = ("import sys, time, pathlib; from kd_search.service.search.lease import acquire, DriverRunning\n"
            "go = pathlib.Path(sys.argv[2])\n"
            "while not go.exists(): time.sleep(0.001)\n"
            "try:\n    acquire(sys.argv[1], 'demo', 60.0); print('won')\n"
            "except DriverRunning: print('refused')\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    # Optuna's own tables first: Optuna cannot create them from several processes at once
    # on a fresh PostgreSQL database. The lease table is left to the racers.
    open_storage(storage)
    racers = [subprocess.Popen([sys.executable, "-c", code, storage, str(go)], stdout=subprocess.PIPE, text=True,
                               env=env) for _ in range(4)]
    time.sleep(8)  # all of them imported and waiting
    go.touch()
    outcomes = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_a_lease_left_by_this_process_is_taken_at_once(storage):
    # A launch here whose storage went away could not delete its row; the next launch in
    # this process knows it ended.
    token, _ = acquire(storage, "demo", GRACE)
    from kd_search.service.search import lease

    lease._HELD.discard(token)
    again, replaced = acquire(storage, "demo", 60.0)
    assert replaced.token == token
    release(storage, "demo", again)


def test_grace_from_option_or_environment(monkeypatch):
    assert heartbeat_interval(60) == 5.0 and heartbeat_interval(2) == 0.5
    monkeypatch.setenv("KD_SEARCH_DRIVER_GRACE", "12.5")
    assert driver_grace() == 12.5 and driver_grace(3) == 3.0
    monkeypatch.setenv("KD_SEARCH_DRIVER_GRACE", "soon")
    with pytest.raises(OptionsError, match="KD_SEARCH_DRIVER_GRACE='soon'"):
        driver_grace()


def test_status_shows_the_live_driver_and_launch_refuses_in_one_line(tmp_path, runner):
    from tiny import search_study, write_study

    from kd_search.engine.spec import parse_study
    from kd_search.service.search.optuna_study import create_or_resume

    workdir = tmp_path / "work"
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    study_file = write_study(tmp_path, search_study(tmp_path))
    with hold_lease(storage, "tiny", grace=GRACE):
        for command in (["launch", str(study_file)], ["launch", str(study_file), "--trials", "9"]):
            result = runner.invoke(main, [*command, "--workdir", str(workdir)])
            assert result.exit_code == 2, result.output
            lines = result.output.splitlines()
            assert result.output.count("\n") == 1, result.output
            assert lines[0].startswith("error: study 'tiny' is being run by another driver ")
            assert f"pid {os.getpid()} on {socket.gethostname()}" in lines[0]
            assert f"status tiny --workdir {workdir}`" in lines[0]
        assert not (workdir / "teachers").exists()  # refused before any work
        create_or_resume(parse_study(search_study(tmp_path)), storage, num_mapped_layers=1)
        shown = runner.invoke(main, ["status", "tiny", "--workdir", str(workdir)], env={"COLUMNS": "400"})
        assert shown.exit_code == 0, shown.output
        assert f"running: pid {os.getpid()} on {socket.gethostname()}" in shown.output
    shown = runner.invoke(main, ["status", "tiny", "--workdir", str(workdir)], env={"COLUMNS": "400"})
    assert "running:" not in shown.output and "pid" not in shown.output
