"""Fixtures of the docker tests: one Docker engine and one image build for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from docker_host import build_images, docker_engine


@pytest.fixture(scope="session")
def docker(tmp_path_factory) -> Iterator[None]:
    """A running Docker engine (started here, and stopped after the session, where none runs)."""
    with docker_engine(tmp_path_factory.mktemp("dockerd")):
        yield


@pytest.fixture(scope="session")
def image(docker) -> str:
    """The kd-search image (and the stack's PostgreSQL image), built as `make image` builds them."""
    return build_images()
