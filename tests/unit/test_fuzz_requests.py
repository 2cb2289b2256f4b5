"""Fuzzing requests: any headers and body give a KafkaRecord or a documented RequestError.

Headers arrive as the codec decodes them (UTF-8 with ``surrogateescape``, so any bytes), names
lower-cased by APISIX or not, duplicated, huge; bodies are JSON-ish, binary or empty. Two
security properties ride along: a topic outside the allow list is always 403, and control
headers never become record headers.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from fnmatch import fnmatchcase
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from kafkaupstream.plugin.answers import RequestError
from kafkaupstream.plugin.config import RouteConfig, is_legal_topic, parse_route_config
from kafkaupstream.plugin.jsonbody import compact
from kafkaupstream.plugin.record import build_record, route_request
from kafkaupstream.producers import KafkaRecord
from kafkaupstream.protocol import TextEntry
from tests.unit.fuzzing import escaped, fuzz

#: Every error route_request/build_record may raise: README's "HTTP answers" table.
DOCUMENTED = {
    (400, "invalid_json"),
    (400, "empty_body"),
    (400, "invalid_header"),
    (400, "no_topic"),
    (403, "topic_not_allowed"),
    (404, "unknown_topic_or_partition"),
    (413, "body_too_large"),
    (422, "key_not_found"),
}
PREFIXES = ["", "cool-", "X-Kafka-"]
JSONKEYS = [None, "user.id", "id", "a[0]", '"user-id".name', "abs(id)", "sort(a)", "to_string(@)"]
ALLOWED = [(), ("*",), ("orders-*", "audit"), ("t?", "[a-c]x")]


@functools.cache
def route_pool() -> tuple[RouteConfig, ...]:
    """Valid routes over the options that steer the precedence rules (parsed once)."""
    routes = []
    options = itertools.product(
        [None, "events"], ALLOWED, PREFIXES, JSONKEYS, [None, "static-key"], [-1, 2], [5, 4096]
    )
    for index, (topic, allowed, prefix, jsonkey, key, partition, max_body) in enumerate(options):
        if (topic is None and not allowed) or index % 7:  # every 7th combination: enough
            continue
        fields: dict[str, Any] = {
            "config": {"bootstrap.servers": "127.0.0.1:9092"},
            "topic": topic,
            "allowed_topics": list(allowed),
            "headerprefix": prefix,
            "jsonkey": jsonkey,
            "key": key,
            "partition": partition,
            "max_body_bytes": max_body,
            "forward_headers": [["x-*"], ["*"], ["x-request-id", "authorization"]][index % 3],
        }
        routes.append(parse_route_config(json.dumps(fields)))
    return tuple(routes)


routes = st.sampled_from(route_pool())


def _recase(name: str, upper: list[bool]) -> str:
    return "".join(c.upper() if u else c for c, u in zip(name, itertools.cycle(upper)))


CONTROL = ["topic", "partition", "key"]
NAMES = ["content-type", "x-request-id", "authorization", "cookie", "x-b3", "host", "x-", "k"]
VALUES: list[str | None] = [
    None,
    *["events", "orders-1", "audit", "tx", "bx", "secrets", "", "*", "a b", "events\n"],
    *["-1", "0", "2", "2147483647", "2147483648", "-2", "5\n", " 5", "\uff11", "0x1"],
    *["application/json", "Application/JSON; charset=utf-8", "text/plain", "application/jsonx"],
    *["application/vnd.a+json", "application/json\n", " application/json ;"],
    *["v" * n for n in (1000, 70_000, 1_000_000)],
]


@functools.cache
def header_pool() -> tuple[TextEntry, ...]:
    """Header entries to draw from: every control name in every prefix and some casings,
    common and random names (any bytes), each with values meant for any of them.

    A pool costs one draw per header where building each would cost a dozen; the lists drawn
    from it still hold duplicates, conflicts and every odd combination.
    """
    rng = random.Random(5)
    names = [prefix + name for prefix in PREFIXES for name in CONTROL]
    names += [_recase(name, [rng.random() < 0.5 for _ in range(4)]) for name in names]
    names += NAMES + [escaped(rng.randbytes(rng.randrange(1, 9))) for _ in range(12)]
    pool = [TextEntry(name, value) for name in names for value in VALUES]
    pool += [TextEntry(rng.choice(names), escaped(rng.randbytes(20))) for _ in range(200)]
    return tuple(pool)


#: Half the lists start with a JSON content type: the pool alone rarely draws one, and JSON
#: bodies are where compaction and jsonkey run.
headers = st.tuples(
    st.sampled_from([(), (TextEntry("content-type", "application/json"),)]),
    st.lists(st.sampled_from(header_pool()), max_size=10),
).map(lambda parts: (*parts[0], *parts[1]))


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 42, 2**70, 1.5, -0.0, 1e300])
    if kind in (2, 3, 4):
        return rng.choice(["", "u-42", "caf\u00e9", "\ud800", "\x00\n", '"', "a" * 300])
    if kind in (5, 6):
        return {
            rng.choice(["id", "user", "a", "", "id"]): _random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))
        }
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


@functools.cache
def body_pool() -> tuple[bytes, ...]:
    """JSON texts in Go-compatible spellings and odd whitespace, and bodies jsonkey trips on."""
    rng = random.Random(11)
    pool = []
    for _ in range(150):
        text = json.dumps(_random_json(rng), indent=rng.choice([None, 0, 2]), ensure_ascii=False)
        pool.append(
            text.replace(",", rng.choice([",", " ,\r\n\t"])).encode("utf-8", "surrogatepass")
        )
    for value in [b'"u-42"', b"42", b"1.50", b"1e3", b"null", b"true", b"[1, 2]", b'"\\ud800"']:
        pool.append(b'{"user": {"id": %s}, "id": %s, "a": [3, 1]}' % (value, value))
    pool.append(b'{"id": %s}' % (b"1" * 5000))
    pool += [b"[" * depth + b"]" * depth for depth in (1, 10_000, 10_001)]
    return tuple(pool)


@st.composite
def damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` cut short, or with a byte replaced or inserted."""
    at = draw(st.integers(0, len(body)))
    how = draw(st.sampled_from(["cut", "replace", "insert"]))
    byte = draw(st.sampled_from([b"}", b",", b"\x00", b"\xff", b'"', b" ", b"1"]))
    if how == "cut":
        return body[:at]
    return body[:at] + byte + body[at + (how == "replace") :]


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from(body_pool()),
    st.sampled_from(body_pool()).flatmap(damaged),
)


def outcome(config: RouteConfig, entries: tuple[TextEntry, ...], body: bytes) -> Any:
    """The record, or the RequestError: any other exception fails the calling test."""
    try:
        return build_record(config, route_request(config, entries), body)
    except RequestError as exc:
        return exc


def topic_allowed(config: RouteConfig, topic: str) -> bool:
    return topic == config.topic or any(fnmatchcase(topic, g) for g in config.allowed_topics)


@fuzz(2200)
@given(config=routes, entries=headers, body=bodies)
def test_any_headers_and_body_give_a_record_or_a_documented_error(
    config: RouteConfig, entries: tuple[TextEntry, ...], body: bytes
) -> None:
    result = outcome(config, entries, body)
    if isinstance(result, RequestError):
        assert (result.status, result.code) in DOCUMENTED, result
        answer = result.answer()
        assert ("Content-Type", "application/json") in answer.headers
        assert json.loads(answer.body) == {"error": result.code, "message": result.message}
        return
    assert isinstance(result, KafkaRecord)
    assert is_legal_topic(result.topic) and topic_allowed(config, result.topic)
    assert result.value is not None and 0 < len(result.value) <= config.max_body_bytes
    if result.value != body:
        assert result.value == compact(body)
    control = {config.topic_header, config.partition_header, config.key_header}
    assert all(config.forwards(n) and n not in control for n, _ in result.headers)
    # Kafka header keys are text: confluent-kafka crashes on a name that is not UTF-8.
    assert all(n.encode("utf-8") for n, _ in result.headers)


@fuzz(1000)
@given(
    config=routes,
    topic=st.one_of(
        st.text(min_size=1, max_size=12),
        st.binary(min_size=1, max_size=12).map(escaped),
        st.sampled_from(["events2", "orders", "orders-", "audit2", "tx1", "t", "ax", "*", "."]),
    ),
    others=headers,
    body=bodies,
)
def test_topic_header_outside_the_allow_list_is_always_403(
    config: RouteConfig, topic: str, others: tuple[TextEntry, ...], body: bytes
) -> None:
    assume(not topic_allowed(config, topic))
    # Without other control headers: conflicting duplicates of those are 400 before any topic.
    control = {config.topic_header, config.partition_header, config.key_header}
    entries = (
        *(e for e in others if e.name.lower() not in control),
        TextEntry(_recase(config.topic_header, [True, False]), topic),
    )
    result = outcome(config, entries, body)
    assert isinstance(result, RequestError)
    assert (result.status, result.code) == (403, "topic_not_allowed")


@fuzz(1000)
@given(
    config=routes,
    forward=st.lists(
        st.sampled_from(["*", "x-*", "*topic", "*key", "cool-*", "topic", "partition", "key"]),
        min_size=1,
        max_size=4,
    ),
    entries=headers,
)
def test_control_headers_are_never_forwarded_as_record_headers(
    config: RouteConfig, forward: list[str], entries: tuple[TextEntry, ...]
) -> None:
    fields = {
        "config": {"bootstrap.servers": "127.0.0.1:9092"},
        "topic": config.topic or "events",
        "headerprefix": config.headerprefix,
        "forward_headers": [*forward, config.topic_header, config.key_header],
    }
    config = parse_route_config(json.dumps(fields))
    try:
        routing = route_request(config, entries)
    except RequestError as exc:
        assert exc.status in (400, 403)
        return
    control = {config.topic_header, config.partition_header, config.key_header}
    assert not control & {name for name, _ in routing.record_headers}
