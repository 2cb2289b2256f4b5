"""The e2e fixtures: our image, a real APISIX, a KRaft Kafka and etcd, started once per session.

Every e2e test is skipped, with the reason, when no Docker engine answers a ping. Nothing else
skips them (not ``CI``): with an engine they run. ``KAFKAUPSTREAM_E2E=require`` turns a missing
engine into an error, for machines that must run them.

``KAFKAUPSTREAM_E2E_TIMEOUT`` (seconds, default 900) bounds each e2e test including the session
setup the first one pays for (the image build: minutes the first time, cached by Docker later).
``KAFKAUPSTREAM_E2E_IMAGE`` names a prebuilt image to use instead of building one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from harness.docker_stack import DockerStack, engine_unavailable_reason
from tests.e2e.support import PRE_REQ, E2ERoute, create_route, unique

E2E_TIMEOUT = float(os.environ.get("KAFKAUPSTREAM_E2E_TIMEOUT", "900"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session's setup (build + start) is charged to the first e2e test's timeout.
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


@pytest.fixture(scope="session")
def stack() -> Iterator[DockerStack]:
    """The running stack; skips (or fails, with KAFKAUPSTREAM_E2E=require) without Docker."""
    reason = engine_unavailable_reason()
    if reason is not None:
        hint = "; start one or set DOCKER_HOST (KAFKAUPSTREAM_E2E=require fails instead)"
        if os.environ.get("KAFKAUPSTREAM_E2E") == "require":
            pytest.fail(reason + hint, pytrace=False)
        pytest.skip(reason + hint)
    with DockerStack(build_timeout=E2E_TIMEOUT) as running:
        yield running


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
