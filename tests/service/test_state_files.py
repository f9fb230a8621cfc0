"""State read back from the work dir: versioned JSON; a planted pickle is refused, never run."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pandas as pd
import pytest

from kd_search.errors import StateFileError
from kd_search.service.backlog import load_backlog, save_backlog
from kd_search.service.search.schedulers import MultiObjectiveASHA
from kd_search.state_files import read_state, write_state


class Planted:
    """A pickle that runs code when loaded: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Planted(marker)))
    return path


def test_the_planted_pickle_would_run_code(tmp_path):
    # The control: loaded the old way, the planted file runs its code.
    marker = tmp_path / "ran"
    pickle.loads(plant(tmp_path / "x.pkl", marker).read_bytes())
    assert marker.read_text() == "ran"


def test_a_planted_scheduler_checkpoint_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = plant(tmp_path / "scheduler.json", marker)
    scheduler = MultiObjectiveASHA("accuracy", max_t=4)
    with pytest.raises(StateFileError, match=r"scheduler\.json: kd-search MO-ASHA state saved as a pickle") as caught:
        scheduler.restore(str(path))
    assert "\n" not in str(caught.value) and "delete the file" in str(caught.value)
    assert not marker.exists() and path.is_file()  # nothing ran, nothing deleted
    assert scheduler.recorded(1) == {}


def test_a_planted_legacy_backlog_stops_the_tracker_and_does_not_run(tmp_path):
    from kd_search.service.tracking import StudyTracker, default_tracking_uri

    marker = tmp_path / "ran"
    legacy = plant(tmp_path / "studies" / "demo" / "mlflow-backlog.pkl", marker)
    with pytest.raises(StateFileError, match=r"mlflow-backlog\.pkl: an MLflow backlog saved as a pickle") as caught:
        StudyTracker(default_tracking_uri(tmp_path), "kd-search", "demo",
                     backlog_file=legacy.with_name("mlflow-backlog.json"))
    assert "\n" not in str(caught.value)
    assert not marker.exists() and legacy.is_file()


def test_a_pickle_under_the_json_name_is_refused_too(tmp_path):
    marker = tmp_path / "ran"
    path = plant(tmp_path / "mlflow-backlog.json", marker)
    with pytest.raises(StateFileError, match="saved as a pickle"):
        load_backlog(path, {"log_epoch"})
    assert not marker.exists()


def test_state_files_check_kind_version_and_schema(tmp_path):
    path = write_state(tmp_path / "s.json", "kd-search MO-ASHA state", 2, {"rungs": []})
    with pytest.raises(StateFileError, match="version 2, this kd-search reads version 1"):
        MultiObjectiveASHA("accuracy", max_t=4).restore(str(path))
    with pytest.raises(StateFileError, match="not a kd-search MLflow backlog file"):
        load_backlog(path, {"log_epoch"})
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(StateFileError, match="t.json: not a demo file"):
        read_state(tmp_path / "t.json", "demo", 1)
    save_backlog(tmp_path / "b.json", [("delete_experiment", (), {})])
    with pytest.raises(StateFileError, match="unknown write 'delete_experiment'"):
        load_backlog(tmp_path / "b.json", {"log_epoch"})


def test_the_scheduler_state_is_json_and_round_trips_non_finite_points(tmp_path):
    scheduler = MultiObjectiveASHA("f1", max_t=8)
    scheduler.replay(0, [{"epoch": 1, "f1": 0.7, "sigma": 0.03, "kappa": 0.05},
                         {"epoch": 2, "f1": math.nan, "sigma": 0.02, "kappa": 0.05}])
    scheduler.save(str(tmp_path / "scheduler.json"))
    stored = json.loads((tmp_path / "scheduler.json").read_text())
    assert stored["format"] == "kd-search MO-ASHA state" and stored["version"] == 1
    restored = MultiObjectiveASHA("accuracy", max_t=4)
    restored.restore(str(tmp_path / "scheduler.json"))
    assert restored.metric == "f1" and list(restored._rungs) == [1, 2, 4]
    assert restored.recorded(2) == {"trial 0": (-math.inf, 0.02, 0.02 - 0.05)}
    assert restored.debug_string() == scheduler.debug_string()


def test_a_saved_backlog_replays_its_writes_figures_and_tables_into_mlflow(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_search.service.tracking import StudyTracker, default_tracking_uri

    uri, backlog = default_tracking_uri(tmp_path), tmp_path / "mlflow-backlog.json"
    figure = plt.figure()
    figure.gca().plot([0, 1], [1, 0])
    writes = [
        ("start_trial", (0, {"alpha": 0.1}), {"ray_trial_id": "r0"}),
        ("log_epoch", (0, {"sigma": 0.1, "accuracy": math.nan}), {"step": 1}),
        ("finish_trial", (0, "COMPLETE", {"accuracy": 0.8}), {"figures": {"confidence.png": figure}}),
        ("set_verdicts", ({0: "certified"},), {}),
        ("log_study_results", ({"pareto_front.png": figure}, pd.DataFrame({"number": [0], "sigma": [0.1]}),
                               {"front_size": 1.0}), {}),
    ]
    save_backlog(backlog, writes)
    plt.close(figure)
    text = backlog.read_text()
    assert json.loads(text)["version"] == 1 and '{"$float": "nan"}' in text  # strict JSON
    tracker = StudyTracker(uri, "kd-search", "demo", backlog_file=backlog, notify=lambda m: None)
    assert not backlog.exists() and not tracker.backlog
    run = tracker.client.get_run(tracker.trial_run_id(0))
    assert run.info.status == "FINISHED" and run.data.tags["phi_cnf"] == "certified"
    assert run.data.metrics == {"sigma": 0.1, "accuracy": 0.8} and run.data.params == {"alpha": "0.1"}
    assert [a.path for a in tracker.client.list_artifacts(run.info.run_id)] == ["confidence.png"]
    parent = {a.path for a in tracker.client.list_artifacts(tracker.parent_id)}
    assert {"pareto_front.png", "study_summary.json", "study_summary.csv"} <= parent
