"""What the plugin hands a producer (a record) and what it gets back (a delivery outcome)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from confluent_kafka import KafkaError

#: librdkafka partition value meaning "let the partitioner choose".
ANY_PARTITION = -1


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record to produce. ``key=None`` means no key, which is not the same as ``b""``."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int = ANY_PARTITION
    headers: tuple[tuple[str, bytes], ...] = ()


class FailureKind(enum.StrEnum):
    """The two failures a client can act on differently (404 vs 503 in the answer table)."""

    UNKNOWN_TOPIC_OR_PARTITION = "unknown_topic_or_partition"
    KAFKA_UNAVAILABLE = "kafka_unavailable"


@dataclass(frozen=True, slots=True)
class Delivered:
    """The broker acknowledged the record at this position."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Queued:
    """The record sits in the producer's queue; its fate is only logged and counted."""

    topic: str


@dataclass(frozen=True, slots=True)
class Backpressure:
    """The producer queue is full; nothing was queued, the client should retry later."""

    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The record was refused or its delivery failed; ``error_name`` is librdkafka's code name."""

    kind: FailureKind
    error_name: str
    retriable: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryTimeout:
    """No delivery report within the wait bound. The record may still be delivered later."""

    timeout_s: float


DeliveryOutcome: TypeAlias = Delivered | Queued | Backpressure | Failed | DeliveryTimeout

_UNKNOWN_TOPIC_OR_PARTITION = frozenset(
    {KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART}
)
#: Errors that retrying the same record cannot fix (KafkaError.retriable() is not set on delivery
#: reports, so we decide ourselves; everything else is a broker or network condition that passes).
_PERMANENT = frozenset(
    {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError._INVALID_TYPE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._FATAL,
    }
)


def failure(error: KafkaError) -> Failed:
    """Classify a librdkafka error from ``produce()`` or a delivery report."""
    code = error.code()
    kind = (
        FailureKind.UNKNOWN_TOPIC_OR_PARTITION
        if code in _UNKNOWN_TOPIC_OR_PARTITION
        else FailureKind.KAFKA_UNAVAILABLE
    )
    retriable = error.retriable() or not (error.fatal() or code in _PERMANENT)
    return Failed(kind=kind, error_name=error.name(), retriable=retriable, reason=error.str())
