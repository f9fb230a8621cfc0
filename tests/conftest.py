"""Shared fixtures: a CLI runner, small study dictionaries, and for the docker tests one Docker
engine and one image build for the session."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

MINIMAL_STUDY = {"name": "t", "student": {"teacher_layers": [2, 4, 6]}}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def minimal_study() -> dict:
    return copy.deepcopy(MINIMAL_STUDY)


SLOW_GROUPS = ("e2e", "ray", "cluster", "docker", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of a slow group is also ``slow``, so ``-m "not slow"`` is the fast loop."""
    for item in items:
        if any(item.get_closest_marker(group) for group in SLOW_GROUPS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def docker(tmp_path_factory) -> Iterator[None]:
    """A running Docker engine (started here, and stopped after the session, where none runs)."""
    from docker_host import docker_engine

    with docker_engine(tmp_path_factory.mktemp("dockerd")):
        yield


@pytest.fixture(scope="session")
def image(docker) -> str:
    """The kd-search image (and the stack's PostgreSQL image), built as `make image` builds them."""
    from docker_host import build_images

    return build_images()
