"""Every HTTP answer the plugin gives, in one place: the table of README's "HTTP answers".

Bodies are JSON with ``Content-Type: application/json``. Errors are ``{"error": code, "message":
text}``; the text says what to do and never holds a configuration value or a secret.
"""

from __future__ import annotations

import json
import math

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

_JSON = ("Content-Type", "application/json")


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


def bad_header(name: str, reason: str) -> RequestError:
    return RequestError(400, "invalid_header", f"header {name!r} {reason}")


def route_config_invalid(field: str, reason: str) -> Answer:
    return error_answer(
        500,
        "route_config_invalid",
        f"the route's kafkaupstream configuration is invalid: {field}: {reason}",
    )


def outcome_answer(outcome: DeliveryOutcome, timeout_ms: int) -> Answer:
    """The answer for what the producer made of the record."""
    if isinstance(outcome, Delivered):
        body = json.dumps(
            {"topic": outcome.topic, "partition": outcome.partition, "offset": outcome.offset}
        )
        return Answer(200, body.encode(), (_JSON,))
    if isinstance(outcome, Queued):
        return Answer(
            202, json.dumps({"topic": outcome.topic, "status": "queued"}).encode(), (_JSON,)
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
