"""Authentication runs before the runner only when the runner sits in ``ext-plugin-post-req``.

APISIX runs ``ext-plugin-pre-req`` in the rewrite phase at priority 12000, before ``key-auth``
(rewrite, 2500); ``ext-plugin-post-req`` runs in the access phase at -3000, after every auth
plugin. The runner always answers the request itself, so on a ``key-auth`` + ``ext-plugin-pre-req``
route it answers, and produces, before ``key-auth`` has looked at the request: such a route lets
anyone produce. That placement is a misconfiguration the README warns about; it is not tested here
(a test would only pin the hole). The tests below pin the placement we recommend.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from harness.docker_stack import DockerStack
from tests.e2e.support import (
    JSON,
    POST_REQ,
    E2ERoute,
    produced_one,
    runner_answer,
    unique,
    wait_until_answered,
)

pytestmark = pytest.mark.e2e

NewTopic = Callable[..., str]
NewRoute = Callable[..., E2ERoute]


@pytest.fixture
def consumer_key(stack: DockerStack) -> str:
    """A key-auth consumer of its own for each test."""
    key = f"k{secrets.token_hex(16)}"
    stack.admin(
        "PUT",
        "consumers",
        {"username": unique("c").replace("-", "_"), "plugins": {"key-auth": {"key": key}}},
    )
    return key


@pytest.fixture
def auth_route(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute, consumer_key: str
) -> tuple[E2ERoute, str]:
    """A key-auth + ext-plugin-post-req route on a fresh topic, once the consumer is known."""
    topic = new_topic()
    route = new_route({"topic": topic, "key": "authenticated"}, phase=POST_REQ, key_auth=True)
    # The consumer reaches the workers through etcd too: wait until key-auth lets it through
    # (the probe's body is not JSON, so the runner refuses it with 400 without producing).
    wait_until_answered(route, {400}, {"apikey": consumer_key})
    return route, topic


def test_post_req_route_refuses_a_request_without_key_before_the_runner(
    stack: DockerStack, auth_route: tuple[E2ERoute, str]
) -> None:
    route, topic = auth_route
    response = route.post(b'{"sneaky": true}', JSON)
    assert response.status_code == 401, response.text
    assert stack.record_count(topic) == 0


def test_post_req_route_refuses_a_wrong_key_before_the_runner(
    stack: DockerStack, auth_route: tuple[E2ERoute, str]
) -> None:
    route, topic = auth_route
    response = route.post(b'{"sneaky": true}', {**JSON, "apikey": "not-the-key"})
    assert response.status_code == 401, response.text
    assert stack.record_count(topic) == 0


def test_post_req_route_produces_for_the_consumer(
    stack: DockerStack, auth_route: tuple[E2ERoute, str], consumer_key: str
) -> None:
    route, topic = auth_route
    response = route.post(b'{"hello": "kafka"}', {**JSON, "apikey": consumer_key})
    record = produced_one(stack, topic, response)
    assert record.value == b'{"hello":"kafka"}'
    assert record.key == b"authenticated"
    assert runner_answer(stack, response, 200)["topic"] == topic
