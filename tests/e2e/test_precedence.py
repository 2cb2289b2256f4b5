"""Which topic, partition and key a record gets: headers, jsonkey and the route's configuration."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.docker_stack import DockerStack
from tests.e2e.support import E2ERoute, error_code, produced, produced_one, runner_answer

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
NewTopic = Callable[..., str]
NewRoute = Callable[..., E2ERoute]


def test_topic_header_in_allow_list_picks_the_topic(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    other = new_topic(name=f"{topic}-other")
    route = new_route({"topic": topic, "allowed_topics": [f"{topic}-*"]})

    (record,) = produced(stack, other, [route.post(b"to other", {**TEXT, "topic": other})])
    assert record.value == b"to other"
    assert stack.record_count(topic) == 0


def test_configured_topic_is_allowed_in_the_header_without_allow_list(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic})
    produced_one(stack, topic, route.post(b"same", {**TEXT, "topic": topic}))


def test_topic_header_outside_allow_list_is_403_and_produces_nothing(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    elsewhere = new_topic()
    route = new_route({"topic": topic, "allowed_topics": [f"{topic}-*"]})

    response = route.post(b"nope", {**TEXT, "topic": elsewhere})
    assert error_code(stack, response, 403) == "topic_not_allowed"
    assert stack.record_count(topic) == 0
    assert stack.record_count(elsewhere) == 0


def test_no_topic_anywhere_is_400(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    allowed = new_topic()
    route = new_route({"allowed_topics": [allowed]})
    runner_answer(stack, route.post(b"where to?", TEXT), 400)
    # The allowed topic named in the header is enough.
    produced_one(stack, allowed, route.post(b"there", {**TEXT, "topic": allowed}))


def test_partition_header_overrides_configured_partition(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic(partitions=3)
    route = new_route({"topic": topic, "partition": 1})

    configured, from_header = produced(
        stack, topic, [route.post(b"p1", TEXT), route.post(b"p2", {**TEXT, "partition": "2"})]
    )
    assert (configured.partition, configured.value) == (1, b"p1")
    assert (from_header.partition, from_header.value) == (2, b"p2")


@pytest.mark.parametrize("value", ["two", "-2", "1.5"])
def test_bad_partition_header_is_400(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute, value: str
) -> None:
    topic = new_topic(partitions=3)
    route = new_route({"topic": topic})
    runner_answer(stack, route.post(b"x", {**TEXT, "partition": value}), 400)
    assert stack.record_count(topic) == 0


def test_partition_beyond_the_topic_is_404(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic(partitions=1)
    route = new_route({"topic": topic})
    response = route.post(b"x", {**TEXT, "partition": "7"})
    assert error_code(stack, response, 404) == "unknown_topic_or_partition"


def test_header_key_overrides_jsonkey(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "jsonkey": "id", "key": "configured"})
    record = produced_one(stack, topic, route.post(b'{"id": "from-json"}', {**JSON, "key": "hdr"}))
    assert record.key == b"hdr"


def test_jsonkey_overrides_configured_key(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "jsonkey": "user.id", "key": "configured"})
    record = produced_one(stack, topic, route.post(b'{"user": {"id": "u-7"}}', JSON))
    assert record.key == b"u-7"


def test_configured_key_is_used_for_a_body_that_is_not_json(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "jsonkey": "id", "key": "configured"})
    record = produced_one(stack, topic, route.post(b'{"id": "ignored"}', TEXT))
    assert record.key == b"configured"


def test_no_key_configured_gives_a_null_key(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic})
    assert produced_one(stack, topic, route.post(b"keyless", TEXT)).key is None


def test_jsonkey_number_and_object_become_compact_json_text(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    by_number = new_route({"topic": topic, "jsonkey": "n"})
    by_object = new_route({"topic": topic, "jsonkey": "o"})
    body = b'{"n": 42, "o": {"b": 1, "a": [true, null, "x"]}}'

    number, obj = produced(stack, topic, [by_number.post(body, JSON), by_object.post(body, JSON)])
    assert number.key == b"42"
    assert obj.key == b'{"b":1,"a":[true,null,"x"]}'


def test_headerprefix_renames_the_request_headers(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic(partitions=2)
    route = new_route({"topic": topic, "headerprefix": "x-ku-", "key": "configured"})

    unprefixed, prefixed = produced(
        stack,
        topic,
        [
            route.post(b"a", {**TEXT, "key": "plain", "partition": "1"}),
            route.post(b"b", {**TEXT, "X-Ku-Key": "prefixed", "x-ku-partition": "1"}),
        ],
    )
    assert unprefixed.key == b"configured"
    assert prefixed.key == b"prefixed"
    assert prefixed.partition == 1


def test_forward_headers_become_record_headers(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "forward_headers": ["x-trace-*", "X-Tenant"]})
    headers = {**TEXT, "X-Trace-Id": "abc123", "X-Tenant": "acme", "X-Other": "not me"}

    record = produced_one(stack, topic, route.post(b"with headers", headers))
    forwarded = {name.lower(): value for name, value in record.headers}
    assert forwarded == {"x-trace-id": b"abc123", "x-tenant": b"acme"}
