"""Request bodies through real APISIX: JSON compaction, raw bytes, limits, refusals, delivery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.docker_stack import MAX_MESSAGE_BYTES, DockerStack
from tests.e2e.support import E2ERoute, error_code, produced_one, runner_answer

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
NewTopic = Callable[..., str]
NewRoute = Callable[..., E2ERoute]

#: Insignificant whitespace everywhere JSON allows it; number spellings, escapes, raw UTF-8,
#: key order and a duplicate key that must all survive compaction byte for byte.
SPACED_JSON = (
    b'{\n  "b" : 1.50e+2 ,\t"a":[ 1 , -0 , {"x" : "\\u00e9 \\" y", "z":"\xc3\xa9 \xc3\xa9"} ],'
    b'\r\n "a" : null , "s":"  two  spaces  " , "t":true }\n'
)
COMPACT_JSON = (
    b'{"b":1.50e+2,"a":[1,-0,{"x":"\\u00e9 \\" y","z":"\xc3\xa9 \xc3\xa9"}],"a":null,'
    b'"s":"  two  spaces  ","t":true}'
)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.acme.event+json"],
)
def test_json_body_is_compacted_byte_exactly(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute, content_type: str
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic})
    record = produced_one(stack, topic, route.post(SPACED_JSON, {"Content-Type": content_type}))
    assert record.value == COMPACT_JSON


def test_body_that_is_not_json_is_produced_unchanged(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic})
    body = SPACED_JSON + b"\x00\xff binary tail"
    record = produced_one(
        stack, topic, route.post(body, {"Content-Type": "application/octet-stream"})
    )
    assert record.value == body


def test_body_of_several_mib_arrives_whole(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    # Larger than any socket buffer: APISIX's ExtraInfo answer reaches the runner in many reads.
    topic = new_topic()
    size = 3 * 1024 * 1024
    route = new_route(
        {
            "topic": topic,
            "max_body_bytes": 8 * 1024 * 1024,
            "config": {
                "bootstrap.servers": stack.ready.kafka_internal,
                "message.max.bytes": MAX_MESSAGE_BYTES,
            },
        }
    )
    body = bytes(range(256)) * (size // 256)
    record = produced_one(stack, topic, route.post(body, TEXT))
    assert record.value == body


def test_body_at_max_body_bytes_is_accepted_and_one_byte_more_is_413(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "max_body_bytes": 64})

    assert error_code(stack, route.post(b"x" * 65, TEXT), 413) == "body_too_large"
    assert stack.record_count(topic) == 0
    assert produced_one(stack, topic, route.post(b"x" * 64, TEXT)).value == b"x" * 64


def test_invalid_json_is_400_invalid_json(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic})
    for body in (b'{"a": 1,}', b"{'a': 1}", b'{"a": 1} trailing', b"\xff"):
        assert error_code(stack, route.post(body, JSON), 400) == "invalid_json", body
    assert stack.record_count(topic) == 0


@pytest.mark.parametrize("headers", [JSON, TEXT])
def test_empty_body_is_400_empty_body(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute, headers: dict[str, str]
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "key": "a-compacted-topic-key"})
    assert error_code(stack, route.post(b"", headers), 400) == "empty_body"
    assert stack.record_count(topic) == 0


@pytest.mark.parametrize("body", [b'{"other": 1}', b'{"id": null}'])
def test_jsonkey_finding_nothing_is_422_key_not_found(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute, body: bytes
) -> None:
    topic = new_topic()
    # The configured key is no fallback: jsonkey outranks it.
    route = new_route({"topic": topic, "jsonkey": "id", "key": "configured"})
    assert error_code(stack, route.post(body, JSON), 422) == "key_not_found"
    assert stack.record_count(topic) == 0


def test_async_delivery_answers_202_queued(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    route = new_route({"topic": topic, "delivery": "async"})

    answer = runner_answer(stack, route.post(b"fire and forget", TEXT), 202)
    assert answer == {"topic": topic, "status": "queued"}
    (record,) = stack.read_records(topic, expected=1)
    assert record.value == b"fire and forget"


def test_sync_answer_names_the_acknowledged_record(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic(partitions=3)
    route = new_route({"topic": topic})
    response = route.post(b"durable", TEXT)
    answer = runner_answer(stack, response, 200)
    # A 200 means acknowledged: the record is in the log already, where the answer says.
    assert stack.record_count(topic) == 1
    record = produced_one(stack, topic, response)
    assert (record.topic, record.partition, record.offset) == (
        answer["topic"],
        answer["partition"],
        answer["offset"],
    )
    assert record.value == b"durable"


def test_invalid_route_configuration_is_500_naming_the_field_but_no_value(
    stack: DockerStack, new_topic: NewTopic, new_route: NewRoute
) -> None:
    topic = new_topic()
    secret = "s3cret-never-echoed"
    route = new_route(
        {
            "topic": topic,
            "jsonKeyy": "id",
            "config": {
                "bootstrap.servers": stack.ready.kafka_internal,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": "user",
                "sasl.password": secret,
            },
        },
        ready={500},
    )
    response = route.post(b'{"id": 1}', JSON)
    answer = runner_answer(stack, response, 500)
    assert answer["error"] == "route_config_invalid"
    assert "jsonkeyy" in answer["message"].lower()
    assert secret not in response.text
    assert secret not in stack.logs()
    assert stack.record_count(topic) == 0
