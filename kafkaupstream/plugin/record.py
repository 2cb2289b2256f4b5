"""From an HTTP request to a Kafka record: the precedence rules, in two steps.

:func:`route_request` reads only the request headers, so a request that cannot be served is
refused before its body is fetched from APISIX; :func:`build_record` then takes the body.

- topic: ``<prefix>topic`` header (must be allowed) > ``topic``; none at all is 400.
- partition: ``<prefix>partition`` header > ``partition`` > -1 (any).
- key: ``<prefix>key`` header > ``jsonkey`` (JSON bodies only) > ``key`` > no key.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

from jmespath.exceptions import JMESPathError

from kafkaupstream.plugin.answers import (
    RequestError,
    bad_header,
    record_too_large,
    schema_violation,
    unsupported_media_type,
)
from kafkaupstream.plugin.config import RouteConfig, is_legal_topic
from kafkaupstream.plugin.jsonbody import (
    IntegerText,
    InvalidJSON,
    compact,
    is_json_content_type,
    parse,
)
from kafkaupstream.plugin.schema import violations
from kafkaupstream.producers import KafkaRecord
from kafkaupstream.protocol import Entries

_PARTITION = re.compile(r"^-?[0-9]{1,10}\Z")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
#: Stands for "the body was not parsed yet" (``None`` is a JSON body's value).
_UNPARSED = object()


@dataclass(frozen=True, slots=True)
class Routing:
    """What the headers decided: where the record goes and what travels with it."""

    topic: str
    partition: int
    header_key: bytes | None
    json_body: bool
    record_headers: tuple[tuple[str, bytes], ...]


def route_request(config: RouteConfig, headers: Entries) -> Routing:
    """Apply the header half of the precedence rules; raises :class:`RequestError`."""
    # Runs for every request: the control names are properties (formatted on each access) and
    # most routes forward no headers, so both are looked up once here.
    topic_header, partition_header, key_header = (
        config.topic_header,
        config.partition_header,
        config.key_header,
    )
    forwards = config.forwards if config.forward_headers else None
    found: dict[str, str] = {}
    content_type: str | None = None
    forwarded: list[tuple[str, bytes]] = []
    for entry in headers:
        name = entry.name.lower()
        value = entry.value or ""
        if name in (topic_header, partition_header, key_header):
            if found.get(name, value) != value:
                raise bad_header(name, "is given more than once with different values")
            found[name] = value
        elif forwards is not None and forwards(name) and _storable_name(name):
            forwarded.append((name, _raw(value)))
        if name == "content-type" and content_type is None:
            content_type = value
    header_key = found.get(key_header)
    json_body = is_json_content_type(content_type)
    if config.schema is not None and config.batch is None and not json_body:
        raise unsupported_media_type()  # batch routes check their own content types
    return Routing(
        topic=_topic(config, found.get(topic_header)),
        partition=_partition(config, found.get(partition_header)),
        header_key=_raw(header_key) if header_key else None,
        json_body=json_body,
        record_headers=tuple(forwarded),
    )


def build_record(config: RouteConfig, routing: Routing, body: bytes) -> KafkaRecord:
    """Apply the body half (size, JSON, jsonkey); raises :class:`RequestError`."""
    check_body(config, body)
    value = body
    if routing.json_body:
        try:
            value = compact(body)
        except InvalidJSON as exc:
            raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if config.max_record_bytes is not None and len(value) > config.max_record_bytes:
        # librdkafka would refuse it at produce time anyway: refuse it before jsonkey parses it.
        raise record_too_large()
    document: object = _UNPARSED
    if config.schema is not None:  # only JSON gets here: single bodies by type, batch records
        document = parse(value)
        found = violations(config.schema, document)
        if found:
            raise schema_violation([(v.pointer, v.keyword) for v in found])
    key = routing.header_key
    if key is None and routing.json_body and config.jsonkey is not None:
        key = _json_key(config, parse(value) if document is _UNPARSED else document)
    if key is None:
        key = config.key
    return KafkaRecord(
        topic=routing.topic,
        value=value,
        key=key,
        partition=routing.partition,
        headers=routing.record_headers,
    )


def check_body(config: RouteConfig, body: bytes) -> None:
    """A body must exist and fit ``max_body_bytes`` (a batch's whole body, too)."""
    if not body:
        # The original produced a null value here: a tombstone for whatever key applied.
        raise RequestError(400, "empty_body", "the request has no body; send the record value")
    if len(body) > config.max_body_bytes:
        raise RequestError(
            413,
            "body_too_large",
            f"the body has {len(body)} bytes; this route accepts at most {config.max_body_bytes}",
        )


def _topic(config: RouteConfig, header: str | None) -> str:
    if not header:
        if config.topic is None:
            raise RequestError(
                400, "no_topic", f"this route has no topic: send one in {config.topic_header!r}"
            )
        return config.topic
    allowed = header == config.topic or any(fnmatchcase(header, g) for g in config.allowed_topics)
    if not allowed:
        raise RequestError(
            403, "topic_not_allowed", "this route may not produce to the topic in the header"
        )
    if not is_legal_topic(header):
        raise bad_header(config.topic_header, "is not a legal Kafka topic name")
    return header


def _partition(config: RouteConfig, header: str | None) -> int:
    if not header:
        return config.partition
    if not _PARTITION.match(header) or not -1 <= int(header) <= 2**31 - 1:
        raise bad_header(config.partition_header, "must be an integer >= -1 (-1: any partition)")
    return int(header)


def _json_key(config: RouteConfig, document: object) -> bytes:
    assert config.jsonkey is not None
    try:
        found = config.jsonkey.search(document)
    except (JMESPathError, RecursionError):  # e.g. abs() of a string: a fault of the body
        raise RequestError(
            422,
            "key_not_found",
            f"jsonkey {config.jsonkey_source!r} cannot be evaluated on this body",
        ) from None
    if found is None:
        raise RequestError(
            422,
            "key_not_found",
            f"jsonkey {config.jsonkey_source!r} finds nothing (or null) in the body",
        )
    try:
        return _raw(key_text(found))
    # Nested too deep, or an integer JMESPath computed (sum, to_number) past int's digit limit.
    except (RecursionError, ValueError):
        raise RequestError(
            422,
            "key_not_found",
            f"jsonkey {config.jsonkey_source!r} finds a value too large to become a key",
        ) from None


def key_text(found: object) -> str:
    """What the Go original's gjson made of a value: strings as is, numbers as Go prints them.

    Integers keep their digits (rendered from their source text when long: never converted);
    other numbers get Go's shortest decimal form without exponent (``1.50`` -> ``1.5``, ``1e3``
    -> ``1000``, ``1e999`` -> ``+Inf``); booleans, objects and arrays become compact JSON.
    """
    if isinstance(found, str):
        return found
    if isinstance(found, IntegerText):
        return found.text
    if isinstance(found, float):
        if math.isinf(found):  # strconv.FormatFloat's spelling
            return "+Inf" if found > 0 else "-Inf"
        return format(Decimal(repr(found)).normalize(), "f")
    return _compact_json(found)


#: How deeply nested a jsonkey result may be to become a key. Explicit, not Python's recursion
#: limit: compiled, the recursion runs on the C stack, which that limit does not guard.
_MAX_KEY_NESTING = 256


def _compact_json(value: object, depth: int = 0) -> str:
    """``json.dumps`` with compact separators, but long integers written as their source text.

    Raises RecursionError past :data:`_MAX_KEY_NESTING` levels.
    """
    if isinstance(value, IntegerText):
        return value.text
    if isinstance(value, (dict, list)):
        if depth >= _MAX_KEY_NESTING:
            raise RecursionError("the jsonkey result is nested too deeply")
        depth += 1
        if isinstance(value, dict):
            items = (
                f"{_compact_json(k, depth)}:{_compact_json(v, depth)}" for k, v in value.items()
            )
            return "{" + ",".join(items) + "}"
        return "[" + ",".join(_compact_json(item, depth) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _storable_name(name: str) -> bool:
    """Whether a header name reaches Kafka as itself; any other is dropped, never forwarded.

    librdkafka keeps a header key as a C string, so a NUL cuts it (``authorization\0junk`` would
    be stored as ``authorization``, past the credential filter); no control character belongs
    in an HTTP field name; and confluent-kafka crashes (SIGSEGV) on a key that is not UTF-8.
    """
    return _CONTROL_CHARACTER.search(name) is None and _is_utf8(name)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the wire (surrogateescape)
        return False
    return True


def _raw(text: str) -> bytes:
    """The bytes behind text decoded with ``surrogateescape`` (header bytes, JSON strings)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \\ud800 escape
        return text.encode("utf-8", "surrogatepass")
