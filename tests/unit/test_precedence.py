"""Precedence and body rules, as pure functions: headers -> routing, body -> record."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kafkaupstream.plugin.answers import RequestError
from kafkaupstream.plugin.config import parse_route_config
from kafkaupstream.plugin.record import build_record, route_request
from kafkaupstream.producers import KafkaRecord
from kafkaupstream.protocol import TextEntry

JSON = ("content-type", "application/json")


def route(**fields: Any) -> Any:
    fields.setdefault("config", {"bootstrap.servers": "127.0.0.1:9092"})
    return parse_route_config(json.dumps(fields))


def record(config: Any, body: bytes, *headers: tuple[str, str]) -> KafkaRecord:
    entries = tuple(TextEntry(name, value) for name, value in headers)
    return build_record(config, route_request(config, entries), body)


def refusal(config: Any, body: bytes, *headers: tuple[str, str]) -> RequestError:
    with pytest.raises(RequestError) as info:
        record(config, body, *headers)
    return info.value


# --- topic -------------------------------------------------------------------------------------


def test_configured_topic_is_used_without_a_header() -> None:
    assert record(route(topic="events"), b"x").topic == "events"


def test_allowed_topic_header_overrides_the_configured_topic() -> None:
    config = route(topic="events", allowed_topics=["audit.*"])
    assert record(config, b"x", ("topic", "audit.eu")).topic == "audit.eu"


def test_topic_header_naming_the_configured_topic_is_always_allowed() -> None:
    assert record(route(topic="events"), b"x", ("topic", "events")).topic == "events"


def test_topic_header_not_allowed_is_403() -> None:
    error = refusal(route(topic="events"), b"x", ("topic", "secrets"))
    assert (error.status, error.code) == (403, "topic_not_allowed")


def test_allowed_topics_globs_are_case_sensitive_like_kafka() -> None:
    error = refusal(route(topic="e", allowed_topics=["audit.*"]), b"x", ("topic", "AUDIT.eu"))
    assert error.status == 403


def test_allowed_glob_matching_an_illegal_topic_name_is_400() -> None:
    error = refusal(route(topic="e", allowed_topics=["*"]), b"x", ("topic", "a b"))
    assert (error.status, error.code) == (400, "invalid_header")


def test_no_topic_at_all_is_400() -> None:
    error = refusal(route(allowed_topics=["a*"]), b"x")
    assert (error.status, error.code) == (400, "no_topic")


def test_empty_topic_header_counts_as_absent() -> None:
    assert record(route(topic="events"), b"x", ("topic", "")).topic == "events"


def test_header_prefix_renames_the_control_headers() -> None:
    config = route(topic="events", headerprefix="cool-", allowed_topics=["t2"])
    assert record(config, b"x", ("cool-topic", "t2")).topic == "t2"
    # Without the prefix the plain name is just another header.
    assert record(config, b"x", ("topic", "t2")).topic == "events"


def test_control_header_names_match_case_insensitively() -> None:
    config = route(topic="events", headerprefix="Cool-", allowed_topics=["t2"])
    assert record(config, b"x", ("COOL-Topic", "t2")).topic == "t2"


def test_conflicting_duplicate_control_headers_are_refused() -> None:
    config = route(topic="events", allowed_topics=["*"])
    error = refusal(config, b"x", ("topic", "a"), ("topic", "b"))
    assert (error.status, error.code) == (400, "invalid_header")
    assert record(config, b"x", ("topic", "a"), ("topic", "a")).topic == "a"


# --- partition ---------------------------------------------------------------------------------


def test_partition_defaults_to_any() -> None:
    assert record(route(topic="t"), b"x").partition == -1


def test_configured_partition_is_used() -> None:
    assert record(route(topic="t", partition=2), b"x").partition == 2


def test_partition_header_overrides_the_configured_partition() -> None:
    assert record(route(topic="t", partition=2), b"x", ("partition", "0")).partition == 0
    assert record(route(topic="t", partition=2), b"x", ("partition", "-1")).partition == -1


@pytest.mark.parametrize("value", ["abc", "1.0", "-2", "+1", " 1", "1_0", "2147483648", "0x1"])
def test_bad_partition_header_is_400_not_silently_ignored(value: str) -> None:
    error = refusal(route(topic="t", partition=1), b"x", ("partition", value))
    assert (error.status, error.code) == (400, "invalid_header")
    assert "partition" in error.message


# --- key ---------------------------------------------------------------------------------------


def test_no_key_anywhere_means_a_null_key() -> None:
    assert record(route(topic="t"), b"x").key is None


def test_configured_key_is_used() -> None:
    assert record(route(topic="t", key="k"), b"x").key == b"k"


def test_jsonkey_outranks_the_configured_key() -> None:
    config = route(topic="t", key="static", jsonkey="user.id")
    assert record(config, b'{"user": {"id": "u1"}}', JSON).key == b"u1"


def test_header_key_outranks_jsonkey() -> None:
    config = route(topic="t", key="static", jsonkey="user.id")
    rec = record(config, b'{"user": {"id": "u1"}}', JSON, ("key", "from-header"))
    assert rec.key == b"from-header"


def test_header_key_outranks_the_configured_key() -> None:
    assert record(route(topic="t", key="static"), b"x", ("key", "h")).key == b"h"


def test_jsonkey_is_skipped_for_non_json_bodies() -> None:
    config = route(topic="t", key="static", jsonkey="user.id")
    rec = record(config, b'{"user": {"id": "u1"}}', ("content-type", "text/plain"))
    assert rec.key == b"static"


def test_jsonkey_applies_to_json_content_types_with_parameters_and_suffixes() -> None:
    config = route(topic="t", jsonkey="id")
    body = b'{"id": "a"}'
    assert record(config, body, ("content-type", "Application/JSON; charset=utf-8")).key == b"a"
    assert record(config, body, ("content-type", "application/vnd.api+json")).key == b"a"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"id": 42}', b"42"),
        (b'{"id": 12345678901234567890123}', b"12345678901234567890123"),
        (b'{"id": 1.50}', b"1.5"),
        (b'{"id": 1e3}', b"1000"),
        (b'{"id": -2.5E-3}', b"-0.0025"),
        (b'{"id": true}', b"true"),
        (b'{"id": {"b": 1, "a": [1, 2]}}', b'{"b":1,"a":[1,2]}'),
        (b'{"id": "caf\\u00e9"}', "café".encode()),
        (b'{"id": ""}', b""),
        (b'{"id": -0}', b"-0"),
        (b'{"id": -0.0}', b"-0"),
        (b'{"id": 1e999}', b"+Inf"),
        (b'{"id": -1e999}', b"-Inf"),
        (b'{"id": ' + b"7" * 5000 + b"}", b"7" * 5000),
        (b'{"id": [' + b"-" + b"8" * 700 + b", 1]}", b"[-" + b"8" * 700 + b",1]"),
        (b'{"id": {"n": ' + b"9" * 999_000 + b"}}", b'{"n":' + b"9" * 999_000 + b"}"),
    ],
)
def test_jsonkey_results_become_text_as_the_originals_gjson_made_them(
    body: bytes, key: bytes
) -> None:
    assert record(route(topic="t", jsonkey="id"), body, JSON).key == key


@pytest.mark.parametrize("body", [b'{"other": 1}', b'{"id": null}', b"[1, 2]", b'"text"'])
def test_jsonkey_finding_nothing_is_422(body: bytes) -> None:
    error = refusal(route(topic="t", key="static", jsonkey="id"), body, JSON)
    assert (error.status, error.code) == (422, "key_not_found")


def test_empty_key_header_counts_as_absent() -> None:
    assert record(route(topic="t", key="static"), b"x", ("key", "")).key == b"static"


# --- body --------------------------------------------------------------------------------------


def test_json_body_is_compacted() -> None:
    rec = record(route(topic="t"), b'{ "hello" : "world" }', JSON)
    assert rec.value == b'{"hello":"world"}'


def test_non_json_body_is_produced_unchanged() -> None:
    body = b'{ "hello" : "world" }\n\x00\xff'
    assert record(route(topic="t"), body, ("content-type", "text/plain")).value == body
    assert record(route(topic="t"), body).value == body


def test_invalid_json_is_400() -> None:
    error = refusal(route(topic="t"), b'{"a": }', JSON)
    assert (error.status, error.code) == (400, "invalid_json")


def test_empty_body_is_400_never_a_tombstone() -> None:
    error = refusal(route(topic="t", key="k"), b"")
    assert (error.status, error.code) == (400, "empty_body")


def test_value_over_message_max_bytes_is_413_before_jsonkey_parses_it() -> None:
    config = route(
        topic="t", jsonkey="id", config={"bootstrap.servers": "b:9092", "message.max.bytes": 1000}
    )
    assert record(config, b'{"id": 1, "pad": "' + b"x" * 900 + b'"}', JSON).key == b"1"
    error = refusal(config, b'{"id": ' + b"9" * 1001 + b"}", JSON)
    assert (error.status, error.code) == (413, "body_too_large")
    assert "message.max.bytes" in error.message
    # Compaction comes first: whitespace that librdkafka never sees does not count.
    assert record(config, b'{"id": 2}' + b" " * 2000, JSON).key == b"2"


@pytest.mark.parametrize(
    ("spelling", "limit"),
    [("1000", 1000), ("0x3E8", 1000), ("01750", 1000), ("+1000", 1000), (" 1000x", 1000)],
)
def test_message_max_bytes_is_read_as_librdkafka_reads_it(spelling: str, limit: int) -> None:
    assert (
        route(
            topic="t", config={"bootstrap.servers": "b:9092", "message.max.bytes": spelling}
        ).max_record_bytes
        == limit
    )


def test_message_max_bytes_defaults_to_librdkafkas() -> None:
    assert route(topic="t").max_record_bytes == 1_000_000


def test_body_over_the_limit_is_413() -> None:
    config = route(topic="t", max_body_bytes=4)
    assert record(config, b"1234").value == b"1234"
    error = refusal(config, b"12345")
    assert (error.status, error.code) == (413, "body_too_large")


# --- record headers ----------------------------------------------------------------------------


def test_forward_headers_become_record_headers_in_the_order_they_arrive() -> None:
    config = route(topic="t", forward_headers=["x-*", "user-agent"])
    rec = record(
        config,
        b"x",
        ("x-request-id", "r1"),
        ("accept", "*/*"),
        ("user-agent", "curl/8"),
        ("x-request-id", "r2"),
    )
    assert rec.headers == (
        ("x-request-id", b"r1"),
        ("user-agent", b"curl/8"),
        ("x-request-id", b"r2"),
    )


def test_control_headers_are_never_forwarded_even_when_a_glob_matches() -> None:
    config = route(topic="t", headerprefix="x-kafka-", forward_headers=["x-*"])
    rec = record(config, b"x", ("x-kafka-key", "k"), ("x-kafka-partition", "0"), ("x-id", "1"))
    assert rec.headers == (("x-id", b"1"),)
    assert rec.key == b"k"


def test_header_names_with_nul_or_control_characters_are_dropped_not_truncated() -> None:
    # librdkafka would store "authorization\0junk" as "authorization": the filter must see it all.
    config = route(topic="t", forward_headers=["*", "x-consumer-username"])
    rec = record(
        config,
        b"x",
        ("authorization\0junk", "Bearer secret"),
        ("x-consumer-username\0", "admin"),
        ("x-tab\tname", "1"),
        ("x-del\x7f", "1"),
        ("x-consumer-username", "alice"),
        ("x-id", "1"),
    )
    assert rec.headers == (("x-consumer-username", b"alice"), ("x-id", b"1"))


def test_header_bytes_that_are_not_utf8_are_forwarded_unchanged() -> None:
    config = route(topic="t", forward_headers=["x-raw"])
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert record(config, b"x", ("x-raw", raw)).headers == (("x-raw", b"caf\xe9"),)


def test_jsonkey_result_too_deep_to_render_is_422_not_a_crash() -> None:
    body = b'{"id": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    error = refusal(route(topic="t", jsonkey="id"), body, JSON)
    assert (error.status, error.code) == (422, "key_not_found")
