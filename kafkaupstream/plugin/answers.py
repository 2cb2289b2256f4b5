"""Every HTTP answer the runner gives, in one place: the table of README's "HTTP answers".

Bodies are JSON with ``Content-Type: application/json``. Errors are ``{"error": code, "message":
text}``; the text says what to do and never holds a configuration value or a secret. The server's
own answers (:data:`INTERNAL_ERROR`, :data:`SHUTTING_DOWN`) are here too, and so is reading the
code back from an answer (:func:`error_code`), for the metrics the server counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from kafkaupstream.api import Answer
from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    Failed,
    FailureKind,
    Queued,
)
from kafkaupstream.spool import Spooled, SpoolFull, SpoolOutcome, SpoolUnavailable

_JSON = ("Content-Type", "application/json")
_JSON_ONLY = (_JSON,)


def _quoted(text: str) -> bytes:
    """A JSON string literal for ``text``, as json.dumps writes it (ASCII only)."""
    return encode_basestring_ascii(text).encode()


class RequestError(Exception):
    """A request the plugin refuses; maps to exactly one error answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details

    def answer(self) -> Answer:
        return error_answer(self.status, self.code, self.message, self.headers, self.details)


class RecordError(RequestError):
    """A record of a batch that refuses the whole batch; the answer names its 0-based index."""

    def __init__(self, index: int, error: RequestError) -> None:
        super().__init__(
            error.status,
            error.code,
            f"record {index}: {error.message}",
            error.headers,
            details=error.details,
        )
        self.index = index

    def answer(self) -> Answer:
        fields = {"error": self.code, "message": self.message, "record": self.index}
        body = json.dumps({**fields, **(self.details or {})}, ensure_ascii=False)
        return Answer(self.status, body.encode(), (_JSON, *self.headers))


def error_answer(
    status: int,
    code: str,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
    details: Mapping[str, Any] | None = None,
) -> Answer:
    """``{"error": code, "message": message}``, then ``details`` (machine-readable fields)."""
    fields = {"error": code, "message": message, **(details or {})}
    body = json.dumps(fields, ensure_ascii=False)
    return Answer(status, body.encode(), (_JSON, *headers))


#: Every error body starts so (``error_answer`` writes the code first), which lets
#: :func:`error_code` read the code without parsing the body.
_ERROR_PREFIX = b'{"error": "'
_MAX_CODE = 64


def error_code(answer: Answer) -> str:
    """The error code of an error answer (``""`` for a success or a body that is not ours)."""
    body = answer.body
    if answer.status < 300 or not body.startswith(_ERROR_PREFIX):
        return ""
    start = len(_ERROR_PREFIX)
    code = body[start : body.find(b'"', start, start + _MAX_CODE + 1)]
    if code and code.islower() and code.replace(b"_", b"").isalpha():
        return code.decode("ascii")
    return ""


_RETRY_SOON = (("Retry-After", "1"),)

#: A plugin raised: a bug, logged with its traceback by the server.
INTERNAL_ERROR = error_answer(
    500, "internal_error", "the runner failed on this request; see its log"
)
#: The runner stopped serving (SIGTERM): the request was not produced. One code for every
#: answer shutdown gives, from the server or from the plugin.
SHUTTING_DOWN = error_answer(
    503,
    "shutting_down",
    "the runner is shutting down; retry after the delay in Retry-After",
    _RETRY_SOON,
)
#: The worker holds ``--max-in-flight`` requests already; refused before the body is fetched.
TOO_MANY_IN_FLIGHT = error_answer(
    503,
    "backpressure",
    "too many requests are waiting on Kafka in this runner worker; retry after the delay in "
    "Retry-After",
    _RETRY_SOON,
)
#: The worker holds ``--max-awaiting-body`` requests whose bodies APISIX is still reading.
TOO_MANY_AWAITING_BODY = error_answer(
    503,
    "backpressure",
    "too many requests are waiting for their bodies in this runner worker; retry after the "
    "delay in Retry-After",
    _RETRY_SOON,
)


#: The topic header names a topic the producer's brokers do not list: refused without producing,
#: since a producer naming an unknown topic makes many brokers create it.
UNKNOWN_HEADER_TOPIC = error_answer(
    404,
    "unknown_topic_or_partition",
    "the topic in the header does not exist in Kafka, and a request never creates one",
)


def topic_lookup_failed(cause: str) -> Answer:
    """Kafka did not say whether the header's topic exists; nothing was produced."""
    return error_answer(
        503,
        "kafka_unavailable",
        f"could not learn from Kafka whether the topic in the header exists ({cause}); retry later",
    )


_RECORD_TOO_LARGE = "the record (body, key and headers) exceeds the producer's message.max.bytes"


def record_too_large() -> RequestError:
    """The record cannot fit the producer's ``message.max.bytes``: retrying cannot help."""
    return RequestError(413, "body_too_large", _RECORD_TOO_LARGE)


#: Serving this route's ``config`` needs one more producer than ``--max-producers`` allows in
#: this worker; nothing was produced. Unused producers are released (after the conf-token TTL
#: plus ``--producer-grace``), so the cap frees up on its own unless configs keep multiplying.
TOO_MANY_PRODUCERS = error_answer(
    503,
    "too_many_producers",
    "this runner worker already holds its maximum number of Kafka producers (one per distinct "
    "route config); the runner's log says which limit, raise --max-producers or share configs",
)


def bad_header(name: str, reason: str) -> RequestError:
    return RequestError(400, "invalid_header", f"header {name!r} {reason}")


def unsupported_media_type() -> RequestError:
    return RequestError(
        415,
        "unsupported_media_type",
        "this route validates JSON bodies against a schema: send Content-Type: application/json",
    )


def schema_violation(found: Sequence[tuple[str, str]]) -> RequestError:
    """422 for a record that breaks the route's schema: (pointer, keyword) of each violation.

    Only pointers into the record and keyword names are said, never the schema's values. In a
    batch, :class:`RecordError` adds the record's index.
    """
    places = "; ".join(f"{where or '(root)'}: {keyword}" for where, keyword in found)
    violations = [{"pointer": where, "keyword": keyword} for where, keyword in found]
    return RequestError(
        422,
        "schema_violation",
        f"the record does not match the route's schema ({places}); nothing was produced",
        details={"violations": violations},
    )


def route_config_invalid(field: str, reason: str) -> Answer:
    return error_answer(
        500,
        "route_config_invalid",
        f"the route's kafkaupstream configuration is invalid: {field}: {reason}",
    )


def spool_answer(outcome: SpoolOutcome) -> Answer:
    """The answer for what the spool made of the record."""
    if isinstance(outcome, Spooled):
        return Answer(
            202, b'{"topic": %s, "status": "spooled"}' % _quoted(outcome.topic), _JSON_ONLY
        )
    if isinstance(outcome, SpoolFull):
        return error_answer(
            503,
            "backpressure",
            "the runner's spool is full; retry after the delay in Retry-After",
            (("Retry-After", str(max(1, math.ceil(outcome.retry_after_s)))),),
        )
    if isinstance(outcome, SpoolUnavailable):
        return SPOOL_UNAVAILABLE
    raise TypeError(f"not a spool outcome: {outcome!r}")


#: The spool file cannot be written (disk full, I/O error, not openable): nothing was kept.
SPOOL_UNAVAILABLE = error_answer(
    503,
    "spool_unavailable",
    "the runner cannot write its spool (see its log); nothing was kept, retry after the delay "
    "in Retry-After",
    _RETRY_SOON,
)


def outcome_answer(outcome: DeliveryOutcome, timeout_ms: int) -> Answer:
    """The answer for what the producer made of the record."""
    # The answers of every request are formatted directly: json.dumps of a dict costs more than
    # the rest of the answer. The bytes are json.dumps's (ensure_ascii, ", " and ": ").
    if isinstance(outcome, Delivered):
        body = b'{"topic": %s, "partition": %d, "offset": %d}' % (
            _quoted(outcome.topic),
            outcome.partition,
            outcome.offset,
        )
        return Answer(200, body, _JSON_ONLY)
    if isinstance(outcome, Queued):
        return Answer(
            202, b'{"topic": %s, "status": "queued"}' % _quoted(outcome.topic), _JSON_ONLY
        )
    return outcome_error(outcome, timeout_ms).answer()


def outcome_error(outcome: DeliveryOutcome, timeout_ms: int) -> RequestError:
    """The error a record that was not delivered (or queued) gets: one mapping for every answer."""
    if isinstance(outcome, Backpressure):
        return RequestError(
            503,
            "backpressure",
            "the producer queue is full; retry after the delay in Retry-After",
            (("Retry-After", str(max(1, math.ceil(outcome.retry_after_s)))),),
        )
    if isinstance(outcome, DeliveryTimeout):
        return RequestError(
            504,
            "delivery_timeout",
            f"no delivery report from Kafka within {timeout_ms} ms; the record may still be "
            "delivered, so a retry may duplicate it",
        )
    if isinstance(outcome, Failed):
        if outcome.error_name == "MSG_SIZE_TOO_LARGE":  # retrying cannot help: not a 503
            return RequestError(413, "body_too_large", _RECORD_TOO_LARGE)
        if outcome.kind is FailureKind.UNKNOWN_TOPIC_OR_PARTITION:
            return RequestError(
                404,
                "unknown_topic_or_partition",
                f"Kafka does not know this topic or partition ({outcome.error_name})",
            )
        return RequestError(
            503,
            "kafka_unavailable",
            f"the record was not delivered ({outcome.error_name}); retry later",
        )
    raise TypeError(f"not a delivery outcome: {outcome!r}")


def unsupported_batch_type(batch: str, accepted: Sequence[str]) -> RequestError:
    """A batch route refuses a content type its format cannot be read as."""
    return RequestError(
        415,
        "unsupported_media_type",
        f"this route takes {batch} batches: send Content-Type {' or '.join(accepted)}",
    )


_QUEUED_ENTRY = b'{"status": "queued"}'


def batch_answer(
    topic: str, outcomes: Sequence[DeliveryOutcome], *, sync: bool, timeout_ms: int
) -> Answer:
    """The answer for a batch: one entry per record in request order, and counts up front.

    200 (sync) or 202 (async) when every record was delivered or queued; 207 when only some
    were; when none was, the status a single record would have got from the first failure.
    Every body holds the counts, so a 207 cannot pass for a success by its body either.
    """
    entries: list[bytes] = []
    failures: dict[int, RequestError] = {}  # one per distinct outcome object: most are shared
    first: RequestError | None = None
    retry_after: tuple[tuple[str, str], ...] = ()
    failed = 0
    for outcome in outcomes:
        if type(outcome) is Delivered:
            entries.append(b'{"partition": %d, "offset": %d}' % (outcome.partition, outcome.offset))
            continue
        if type(outcome) is Queued:
            entries.append(_QUEUED_ENTRY)
            continue
        error = failures.get(id(outcome))
        if error is None:
            error = failures[id(outcome)] = outcome_error(outcome, timeout_ms)
        failed += 1
        if first is None:
            first = error
        if error.headers and not retry_after:
            retry_after = error.headers
        entries.append(_error_entry(error))
    done = len(entries) - failed
    counts = b'"%s": %d, "failed": %d' % (b"delivered" if sync else b"queued", done, failed)
    records = b'"records": [' + b", ".join(entries) + b"]"
    if first is None:
        if sync:
            body = b'{"topic": %s, %s, %s}' % (_quoted(topic), counts, records)
            return Answer(200, body, _JSON_ONLY)
        return Answer(202, b'{"topic": %s, %s}' % (_quoted(topic), counts), _JSON_ONLY)
    if done:
        body = b'{"topic": %s, %s, %s}' % (_quoted(topic), counts, records)
        return Answer(207, body, (_JSON, *retry_after))
    message = f"no record of the batch was {'delivered' if sync else 'queued'}: {first.message}"
    body = b'{"error": %s, "message": %s, "topic": %s, %s, %s}' % (
        _quoted(first.code),
        _quoted(message),
        _quoted(topic),
        counts,
        records,
    )
    return Answer(first.status, body, (_JSON, *first.headers))


def _error_entry(error: RequestError) -> bytes:
    return b'{"error": %s, "message": %s}' % (_quoted(error.code), _quoted(error.message))
