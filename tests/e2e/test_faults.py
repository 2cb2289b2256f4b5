"""Faults injected into the running stack through the Docker SDK (the stack itself is compose's)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.docker_stack import DockerStack
from tests.e2e.support import JSON, E2ERoute, error_code, produced_one

pytestmark = pytest.mark.e2e

NewTopic = Callable[..., str]
NewRoute = Callable[..., E2ERoute]


def test_a_paused_kafka_is_answered_within_the_routes_timeout_then_served_again(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "delivery": "sync", "timeout_ms": 2000})
    produced_one(stack, topic, route.post(b'{"n": 1}', JSON))  # the producer is connected

    kafka = stack.container("kafka")
    kafka.pause()
    try:
        started = time.monotonic()
        response = route.post(b'{"n": 2}', JSON)
        elapsed = time.monotonic() - started
    finally:
        kafka.unpause()
    assert error_code(stack, response, response.status_code) in {
        "delivery_timeout",
        "kafka_unavailable",
    }
    assert response.status_code in (503, 504)
    assert elapsed < 10, f"answered after {elapsed:.1f} s"

    deadline = time.monotonic() + 60
    while True:
        response = route.post(b'{"n": 3}', JSON)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    produced_one(stack, topic, response)
