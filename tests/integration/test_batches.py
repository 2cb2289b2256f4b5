"""Batch routes end to end: fake APISIX -> runner process -> Tansu -> a real consumer.

Every record of a batch is read back at the partition and offset its entry of the answer names
(key, headers, value bytes, order), and every refusal is checked to have produced nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness.broker import EmbeddedBroker, free_port
from harness.consume import ConsumedRecord
from harness.fake_apisix import HTTPAnswer
from harness.gateway import GatewayThread
from harness.routes import config_from_admin_json
from harness.runner_process import RunnerProcess

from .conftest import ReadRecords
from .test_kafka_plugin import JSON, NewTopic, assert_error, body_of, route, send

NDJSON = ("Content-Type", "application/x-ndjson")


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    with RunnerProcess(args=["--workers", "1"]) as proc:
        yield proc


def ndjson(*docs: Any) -> bytes:
    """Records as JSON Lines, each spelled with whitespace (the runner must compact it)."""
    return b"".join(json.dumps(d, separators=(" , ", " : ")).encode() + b"\n" for d in docs)


def compacted(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def records_at(read_records: ReadRecords, answer: HTTPAnswer) -> list[ConsumedRecord | None]:
    """The record each delivered entry of a batch answer points at (None for failed entries)."""
    body = body_of(answer)
    entries = body["records"]
    wanted = [e for e in entries if "offset" in e]
    found = {
        (r.partition, r.offset): r
        for r in read_records(body["topic"], expected=max(e["offset"] for e in wanted) + 1)
    }
    return [found.get((e["partition"], e["offset"])) if "offset" in e else None for e in entries]


def test_ndjson_batch_lands_record_by_record_with_keys_from_jsonkey(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(3)
    value = route(
        broker.bootstrap, topic=topic, batch="ndjson", jsonkey="user.id", forward_headers=["x-*"]
    )
    docs = [{"user": {"id": f"u{i % 5}"}, "n": i, "price": "1.50"} for i in range(20)]
    answer = send(runner, value, ndjson(*docs) + b"\n\n", NDJSON, ("x-request-id", "batch-1"))
    assert answer.status == 200, answer.body
    body = body_of(answer)
    assert (body["topic"], body["delivered"], body["failed"]) == (topic, 20, 0)
    assert len(body["records"]) == 20
    landed = records_at(read_records, answer)
    for doc, record in zip(docs, landed, strict=True):
        assert record is not None
        assert record.value == compacted(doc)
        assert record.key == doc["user"]["id"].encode()
        assert record.headers == (("x-request-id", b"batch-1"),)
    assert len({r.partition for r in landed if r is not None}) > 1, "five keys, three partitions"
    for partition in {r.partition for r in landed if r is not None}:
        ns = [json.loads(r.value or b"")["n"] for r in landed if r and r.partition == partition]
        assert ns == sorted(ns), "records of one partition keep the request's order"


def test_json_array_batch_keeps_each_elements_bytes_and_order_in_one_partition(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch="json-array", key="k")
    body = b'[ {"a" : 1.50e3} ,\n "x\\u00e9\\"],[" , [ 1 , [ ] ] , {"dup": 1, "dup": 2} ]'
    answer = send(runner, value, body, JSON)
    assert answer.status == 200, answer.body
    entries = body_of(answer)["records"]
    assert [e["partition"] for e in entries] == [0] * 4
    assert [e["offset"] for e in entries] == list(
        range(entries[0]["offset"], entries[0]["offset"] + 4)
    )
    landed = records_at(read_records, answer)
    assert [r.value for r in landed if r] == [
        b'{"a":1.50e3}',
        b'"x\\u00e9\\"],["',
        b"[1,[]]",
        b'{"dup":1,"dup":2}',
    ]
    assert {r.key for r in landed if r} == {b"k"}


@pytest.mark.parametrize(
    ("batch", "body", "status", "code", "index"),
    [
        ("ndjson", b'{"id": 1}\n{"id": 2}\n{"id": }\n{"id": 4}\n', 400, "invalid_json", 2),
        ("ndjson", b'{"id": 1}\n{"user": 2}\n', 422, "key_not_found", 1),
        (
            "json-array",
            b'[{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}]',
            413,
            "too_many_records",
            4,
        ),
        ("json-array", b'[{"id": 1}, {"id": [}]', 400, "invalid_json", 1),
    ],
)
def test_an_invalid_record_refuses_the_whole_batch_naming_its_index_and_produces_nothing(
    runner: RunnerProcess,
    broker: EmbeddedBroker,
    new_topic: NewTopic,
    read_records: ReadRecords,
    batch: str,
    body: bytes,
    status: int,
    code: str,
    index: int,
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch=batch, jsonkey="id", max_batch_records=4)
    refused = assert_error(send(runner, value, body, JSON), status, code)
    assert refused["record"] == index
    assert refused["message"].startswith(f"record {index}: ")
    assert read_records(topic, timeout=0.5) == []


def test_a_content_type_the_format_cannot_read_is_415_before_the_body(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch="ndjson")
    form = ("Content-Type", "application/x-www-form-urlencoded")
    assert_error(send(runner, value, b"1\n2\n", form), 415, "unsupported_media_type")
    assert read_records(topic, timeout=0.5) == []


def test_one_record_over_message_max_bytes_gives_207_with_exactly_that_record_failed(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch="ndjson", config={"message.max.bytes": 2000})
    docs: list[Any] = [{"n": i} for i in range(5)]
    docs[3] = {"n": 3, "pad": "x" * 5000}
    answer = send(runner, value, ndjson(*docs), NDJSON)
    assert answer.status == 207, answer.body
    body = body_of(answer)
    assert (body["delivered"], body["failed"]) == (4, 1)
    assert body["records"][3]["error"] == "body_too_large"
    assert all("offset" in e for i, e in enumerate(body["records"]) if i != 3)
    landed = records_at(read_records, answer)
    assert landed[3] is None
    assert [r.value for r in landed if r] == [compacted(d) for i, d in enumerate(docs) if i != 3]
    assert len(read_records(topic, timeout=1.0)) == 4, "nothing else reached the topic"


def test_a_batch_none_of_whose_records_is_delivered_gets_the_single_record_status(
    runner: RunnerProcess,
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    value = route(dead, topic="t", batch="ndjson", config={"message.timeout.ms": 300})
    answer = send(runner, value, b"1\n2\n3\n", NDJSON)
    body = assert_error(answer, 503, "kafka_unavailable")
    assert (body["delivered"], body["failed"]) == (0, 3)
    assert [e["error"] for e in body["records"]] == ["kafka_unavailable"] * 3


def test_a_sync_batch_waits_one_timeout_ms_for_all_its_records_then_answers_504(
    runner: RunnerProcess,
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    value = route(dead, topic="t", batch="ndjson", timeout_ms=400)
    started = time.monotonic()
    answer = send(runner, value, b"".join(b"%d\n" % i for i in range(20)), NDJSON)
    body = assert_error(answer, 504, "delivery_timeout")
    # 20 deadlines one after the other would take 8 s.
    assert time.monotonic() - started < 4.0, "one deadline for the batch, not one per record"
    assert (body["delivered"], body["failed"]) == (0, 20)
    assert [e["error"] for e in body["records"]] == ["delivery_timeout"] * 20


def test_async_batch_is_202_with_the_queued_count_and_every_record_arrives(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch="ndjson", delivery="async")
    docs = [{"n": i} for i in range(50)]
    answer = send(runner, value, ndjson(*docs), NDJSON)
    assert answer.status == 202, answer.body
    assert body_of(answer) == {"topic": topic, "queued": 50, "failed": 0}
    assert [r.value for r in read_records(topic, expected=50)] == [compacted(d) for d in docs]


def test_async_backpressure_mid_batch_is_207_naming_the_queued_and_the_refused_records(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(
        broker.bootstrap,
        topic=topic,
        batch="ndjson",
        delivery="async",
        config={"linger.ms": 500, "queue.buffering.max.messages": 3},
    )
    answer = send(runner, value, ndjson(*({"n": i} for i in range(5))), NDJSON)
    assert answer.status == 207, answer.body
    assert answer.header("Retry-After") == "1"
    body = body_of(answer)
    assert (body["queued"], body["failed"]) == (3, 2)
    assert [e.get("status") or e["error"] for e in body["records"]] == [
        "queued",
        "queued",
        "queued",
        "backpressure",
        "backpressure",
    ]
    landed = read_records(topic, expected=3)
    assert [r.value for r in landed] == [compacted({"n": i}) for i in range(3)]
    assert len(read_records(topic, timeout=1.0)) == 3, "the refused records were never queued"


def test_a_streamed_ndjson_batch_through_the_http_gateway_is_answered_207_multi_status(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(
        broker.bootstrap,
        topic=topic,
        batch="ndjson",
        jsonkey="id",
        config={"message.max.bytes": 2000},
    )
    routes = config_from_admin_json(
        {
            "uri": "/events",
            "plugins": {
                "ext-plugin-post-req": {"conf": [{"name": "kafkaupstream", "value": value}]}
            },
        }
    )
    lines = [b'{"id": "a"}\n', b'{"id": "b", "pad": "' + b"x" * 3000 + b'"}\n', b'{"id": "c"}\n']
    with GatewayThread(routes, runner.socket_path) as gateway:
        # A generator body: requests sends it chunked, as a client streaming its lines would.
        answer = requests.post(
            gateway.url + "/events",
            data=iter(lines),
            headers={"Content-Type": "application/x-ndjson"},
            timeout=15,
        )
    assert (answer.status_code, answer.reason) == (207, "Multi-Status"), answer.text
    body = answer.json()
    assert (body["delivered"], body["failed"]) == (2, 1)
    assert body["records"][1]["error"] == "body_too_large"
    landed = read_records(topic, expected=2)
    assert [(r.key, r.value) for r in landed] == [(b"a", b'{"id":"a"}'), (b"c", b'{"id":"c"}')]
    assert [r.offset for r in landed] == [e["offset"] for e in body["records"] if "offset" in e]


def test_a_batch_over_256_kib_is_split_off_the_loop_and_lands_whole_in_order(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, batch="json-array", max_batch_records=2000)
    docs = [{"n": i, "pad": "y" * 180} for i in range(2000)]
    body = json.dumps(docs, indent=1).encode()
    assert len(body) > 256 * 1024
    answer = send(runner, value, body, JSON)
    assert answer.status == 200, answer.body[:300]
    entries = body_of(answer)["records"]
    first = entries[0]["offset"]
    assert [e["offset"] for e in entries] == list(range(first, first + 2000))
    landed = read_records(topic, expected=2000)
    assert [r.value for r in landed] == [compacted(d) for d in docs]
