"""``search.resources.gpu`` is what Ray schedules each trial with, shown without a GPU: Ray is
told the machine has two (Ray trusts a declared count), and the trials' workers report the
GPU ids Ray gave them. The trials train on the CPU (``device: auto`` finds no CUDA)."""

from __future__ import annotations

import json

import pytest
from tiny import search_study

from kd_search.engine.spec import parse_study
from kd_search.service.search import Locations, launch

pytestmark = pytest.mark.ray


@pytest.fixture
def two_declared_gpus():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def gpu_ids(locations: Locations, name: str, trials: int) -> list[list[str]]:
    return [json.loads((locations.trial_dir(name, n) / "timings.json").read_text())["gpu_ids"]
            for n in range(trials)]


def test_each_trial_gets_the_gpus_its_resources_ask_for(tmp_path, two_declared_gpus):
    data = search_study(tmp_path, trials=2, resources={"cpu": 1, "gpu": 1})
    study = parse_study(data)
    locations = Locations.resolve(study, tmp_path / "work")
    assert launch(study, locations=locations).counts() == {"COMPLETE": 2}
    assigned = gpu_ids(locations, "tiny", 2)
    assert all(len(ids) == 1 for ids in assigned), assigned

    data["name"] = "tiny-cpu"
    data["search"]["resources"] = {"cpu": 1, "gpu": 0}
    study = parse_study(data)
    assert launch(study, locations=locations).counts() == {"COMPLETE": 2}
    assert gpu_ids(locations, "tiny-cpu", 2) == [[], []]
