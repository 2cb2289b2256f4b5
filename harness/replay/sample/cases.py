"""The sample's requests: every precedence rule and every answer a live broker gives.

Each case names what it shows (the note replay prints next to a difference) and the status it
must get; :func:`harness.replay.sample.annotate` refuses to write a sample that disagrees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.replay.sample.routes import MAIN, OTHER

HOST = "replay.test"


@dataclass(frozen=True, slots=True)
class Case:
    note: str
    path: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    method: str = "POST"
    query: str | None = None

    @property
    def target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def request_headers(self) -> tuple[tuple[str, str], ...]:
        return (("Host", HOST), *self.headers)


J = ("Content-Type", "application/json")
NDJSON = ("Content-Type", "application/x-ndjson")


def _user(uid: object, **more: Any) -> bytes:
    return json.dumps({"user": {"id": uid}, **more}).encode()


def _lines(*uids: object, **more: Any) -> bytes:
    """An NDJSON body: one record a line, spelled with spaces (each lands compacted)."""
    return b"".join(
        json.dumps({"user": {"id": uid}, **more}, separators=(" , ", " : ")).encode() + b"\n"
        for uid in uids
    )


CASES = [
    Case(
        "jsonkey user.id gives the key; JSON lands compacted",
        "/replay",
        200,
        (J,),
        b'{ "hello" : "world" , "user" : { "id" : "u-1" } }',
    ),
    Case("the key header beats jsonkey", "/replay", 200, (J, ("key", "header-key")), _user("u-2")),
    Case(
        "not JSON: produced as is, jsonkey skipped, the configured key used",
        "/replay",
        200,
        (("Content-Type", "text/plain"),),
        b"plain text, kept as is",
    ),
    Case(
        "a binary body is produced byte for byte (base64 in this file)",
        "/replay",
        200,
        (("Content-Type", "application/octet-stream"),),
        b"\x00\xff\xfebinary\x80",
    ),
    Case(
        "jsonkey finds nothing: 422, the configured key is no fallback",
        "/replay",
        422,
        (J,),
        b'{"user": {"name": "no id"}}',
    ),
    Case("jsonkey finds null: 422", "/replay", 422, (J,), _user(None)),
    Case(
        "a number key as gjson renders it: 1.50 gives 1.5",
        "/replay",
        200,
        (J,),
        b'{"user":{"id":1.50}}',
    ),
    Case("an empty key header counts as absent", "/replay", 200, (J, ("key", "")), _user("u-8")),
    Case(
        "control header names are case-insensitive",
        "/replay",
        200,
        (J, ("KEY", "Upper")),
        _user("u-9"),
    ),
    Case(
        "a control header twice with different values: 400 invalid_header",
        "/replay",
        400,
        (J, ("key", "a"), ("key", "b")),
        _user("u-10"),
    ),
    Case(
        "a control header twice with one value is fine",
        "/replay",
        200,
        (J, ("key", "same"), ("key", "same")),
        _user("u-11"),
    ),
    Case(
        "the topic header on allowed_topics beats the configured topic",
        "/replay",
        200,
        (J, ("topic", OTHER)),
        _user("u-12"),
    ),
    Case(
        "the configured topic is always allowed",
        "/replay",
        200,
        (J, ("topic", MAIN)),
        _user("u-13"),
    ),
    Case(
        "a topic off allowed_topics: 403", "/replay", 403, (J, ("Topic", "secrets")), _user("u-14")
    ),
    Case(
        "the partition header beats the partitioner",
        "/replay",
        200,
        (J, ("partition", "1")),
        _user("u-15"),
    ),
    Case("invalid JSON: 400 invalid_json", "/replay", 400, (J,), b'{"hello": '),
    Case(
        "JSON with parameters in its content type is still JSON",
        "/replay",
        400,
        (("Content-Type", "Application/JSON; charset=utf-8"),),
        b"{'a': 1}",
    ),
    Case("an empty body: 400 empty_body", "/replay", 400, (J,)),
    Case(
        "application/*+json is JSON: compacted, number spelling and duplicate keys kept",
        "/replay",
        200,
        (("Content-Type", "application/vnd.api+json"),),
        b'{ "user" : { "id" : "u-19" } , "n" : 1.50 , "n" : 2e3 }',
    ),
    Case(
        "x-request-id goes into the record headers; credentials are redacted in this file",
        "/replay",
        200,
        (
            J,
            ("X-Request-Id", "r-20"),
            ("X-Other", "not forwarded"),
            ("Authorization", "Bearer not-a-real-token"),
            ("Cookie", "session=abc"),
            ("X-API-Key", "k-123"),
        ),
        _user("u-20"),
    ),
    Case(
        "a query parameter named like a secret is redacted too",
        "/replay",
        200,
        (J,),
        _user("u-21"),
        query="apikey=query-secret&trace=1",
    ),
    Case("a method the route does not take: APISIX's own 404", "/replay", 404, method="GET"),
    Case("no route: APISIX's own 404", "/nowhere", 404, (J,), b"{}"),
    Case("no key anywhere: a null key", "/replay/plain", 200, (J,), b'{"a": 1}'),
    Case(
        "an empty allowed_topics: the header cannot change the topic",
        "/replay/plain",
        403,
        (J, ("topic", MAIN)),
        b'{"a": 1}',
    ),
    Case("the configured partition", "/replay/partition", 200, (), b"p"),
    Case(
        "the partition header beats the configured partition",
        "/replay/partition",
        200,
        (("partition", "0"),),
        b"p",
    ),
    Case(
        "partition -1 in the header: the partitioner, by key hash",
        "/replay/partition",
        200,
        (("partition", "-1"),),
        b"p",
    ),
    Case(
        "a partition header that is no integer: 400 invalid_header",
        "/replay/partition",
        400,
        (("partition", "first"),),
        b"p",
    ),
    Case(
        "a partition the topic lacks: 404 unknown_topic_or_partition",
        "/replay/partition",
        404,
        (("partition", "7"),),
        b"p",
    ),
    Case(
        "headerprefix: cool-topic and cool-key",
        "/replay/prefix",
        200,
        (("cool-topic", MAIN), ("cool-key", "abc")),
        b"prefixed",
    ),
    Case(
        "headerprefix: the unprefixed names are ordinary headers",
        "/replay/prefix",
        200,
        (("topic", MAIN), ("key", "ignored")),
        b"unprefixed",
    ),
    Case("async: 202 queued", "/replay/async", 202, (J,), b'{"async": true}'),
    Case(
        "no topic configured, none in the header: 400 no_topic", "/replay/no-topic", 400, (), b"x"
    ),
    Case(
        "no topic configured: the header chooses among allowed_topics",
        "/replay/no-topic",
        200,
        (("topic", OTHER),),
        b"x",
    ),
    Case(
        "allowed, but not a legal Kafka topic name: 400 invalid_header",
        "/replay/no-topic",
        400,
        (("topic", "replay-bad/name"),),
        b"x",
    ),
    Case("a body over max_body_bytes: 413", "/replay/small", 413, (), b"x" * 100),
    Case("an invalid route configuration: 500 naming the field", "/replay/broken", 500, (), b"x"),
    Case("a queue with room: 202", "/replay/backpressure", 202, (), b"small"),
    Case(
        "a full producer queue: 503 backpressure, Retry-After",
        "/replay/backpressure",
        503,
        (),
        b"x" * 2048,
    ),
    Case(
        "a batch: a record a line, each keyed by its own user.id, all with x-request-id",
        "/replay/batch",
        200,
        (NDJSON, ("x-request-id", "batch-1")),
        _lines("b-1", "b-2", "b-3", "b-4"),
    ),
    Case(
        "a batch with one record over message.max.bytes: 207, only that record failed",
        "/replay/batch",
        207,
        (NDJSON,),
        _lines("b-5") + _user("b-6", pad="x" * 2000) + b"\n" + _lines("b-7"),
    ),
    Case(
        "an invalid line refuses the whole batch: 400 naming record 1, nothing produced",
        "/replay/batch",
        400,
        (NDJSON,),
        _lines("b-8") + b'{"user": }\n' + _lines("b-9"),
    ),
    Case(
        "a record without its jsonkey refuses the whole batch: 422 naming record 0",
        "/replay/batch",
        422,
        (NDJSON,),
        b'{"no": "id"}\n' + _lines("b-10"),
    ),
    Case(
        "a batch route takes no form bodies: 415",
        "/replay/batch",
        415,
        (("Content-Type", "application/x-www-form-urlencoded"),),
        b"a=1",
    ),
    Case(
        "a JSON array batch: every element a record, compacted, in order",
        "/replay/batch-array",
        200,
        (J,),
        b'[ {"a" : 1} , "two" , [ 3 ] ]',
    ),
    Case(
        "more records than max_batch_records: 413 naming the first one over",
        "/replay/batch-array",
        413,
        (J,),
        b"[1, 2, 3, 4]",
    ),
    Case(
        "async batch: a record bigger than the queue stops queueing there: 207, Retry-After",
        "/replay/batch-backpressure",
        207,
        (NDJSON,),
        b'{"n": 1}\n{"pad": "' + b"x" * 2048 + b'"}\n{"n": 3}\n',
    ),
    Case("no delivery report within timeout_ms: 504", "/replay/dead-timeout", 504, (), b"x"),
    Case(
        "delivery failed (broker unreachable): 503 kafka_unavailable",
        "/replay/dead-unavailable",
        503,
        (),
        b"x",
    ),
]
