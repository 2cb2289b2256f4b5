"""Batch routes as pure functions: body -> records (or the refusal naming a record), outcomes ->
the answer. Records read back from a broker are in tests/integration/test_batches.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin.answers import RecordError, RequestError, batch_answer, error_code
from kafkaupstream.plugin.batch import build_batch, check_content_type
from kafkaupstream.plugin.config import RouteConfigError, describe, parse_route_config
from kafkaupstream.plugin.jsonarray import InvalidElement, NotAnArray, array_elements
from kafkaupstream.plugin.jsonbody import compact
from kafkaupstream.plugin.record import route_request
from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    Failed,
    FailureKind,
    KafkaRecord,
    Queued,
)
from kafkaupstream.protocol import TextEntry

NDJSON = ("content-type", "application/x-ndjson")
JSON = ("content-type", "application/json")


def route(**fields: Any) -> Any:
    fields.setdefault("config", {"bootstrap.servers": "127.0.0.1:9092"})
    fields.setdefault("topic", "events")
    return parse_route_config(json.dumps(fields))


def batch(config: Any, body: bytes, *headers: tuple[str, str]) -> list[KafkaRecord]:
    entries = tuple(TextEntry(name, value) for name, value in headers or (NDJSON,))
    check_content_type(config, entries)
    return build_batch(config, route_request(config, entries), body)


def refusal(config: Any, body: bytes, *headers: tuple[str, str]) -> RequestError:
    with pytest.raises(RequestError) as info:
        batch(config, body, *headers)
    return info.value


def answer_json(answer: Any) -> Any:
    return json.loads(answer.body)


# --- configuration -------------------------------------------------------------------------------


def test_batch_and_its_bound_are_route_fields_with_documented_defaults() -> None:
    assert route().batch is None
    config = route(batch="NDJSON")
    assert (config.batch, config.max_batch_records) == ("ndjson", 1000)
    assert describe(route(batch="json-array", max_batch_records=5))["max_batch_records"] == 5


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"batch": "csv"}, "batch"),
        ({"batch": True}, "batch"),
        ({"batch": "ndjson", "max_batch_records": 0}, "max_batch_records"),
        ({"batch": "ndjson", "max_batch_records": 100_001}, "max_batch_records"),
        ({"max_batch_records": 10}, "max_batch_records"),
    ],
)
def test_bad_batch_fields_are_errors_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(RouteConfigError) as info:
        route(**fields)
    assert info.value.field == field


# --- splitting and compaction --------------------------------------------------------------


def test_ndjson_lines_become_records_compacted_like_single_bodies() -> None:
    body = b'{ "a" : 1 }\n\n  \r\n[ 1 , 2 ]\r\n"text"\n{"n": 1.50e3, "s": "x\\u00e9 y"}'
    values = [r.value for r in batch(route(batch="ndjson"), body)]
    assert values == [b'{"a":1}', b"[1,2]", b'"text"', b'{"n":1.50e3,"s":"x\\u00e9 y"}']


def test_json_array_elements_become_records_compacted_like_single_bodies() -> None:
    body = b' [ { "a" : [ 1 , { "b" : "],[" } ] } , 2 , "x\\"]," , [ ] , { } ]\n'
    values = [r.value for r in batch(route(batch="json-array"), body, JSON)]
    assert values == [b'{"a":[1,{"b":"],["}]}', b"2", b'"x\\"],"', b"[]", b"{}"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(json_values, max_size=8), st.sampled_from([None, 1, 2]))
def test_array_elements_are_what_compacting_each_alone_gives(items: list[Any], indent: Any) -> None:
    body = json.dumps(items, indent=indent).encode()
    expected = [compact(json.dumps(item, indent=indent).encode()) for item in items]
    assert array_elements(body) == expected


def test_key_comes_per_record_from_jsonkey_else_header_beats_it() -> None:
    config = route(batch="ndjson", jsonkey="id", key="fallback")
    body = b'{"id": "a"}\n{"id": 7}\n{"id": 1.50}\n'
    assert [r.key for r in batch(config, body)] == [b"a", b"7", b"1.5"]
    keyed = batch(config, body, NDJSON, ("key", "H"))
    assert [r.key for r in keyed] == [b"H"] * 3
    assert [r.key for r in batch(route(batch="ndjson", key="k"), b"1\n2")] == [b"k", b"k"]


def test_topic_partition_and_forwarded_headers_apply_to_every_record() -> None:
    config = route(batch="ndjson", allowed_topics=["other"], forward_headers=["x-id"])
    records = batch(
        config, b"1\n2\n", NDJSON, ("topic", "other"), ("partition", "2"), ("x-id", "r")
    )
    assert {(r.topic, r.partition, r.headers) for r in records} == {("other", 2, (("x-id", b"r"),))}


# --- all-or-nothing validation -----------------------------------------------------------------


def test_an_invalid_line_refuses_the_batch_naming_its_record_index() -> None:
    error = refusal(route(batch="ndjson"), b'{"a":1}\n\n{"a":2}\n{"a": }\n{"a":4}\n')
    assert isinstance(error, RecordError)
    assert (error.status, error.code, error.index) == (400, "invalid_json", 2)
    body = answer_json(error.answer())
    assert body["record"] == 2 and body["message"].startswith("record 2: ")
    assert error_code(error.answer()) == "invalid_json"


@pytest.mark.parametrize(
    ("body", "index"),
    [
        (b'[{"a":1}, {"a": }, 3]', 1),
        (b'[1, 2, "unterminated', 2),
        (b'[1, "a,b", [3, 4], x]', 3),
        (b"[1,]", 1),
        (b"[\n  1,\n  NaN\n]", 1),
        (b'[1, "\x01"]', 1),
    ],
)
def test_an_invalid_array_element_refuses_the_batch_naming_its_index(body: bytes, index: int):
    error = refusal(route(batch="json-array"), body, JSON)
    assert isinstance(error, RecordError)
    assert (error.status, error.code, error.index) == (400, "invalid_json", index)


@pytest.mark.parametrize("body", [b'{"a": [1, 2]}', b'"[1, 2]"', b"[1] [2]", b"[1]]", b"{"])
def test_a_body_that_is_no_array_is_400_without_an_index(body: bytes) -> None:
    error = refusal(route(batch="json-array"), body, JSON)
    assert (error.status, error.code) == (400, "invalid_json")
    assert not isinstance(error, RecordError)


def test_a_record_without_its_jsonkey_refuses_the_batch_with_422() -> None:
    error = refusal(route(batch="ndjson", jsonkey="id"), b'{"id": 1}\n{"id": 2}\n{"no": 3}\n')
    assert isinstance(error, RecordError)
    assert (error.status, error.code, error.index) == (422, "key_not_found", 2)


def test_too_many_records_is_413_naming_the_first_record_over_the_bound() -> None:
    config = route(batch="ndjson", max_batch_records=3)
    assert len(batch(config, b"1\n2\n3\n")) == 3
    error = refusal(config, b"1\n2\n3\n4\n5\n")
    assert isinstance(error, RecordError)
    assert (error.status, error.code, error.index) == (413, "too_many_records", 3)


def test_empty_batches_and_oversized_bodies_are_refused_like_single_bodies() -> None:
    assert refusal(route(batch="ndjson"), b"").code == "empty_body"
    assert refusal(route(batch="ndjson"), b"\n \n\r\n").code == "empty_body"
    assert refusal(route(batch="json-array"), b" [ ] ", JSON).code == "empty_body"
    too_big = refusal(route(batch="ndjson", max_body_bytes=8), b"1\n2\n3\n4\n5\n")
    assert (too_big.status, too_big.code) == (413, "body_too_large")


def test_array_errors_name_the_element_not_a_later_one() -> None:
    with pytest.raises(InvalidElement) as info:
        array_elements(b'[{"a": "x,y"}, {"b": [1, 2, }]')
    assert info.value.index == 1
    with pytest.raises(NotAnArray):
        array_elements(b"{}")


@pytest.mark.parametrize(
    ("batch_format", "content_type", "accepted"),
    [
        ("ndjson", "application/x-ndjson", True),
        ("ndjson", "Application/JSONL; charset=utf-8", True),
        ("ndjson", "application/json", True),
        ("ndjson", "application/x-www-form-urlencoded", False),
        ("ndjson", None, False),
        ("json-array", "application/json", True),
        ("json-array", "application/vnd.events+json", True),
        ("json-array", "application/x-ndjson", False),
    ],
)
def test_content_types_a_batch_format_accepts(
    batch_format: str, content_type: str | None, accepted: bool
) -> None:
    headers = () if content_type is None else (TextEntry("Content-Type", content_type),)
    config = route(batch=batch_format)
    if accepted:
        check_content_type(config, headers)
        return
    with pytest.raises(RequestError) as info:
        check_content_type(config, headers)
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")


# --- answers -----------------------------------------------------------------------------------


def test_all_delivered_is_200_with_positions_in_request_order_and_counts() -> None:
    outcomes: list[DeliveryOutcome] = [Delivered("t", 1, 5), Delivered("t", 0, 9)]
    answer = batch_answer("t", outcomes, sync=True, timeout_ms=5000)
    assert answer.status == 200
    assert answer_json(answer) == {
        "topic": "t",
        "delivered": 2,
        "failed": 0,
        "records": [{"partition": 1, "offset": 5}, {"partition": 0, "offset": 9}],
    }


def test_some_failed_is_207_naming_exactly_the_failed_records() -> None:
    too_big = Failed(FailureKind.KAFKA_UNAVAILABLE, "MSG_SIZE_TOO_LARGE", False)
    outcomes: list[DeliveryOutcome] = [Delivered("t", 0, 1), too_big, Delivered("t", 0, 2)]
    answer = batch_answer("t", outcomes, sync=True, timeout_ms=5000)
    body = answer_json(answer)
    assert answer.status == 207
    assert (body["delivered"], body["failed"]) == (2, 1)
    assert body["records"][0] == {"partition": 0, "offset": 1}
    assert body["records"][1]["error"] == "body_too_large"
    assert body["records"][2] == {"partition": 0, "offset": 2}
    assert answer.headers == (("Content-Type", "application/json"),)


def test_all_failed_is_the_single_record_status_with_the_list() -> None:
    outcomes: list[DeliveryOutcome] = [DeliveryTimeout(5.0)] * 3
    answer = batch_answer("t", outcomes, sync=True, timeout_ms=5000)
    body = answer_json(answer)
    assert answer.status == 504
    assert error_code(answer) == "delivery_timeout"
    assert (body["delivered"], body["failed"]) == (0, 3)
    assert [r["error"] for r in body["records"]] == ["delivery_timeout"] * 3


def test_async_answers_count_queued_records_and_backpressure_keeps_retry_after() -> None:
    queued = batch_answer("t", [Queued("t")] * 4, sync=False, timeout_ms=5000)
    assert (queued.status, answer_json(queued)) == (202, {"topic": "t", "queued": 4, "failed": 0})
    full = Backpressure(1.0)
    partial = batch_answer("t", [Queued("t"), full, full], sync=False, timeout_ms=5000)
    body = answer_json(partial)
    assert partial.status == 207
    assert ("Retry-After", "1") in partial.headers
    assert (body["queued"], body["failed"]) == (1, 2)
    assert body["records"] == [
        {"status": "queued"},
        *[{"error": "backpressure", "message": body["records"][1]["message"]}] * 2,
    ]
    none = batch_answer("t", [full, full], sync=False, timeout_ms=5000)
    assert (none.status, error_code(none), answer_json(none)["queued"]) == (503, "backpressure", 0)
    assert ("Retry-After", "1") in none.headers


@given(st.text(), st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1))))
def test_batch_bodies_are_valid_json_for_any_topic(topic: str, spots: list[tuple[int, int]]):
    outcomes: list[DeliveryOutcome] = [Delivered(topic, p, o) for p, o in spots]
    outcomes.append(Failed(FailureKind.KAFKA_UNAVAILABLE, "_TRANSPORT", True, "down"))
    body = answer_json(batch_answer(topic, outcomes, sync=True, timeout_ms=5000))
    assert body["topic"] == topic
    assert [(r["partition"], r["offset"]) for r in body["records"][:-1]] == spots


BATCH_ERRORS = {
    (400, "invalid_json"),
    (400, "empty_body"),
    (413, "body_too_large"),
    (413, "too_many_records"),
    (422, "key_not_found"),
}
json_ish = st.lists(
    st.sampled_from([b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\n", b" ", b"1", b'"a"']),
    max_size=40,
).map(b"".join)


@given(st.sampled_from(["ndjson", "json-array"]), st.one_of(json_ish, st.binary(max_size=60)))
def test_any_batch_body_gives_its_records_or_a_documented_refusal(fmt: str, body: bytes) -> None:
    config = route(batch=fmt, jsonkey="a", max_batch_records=4, max_body_bytes=50)
    try:
        records = batch(config, body, JSON)
    except RecordError as exc:
        assert (exc.status, exc.code) in BATCH_ERRORS
        assert 0 <= exc.index <= 4
        return
    except RequestError as exc:
        assert (exc.status, exc.code) in BATCH_ERRORS
        return
    assert 1 <= len(records) <= 4
    for record in records:
        assert record.value is not None and compact(record.value) == record.value
        assert record.key is not None
