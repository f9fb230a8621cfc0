"""The Python API a notebook uses (``kd_search.launch``, ``pareto``, ``export``, ...): the
functions the command line calls, so they give what its commands print."""

from __future__ import annotations

import json

import pytest
from tiny import search_study, write_study

import kd_search
from kd_search.cli import main
from kd_search.errors import SearchError


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_a_notebook_runs_a_study_picks_a_student_and_exports_it(tmp_path, local_ray, runner):
    study_file = write_study(tmp_path, search_study(tmp_path, trials=2))
    workdir = str(tmp_path / "work")

    summary = kd_search.launch(study_file, workdir=workdir)
    assert summary.counts() == {"COMPLETE": 2}

    front = kd_search.pareto("tiny", workdir=workdir)
    assert [row["trial"] for row in front] == [t.number for t in summary.front]
    cli = runner.invoke(main, ["pareto", "tiny", "--json", "--workdir", workdir])
    assert json.loads(cli.output.strip().splitlines()[-1]) == front  # the same function behind both
    assert kd_search.summary("tiny", workdir=workdir).counts() == {"COMPLETE": 2}

    with pytest.raises(SearchError, match="exactly one of"):
        kd_search.export("tiny", tmp_path / "nowhere", workdir=workdir)
    if front:
        exported = kd_search.export("tiny", tmp_path / "student", best=True, allow_unconfirmed=True, workdir=workdir)
        assert exported.trial in {row["trial"] for row in front}
        assert (exported.path / "config.json").is_file() and "certified" in exported.why
