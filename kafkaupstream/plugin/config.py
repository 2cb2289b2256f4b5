"""The route configuration: the JSON string in the ext-plugin conf ``value``, validated once.

Field names match case-insensitively (as the Go original's ``encoding/json`` did) but an unknown
field is an error naming it, so a typo such as ``partiton`` no longer passes silently. ``null``
means "not given". Errors name the field and never echo a value: a route's config holds secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from jmespath.exceptions import JMESPathError

from kafkaupstream.plugin.jsonkey import JsonKey
from kafkaupstream.plugin.schema import RouteSchema, SchemaError, compile_schema, pointer
from kafkaupstream.plugin.schema_cost import MAX_VALIDATION_WORK
from kafkaupstream.producers import (
    ConfigKey,
    ProducerConfigError,
    canonical_config,
    message_max_bytes,
    redact,
)
from kafkaupstream.producers.validation import check_producer_config

#: APISIX answers 503 itself after 60 s without an RPC answer; a sync wait must end before that.
MAX_TIMEOUT_MS = 55_000
DEFAULT_TIMEOUT_MS = 5_000
DEFAULT_MAX_BODY_BYTES = 1_048_576
#: The largest body that can reach the runner: APISIX sends it in one ExtraInfo.Resp, whose
#: payload (at most 16,777,215 bytes) spends 24 bytes on FlatBuffers (root offset, vtable, table,
#: vector length) and pads the body to 4 bytes. Above it APISIX answers 503 itself, so a larger
#: limit would promise what the runner never sees.
MAX_BODY_LIMIT = 16_777_188
#: Batch formats: JSON Lines (one JSON text per line) or one JSON array of records.
BATCH_FORMATS = ("ndjson", "json-array")
DEFAULT_MAX_BATCH_RECORDS = 1_000
#: A bound on the bound: every record of a batch holds memory and a delivery report until answered.
MAX_BATCH_RECORDS_LIMIT = 100_000
#: Kafka's rule for topic names (legal characters, at most 249 of them, not "." or "..").
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")
#: RFC 9110 token characters: what an HTTP header name may contain.
_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]*\Z")
_BOOTSTRAP_PROPERTIES = ("bootstrap.servers", "metadata.broker.list")
_GLOB_MAGIC = re.compile(r"[*?[]")
#: Credentials a glob never forwards into Kafka; an entry naming one exactly still does.
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "apikey"}
)


def is_legal_topic(name: str) -> bool:
    """Kafka's rule for topic names."""
    return _TOPIC_NAME.match(name) is not None and name not in (".", "..")


class RouteConfigError(ValueError):
    """The route configuration is unusable; ``field`` names the culprit, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """Everything the plugin needs per request, resolved at PrepareConf time."""

    producer_config: ConfigKey
    topic: str | None = None
    partition: int = -1
    key: bytes | None = None
    jsonkey: JsonKey | None = None
    headerprefix: str = ""
    delivery: str = "sync"
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    allowed_topics: tuple[str, ...] = ()
    forward_headers: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: None: one record per request; else the body's batch format (:data:`BATCH_FORMATS`).
    batch: str | None = None
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    schema: RouteSchema | None = None
    _forward_exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _forward_glob: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    #: The producer's ``message.max.bytes`` (None: librdkafka alone judges record sizes).
    max_record_bytes: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        globs = [g for g in self.forward_headers if _GLOB_MAGIC.search(g)]
        exact = frozenset(g for g in self.forward_headers if not _GLOB_MAGIC.search(g))
        pattern = re.compile("|".join(translate(g) for g in globs)) if globs else None
        object.__setattr__(self, "_forward_exact", exact)
        object.__setattr__(self, "_forward_glob", pattern)
        object.__setattr__(self, "max_record_bytes", message_max_bytes(self.producer_config))

    def forwards(self, header: str) -> bool:
        """Whether the (lower-case) request header becomes a Kafka record header."""
        if header in self._forward_exact:
            return True
        glob = self._forward_glob
        return (
            glob is not None and header not in SENSITIVE_HEADERS and glob.match(header) is not None
        )

    @property
    def sync(self) -> bool:
        return self.delivery == "sync"

    @property
    def spooled(self) -> bool:
        """Answered once the record is on the runner's local disk (``--spool-dir``)."""
        return self.delivery == "spool"

    @property
    def topic_header(self) -> str:
        return f"{self.headerprefix}topic"

    @property
    def partition_header(self) -> str:
        return f"{self.headerprefix}partition"

    @property
    def key_header(self) -> str:
        return f"{self.headerprefix}key"

    @property
    def jsonkey_source(self) -> str | None:
        return None if self.jsonkey is None else self.jsonkey.source


def parse_route_config(value: str) -> RouteConfig:
    """Validate the conf ``value`` (a JSON text) into a :class:`RouteConfig`.

    Raises :class:`RouteConfigError`. librdkafka checks the producer properties here, without
    connecting to anything, so a typo fails at PrepareConf rather than at the first request.
    """
    try:
        return _parse_route_config(value)
    except RecursionError:  # JSON nested ~1000 deep, in the value or a jsonkey literal
        raise RouteConfigError("value", "nested too deeply") from None


def _parse_route_config(value: str) -> RouteConfig:
    fields = _fields(value)
    raw_producer_config = fields.pop("config", None)
    parsers: dict[str, Callable[[str, Any], Any]] = {
        "topic": _topic,
        "partition": _partition,
        "key": _key,
        "jsonkey": _jsonkey,
        "headerprefix": _headerprefix,
        "delivery": _delivery,
        "timeout_ms": _int_in(1, MAX_TIMEOUT_MS),
        "allowed_topics": _string_list,
        "forward_headers": _header_globs,
        "max_body_bytes": _int_in(1, MAX_BODY_LIMIT),
        "batch": _batch,
        "max_batch_records": _int_in(1, MAX_BATCH_RECORDS_LIMIT),
        "schema": _schema,
    }
    options = {name: parsers[name](name, raw) for name, raw in fields.items() if raw is not None}
    if "max_batch_records" in options and "batch" not in options:
        raise RouteConfigError("max_batch_records", "only applies to batch routes (set batch)")
    if options.get("delivery") == "spool" and "batch" in options:
        raise RouteConfigError("delivery", "'spool' is for one record a request, not batch routes")
    # Spool routes forward with the idempotent producer too: a retried batch is written once.
    idempotent = options.get("delivery", "sync") in ("sync", "spool")
    config = RouteConfig(
        producer_config=_producer_config(raw_producer_config, idempotent), **options
    )
    idempotence = dict(config.producer_config).get("enable.idempotence", "")
    if config.spooled and idempotence.lower() != "true":
        # The forwarder's order and its retries without duplicates rest on it.
        raise RouteConfigError(
            "config.enable.idempotence",
            "spool routes produce with the idempotent producer: leave enable.idempotence unset "
            "(or true), with acks all, max.in.flight at most 5 and retries above 0",
        )
    if config.topic is None and not config.allowed_topics:
        raise RouteConfigError(
            "topic", "required (or list allowed_topics so that the topic header can choose one)"
        )
    if config.schema is not None:
        _check_validation_work(config.schema, config.max_body_bytes)
    return config


def _check_validation_work(schema: RouteSchema, max_body_bytes: int) -> None:
    """Refuse a schema whose worst body (``max_body_bytes`` of values) would hold the worker."""
    checks = schema.checks_per_value
    if checks * max_body_bytes > MAX_VALIDATION_WORK:
        raise RouteConfigError(
            "schema",
            f"applies up to {checks} subschemas to one value of a body, too many for bodies of "
            f"max_body_bytes: lower max_body_bytes to {MAX_VALIDATION_WORK // checks} or less, "
            "or simplify the schema",
        )


def _fields(value: str) -> dict[str, Any]:
    if not value.strip():
        raise RouteConfigError("value", "empty: expected a JSON object with config and topic")
    try:
        pairs = json.loads(value, object_pairs_hook=_Pairs)
    except ValueError as exc:
        raise RouteConfigError("value", f"not valid JSON ({_position(exc)})") from None
    if not isinstance(pairs, _Pairs):
        raise RouteConfigError("value", "must be a JSON object")
    known = {name.lower(): name for name in _FIELD_NAMES}
    fields: dict[str, Any] = {}
    for raw_name, raw in pairs:
        name = known.get(raw_name.lower())
        if name is None:
            raise RouteConfigError(raw_name, f"unknown field (known: {', '.join(_FIELD_NAMES)})")
        if name in fields:
            raise RouteConfigError(name, "given more than once (names are case-insensitive)")
        fields[name] = raw
    return fields


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (name, value) pairs in order: a dict would drop duplicates silently."""


def _as_dict(name: str, pairs: _Pairs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in pairs:
        if key in out:
            raise RouteConfigError(f"{name}.{key}", "given more than once")
        out[key] = _as_dict(f"{name}.{key}", raw) if isinstance(raw, _Pairs) else raw
    return out


def _position(exc: ValueError) -> str:
    pos = getattr(exc, "pos", None)
    return f"at character {pos}" if pos is not None else "unreadable"


def _producer_config(raw: Any, idempotent: bool) -> ConfigKey:
    if raw is None:
        raise RouteConfigError("config", "required: librdkafka producer properties")
    if not isinstance(raw, _Pairs):
        raise RouteConfigError("config", "must be an object of librdkafka properties")
    try:
        key = canonical_config(_as_dict("config", raw))
    except ProducerConfigError as exc:
        raise RouteConfigError("config", str(exc)) from None
    names = {name for name, _ in key}
    if not names.intersection(_BOOTSTRAP_PROPERTIES):
        raise RouteConfigError("config.bootstrap.servers", "required: the brokers to connect to")
    if idempotent and _idempotence_fits(dict(key)):
        key = tuple(sorted((*key, ("enable.idempotence", "true"))))
    refusal = check_producer_config(key)
    if refusal is not None:
        field = f"config.{refusal.property}" if refusal.property else "config"
        raise RouteConfigError(field, refusal.reason)
    return key


def _idempotence_fits(properties: dict[str, str]) -> bool:
    """Whether a sync route gets ``enable.idempotence`` by default.

    A 200 promises one record: librdkafka's internal retries must not write it twice. The
    default yields to anything the user chose: idempotence itself, or an ``acks`` it forbids.
    """
    if "enable.idempotence" in properties:
        return False

    def chosen(*names: str, default: str) -> str:
        return next((properties[n] for n in names if n in properties), default).lower()

    acks = chosen("acks", "request.required.acks", default="all")
    in_flight = chosen("max.in.flight", "max.in.flight.requests.per.connection", default="5")
    retries = chosen("retries", "message.send.max.retries", default="1")
    return (
        acks in ("all", "-1")
        and in_flight.isdigit()
        and int(in_flight) <= 5
        and retries not in ("0",)
    )


def _topic(name: str, raw: Any) -> str:
    text = _string(name, raw)
    if not is_legal_topic(text):
        raise RouteConfigError(name, "not a legal Kafka topic name ([A-Za-z0-9._-], 1-249)")
    return text


def _partition(name: str, raw: Any) -> int:
    return _int_in(-1, 2**31 - 1)(name, raw)


def _key(name: str, raw: Any) -> bytes:
    return _string(name, raw).encode("utf-8", "surrogatepass")


def _jsonkey(name: str, raw: Any) -> JsonKey:
    text = _string(name, raw)
    if not text:
        raise RouteConfigError(name, "empty: give a JMESPath expression or leave the field out")
    try:
        return JsonKey(text)
    except JMESPathError:
        raise RouteConfigError(
            name, "not a valid JMESPath expression (quote names with '-' or digits)"
        ) from None


def _headerprefix(name: str, raw: Any) -> str:
    text = _string(name, raw)
    if not _HEADER_TOKEN.match(text):
        raise RouteConfigError(name, "may only contain HTTP header-name characters")
    return text.lower()


def _schema(name: str, raw: Any) -> RouteSchema:
    try:
        return compile_schema(_plain(name, raw, []))
    except SchemaError as exc:
        raise RouteConfigError(name, str(exc)) from None


def _plain(name: str, raw: Any, path: list[str | int]) -> Any:
    """A parsed JSON value with its objects as dicts; a duplicate key is an error, never dropped."""
    if not isinstance(raw, list):
        return raw
    if not isinstance(raw, _Pairs):  # a JSON array (an object is a _Pairs list)
        return [_plain(name, item, [*path, i]) for i, item in enumerate(raw)]
    out: dict[str, Any] = {}
    for key, item in raw:
        if key in out:
            raise RouteConfigError(name, f"{pointer([*path, key])} is given more than once")
        out[key] = _plain(name, item, [*path, key])
    return out


def _delivery(name: str, raw: Any) -> str:
    text = _string(name, raw).lower()
    if text not in ("sync", "async", "spool"):
        raise RouteConfigError(name, "must be 'sync', 'async' or 'spool'")
    return text


def _batch(name: str, raw: Any) -> str:
    text = _string(name, raw).lower()
    if text not in BATCH_FORMATS:
        raise RouteConfigError(name, "must be 'ndjson' or 'json-array' (or null: one record)")
    return text


def _int_in(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(name: str, raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise RouteConfigError(name, "must be an integer")
        if not low <= raw <= high:
            raise RouteConfigError(name, f"must be between {low} and {high}")
        return raw

    return parse


def _string(name: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise RouteConfigError(name, "must be a string")
    return raw


def _string_list(name: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise RouteConfigError(name, "must be a list of non-empty strings")
    return tuple(raw)


def _header_globs(name: str, raw: Any) -> tuple[str, ...]:
    return tuple(item.lower() for item in _string_list(name, raw))


_FIELD_NAMES: tuple[str, ...] = (
    "config",
    "topic",
    "partition",
    "key",
    "jsonkey",
    "headerprefix",
    "delivery",
    "timeout_ms",
    "allowed_topics",
    "forward_headers",
    "max_body_bytes",
    "batch",
    "max_batch_records",
    "schema",
)


def describe(config: RouteConfig) -> Mapping[str, Any]:
    """The effective settings as plain JSON values, secrets redacted (for ``check-config``)."""
    schema = config.schema
    return {
        "config": redact(config.producer_config),
        "topic": config.topic,
        "partition": config.partition,
        "key": None if config.key is None else config.key.decode("utf-8", "replace"),
        "jsonkey": config.jsonkey_source,
        "headerprefix": config.headerprefix,
        "headers": {
            "topic": config.topic_header,
            "partition": config.partition_header,
            "key": config.key_header,
        },
        "delivery": config.delivery,
        "timeout_ms": config.timeout_ms,
        "allowed_topics": list(config.allowed_topics),
        "forward_headers": list(config.forward_headers),
        "max_body_bytes": config.max_body_bytes,
        "batch": config.batch,
        "max_batch_records": config.max_batch_records if config.batch else None,
        "schema": None if schema is None else schema.source,
        "schema_draft": None if schema is None else schema.draft,
        "schema_checks_per_value": None if schema is None else schema.checks_per_value,
    }
