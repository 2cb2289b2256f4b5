"""The e2e fixtures: examples/docker-compose.yml (our image, APISIX, KRaft Kafka, etcd), started
once per session through pytest-docker's fixtures, so the tests run the stack users run.

``docker_compose_file``, ``docker_compose_project_name``, ``docker_ip``, ``docker_setup`` and
``docker_cleanup`` are pytest-docker's fixtures, set for this suite; ``docker_services`` is its
``Services`` of the running stack. :class:`harness.docker_stack.DockerStack` runs pytest-docker's
start and cleanup with the compose file's variables set (free ports, the address Kafka
advertises, a subnet of its own), retries a start that lost a port, and fails with the
containers' log tails.

Every e2e test is skipped, with the reason, when no Docker engine answers a ping or the docker
CLI has no compose plugin. Nothing else skips them (not ``CI``): with an engine they run.
``KAFKAUPSTREAM_E2E=require`` turns a skip into an error, for machines that must run them.

``KAFKAUPSTREAM_E2E_TIMEOUT`` (seconds, default 900) bounds each e2e test including the session
setup the first one pays for (the image build: minutes the first time, cached by Docker later).
``KAFKAUPSTREAM_E2E_IMAGE`` names a prebuilt image to use instead of building one;
``KAFKAUPSTREAM_E2E_HOST`` the address published ports are reached at (see harness/docker_stack).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import pytest
from pytest_docker.plugin import Services

from harness.docker_stack import (
    COMPOSE_FILE,
    DOWN,
    UP,
    DockerStack,
    build_image,
    compose_unavailable_reason,
    engine_unavailable_reason,
    placement,
)
from tests.e2e.support import PRE_REQ, E2ERoute, create_route, unique

E2E_TIMEOUT = float(os.environ.get("KAFKAUPSTREAM_E2E_TIMEOUT", "900"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session's setup (build + start) is charged to the first e2e test's timeout.
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    # Findable leftovers: docker compose ls --filter name=kafkaupstream-e2e
    return f"kafkaupstream-e2e-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_ip() -> str:
    """KAFKAUPSTREAM_E2E_HOST, else DOCKER_HOST's host (``ssh://user@host`` too), else 127.0.0.1."""
    return placement().host


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return [UP]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return [DOWN]


@pytest.fixture(scope="session")
def e2e_engine(docker_compose_command: str) -> None:
    """Skips (or fails, with KAFKAUPSTREAM_E2E=require) without an engine or docker compose."""
    reason = engine_unavailable_reason() or compose_unavailable_reason(docker_compose_command)
    if reason is None:
        return
    hint = (
        "; start one or set DOCKER_HOST (the SDK does not read docker contexts); "
        "KAFKAUPSTREAM_E2E=require fails instead"
    )
    if os.environ.get("KAFKAUPSTREAM_E2E") == "require":
        pytest.fail(reason + hint, pytrace=False)
    pytest.skip(reason + hint)


@pytest.fixture(scope="session")
def stack(
    e2e_engine: None,
    docker_compose_command: str,
    docker_compose_file: str,
    docker_compose_project_name: str,
    docker_ip: str,
    docker_setup: list[str],
    docker_cleanup: list[str],
) -> Iterator[DockerStack]:
    """The running stack: image built (Docker SDK), compose project up and healthy."""
    client = docker.from_env(timeout=max(E2E_TIMEOUT, 120.0))
    try:
        image = build_image(client)
    finally:
        client.close()
    with DockerStack(
        project=docker_compose_project_name,
        image=image,
        where=placement(host=docker_ip),
        compose_command=docker_compose_command,
        compose_file=docker_compose_file,
        setup=docker_setup,
        cleanup=docker_cleanup,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def docker_services(stack: DockerStack) -> Services:
    """pytest-docker's Services of the running stack (``port_for``, ``wait_until_responsive``)."""
    assert stack.services is not None
    return stack.services


@pytest.fixture
def new_topic(stack: DockerStack) -> Callable[..., str]:
    """``new_topic(partitions=1, name=None)`` creates a topic and returns its name."""

    def create(partitions: int = 1, name: str | None = None) -> str:
        topic = name or unique("t")
        stack.create_topics({topic: partitions})
        return topic

    return create


@pytest.fixture
def new_route(stack: DockerStack) -> Callable[..., E2ERoute]:
    """``new_route(conf, phase=PRE_REQ, key_auth=False, ready=None)``: a route that answers
    (see :func:`tests.e2e.support.create_route`)."""

    def create(
        conf: Mapping[str, Any],
        *,
        phase: str = PRE_REQ,
        key_auth: bool = False,
        ready: set[int] | None = None,
    ) -> E2ERoute:
        return create_route(stack, conf, phase=phase, key_auth=key_auth, ready=ready)

    return create
