"""Every HTTP answer the runner gives, in one place: the table of README's "HTTP answers".

Bodies are JSON with ``Content-Type: application/json``. Errors are ``{"error": code, "message":
text}``; the text says what to do and never holds a configuration value or a secret. The server's
own answers (:data:`INTERNAL_ERROR`, :data:`SHUTTING_DOWN`) are here too, and so is reading the
code back from an answer (:func:`error_code`), for the metrics the server counts.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii

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
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def answer(self) -> Answer:
        return error_answer(self.status, self.code, self.message, self.headers)


def error_answer(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Answer:
    body = json.dumps({"error": code, "message": message}, ensure_ascii=False)
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


def bad_header(name: str, reason: str) -> RequestError:
    return RequestError(400, "invalid_header", f"header {name!r} {reason}")


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
    if isinstance(outcome, Backpressure):
        return error_answer(
            503,
            "backpressure",
            "the producer queue is full; retry after the delay in Retry-After",
            (("Retry-After", str(max(1, math.ceil(outcome.retry_after_s)))),),
        )
    if isinstance(outcome, DeliveryTimeout):
        return error_answer(
            504,
            "delivery_timeout",
            f"no delivery report from Kafka within {timeout_ms} ms; the record may still be "
            "delivered, so a retry may duplicate it",
        )
    if isinstance(outcome, Failed):
        if outcome.error_name == "MSG_SIZE_TOO_LARGE":  # retrying cannot help: not a 503
            return error_answer(
                413,
                "body_too_large",
                "the record (body, key and headers) exceeds the producer's message.max.bytes",
            )
        if outcome.kind is FailureKind.UNKNOWN_TOPIC_OR_PARTITION:
            return error_answer(
                404,
                "unknown_topic_or_partition",
                f"Kafka does not know this topic or partition ({outcome.error_name})",
            )
        return error_answer(
            503,
            "kafka_unavailable",
            f"the record was not delivered ({outcome.error_name}); retry later",
        )
    raise TypeError(f"not a delivery outcome: {outcome!r}")
