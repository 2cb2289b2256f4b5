"""examples/ as shipped: the Admin API bodies of the README's quick start, through real APISIX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.docker_stack import DockerStack
from tests.e2e.support import JSON, E2ERoute, produced, runner_answer, wait_until_answered

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BODY = b'{"glossary": {"title": "example glossary", "GlossDiv": {"title": "S"}}}'


def _load(name: str) -> dict[str, Any]:
    data = json.loads((EXAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def example_routes(stack: DockerStack) -> tuple[E2ERoute, E2ERoute, str]:
    """The example routes and consumer, PUT unchanged; (open route, authenticated route, key).

    The topics are the ones the compose file's kafka-init job created."""
    routes = []
    for name in ("routes/open-route.json", "routes/authenticated-route.json"):
        body = _load(name)
        stack.admin("PUT", f"routes/{body['id']}", body)
        routes.append(E2ERoute(stack, body["id"], body["uri"], {}))
    consumer = _load("consumers/demo-consumer.json")
    stack.admin("PUT", "consumers", consumer)
    key = consumer["plugins"]["key-auth"]["key"]
    open_route, auth_route = routes
    wait_until_answered(open_route, {400})
    wait_until_answered(auth_route, {400}, {"apikey": key})
    return open_route, auth_route, key


def test_open_example_route_produces_with_the_jsonkey(
    stack: DockerStack, example_routes: tuple[E2ERoute, E2ERoute, str]
) -> None:
    open_route, _, _ = example_routes
    (record,) = produced(stack, "kafkaupstream", [open_route.post(BODY, JSON)])
    assert record.key == b"S"
    assert record.value == b'{"glossary":{"title":"example glossary","GlossDiv":{"title":"S"}}}'


def test_open_example_route_takes_topic_and_key_headers(
    stack: DockerStack, example_routes: tuple[E2ERoute, E2ERoute, str]
) -> None:
    open_route, _, _ = example_routes
    response = open_route.post(BODY, {**JSON, "topic": "kafkaupstream2", "key": "headerkey"})
    (record,) = produced(stack, "kafkaupstream2", [response])
    assert record.key == b"headerkey"


def test_authenticated_example_route_needs_the_consumer_key(
    stack: DockerStack, example_routes: tuple[E2ERoute, E2ERoute, str]
) -> None:
    _, auth_route, key = example_routes
    before = stack.record_count("kafkaupstream")
    assert auth_route.post(BODY, JSON).status_code == 401
    assert auth_route.post(BODY, {**JSON, "apikey": "wrong"}).status_code == 401
    assert stack.record_count("kafkaupstream") == before

    response = auth_route.post(BODY, {**JSON, "apikey": key})
    answer = runner_answer(stack, response, 200)
    assert answer["topic"] == "kafkaupstream"
    assert stack.record_count("kafkaupstream") == before + 1


def test_batch_example_route_produces_a_record_a_line_for_a_consumer(
    stack: DockerStack, example_routes: tuple[E2ERoute, E2ERoute, str]
) -> None:
    _, _, key = example_routes
    body = _load("routes/batch-route.json")
    stack.admin("PUT", f"routes/{body['id']}", body)
    route = E2ERoute(stack, body["id"], body["uri"], {})
    wait_until_answered(route, {400}, {"apikey": key})
    lines = b'{"user": {"id": "u1"}, "n": 1}\n{ "user" : {"id": "u2"}, "n": 2 }\n'
    assert route.post(lines, {"Content-Type": "application/x-ndjson"}).status_code == 401

    response = route.post(lines, {"Content-Type": "application/x-ndjson", "apikey": key})
    answer = runner_answer(stack, response, 200)
    assert (answer["topic"], answer["delivered"], answer["failed"]) == ("kafkaupstream", 2, 0)
    records = stack.read_records("kafkaupstream", expected=stack.record_count("kafkaupstream"))
    by_position = {(r.partition, r.offset): r for r in records}
    landed = [by_position[(e["partition"], e["offset"])] for e in answer["records"]]
    assert [(r.key, r.value) for r in landed] == [
        (b"u1", b'{"user":{"id":"u1"},"n":1}'),
        (b"u2", b'{"user":{"id":"u2"},"n":2}'),
    ]
