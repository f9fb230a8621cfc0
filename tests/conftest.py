"""Shared fixtures: a CLI runner and small study dictionaries."""

from __future__ import annotations

import copy

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
