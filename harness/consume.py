"""Read records back from a broker with a plain consumer, for assertions and the live demo.

Partitions are ``assign()``-ed, never ``subscribe()``-d: Tansu's group join takes ~20 s, and a test
wants every record from offset 0 anyway. Tansu's high watermark can read low, so records are
counted by consuming them, never from watermarks.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

_LOG = logging.getLogger(__name__)


class ConsumeError(RuntimeError):
    """The topic could not be read (it does not exist, or the consumer reported an error)."""


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One record as a consumer saw it; header values may be None (Kafka allows null values)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    #: Milliseconds since the epoch, None when the broker gave none.
    timestamp: int | None

    @classmethod
    def from_message(cls, message: Message) -> ConsumedRecord:
        """Copy what a test cares about out of a confluent-kafka Message."""
        ts_type, ts = message.timestamp()
        raw_headers = message.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=_as_bytes(message.key()),
            value=_as_bytes(message.value()),
            headers=tuple((name, _as_bytes(value)) for name, value in pairs),
            timestamp=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
        )


def _as_bytes(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"unexpected record field type {type(data).__name__}")


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            # assign() needs no group, but confluent-kafka insists on a group.id.
            "group.id": f"harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # Tansu holds an empty fetch for fetch.wait.max.ms: keep reads snappy.
            "fetch.wait.max.ms": 50,
            "logger": _LOG,
            "log_level": 3,
        }
    )


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The topic's partitions from all-topics metadata (asking for one topic may auto-create it)."""
    metadata = consumer.list_topics(timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None:
        raise ConsumeError(f"topic {topic!r} does not exist on {_brokers(metadata)}")
    if found.error is not None:
        raise ConsumeError(f"topic {topic!r}: {found.error}")
    return sorted(found.partitions)


def _brokers(metadata: object) -> str:
    """The brokers a metadata answer lists, for error messages."""
    brokers = getattr(metadata, "brokers", {})
    return ",".join(str(b) for b in brokers.values()) or "the broker"


def _check(message: Message) -> bool:
    """True for a record; False for a harmless event; raises on a real consumer error."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    raise ConsumeError(f"consumer error: {error}")


def read_records(
    bootstrap: str,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    expected: int | None = None,
    timeout: float = 10.0,
) -> list[ConsumedRecord]:
    """Every record of ``topic`` from offset 0, sorted by (partition, offset).

    Stops as soon as ``expected`` records were read, else when ``timeout`` seconds have passed
    (so without ``expected`` it always takes the whole timeout). Fewer records than expected is
    not an error here: the caller's assertion says what was missing.
    """
    deadline = time.monotonic() + timeout
    consumer = _consumer(bootstrap)
    try:
        wanted = (
            list(partitions) if partitions is not None else _partitions(consumer, topic, timeout)
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        records: list[ConsumedRecord] = []
        while expected is None or len(records) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in consumer.consume(num_messages=1000, timeout=min(remaining, 0.2)):
                if _check(message):
                    records.append(ConsumedRecord.from_message(message))
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def follow(
    bootstrap: str,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    from_beginning: bool = False,
    stop: threading.Event | None = None,
    poll_interval: float = 0.2,
) -> Generator[ConsumedRecord, None, None]:
    """Yield records of ``topic`` as they arrive, until ``stop`` is set or the generator is closed.

    Partitions are those of the topic when following starts; closing the generator (``close()``,
    ``break`` in a ``for`` loop, garbage collection) closes the consumer.
    """
    consumer = _consumer(bootstrap)
    try:
        wanted = list(partitions) if partitions is not None else _partitions(consumer, topic, 10.0)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in wanted])
        while stop is None or not stop.is_set():
            for message in consumer.consume(num_messages=1000, timeout=poll_interval):
                if _check(message):
                    yield ConsumedRecord.from_message(message)
    finally:
        consumer.close()


def format_record(record: ConsumedRecord) -> str:
    """One line for humans: ``topic=T partition=P offset=O key=K headers={...} value=V``.

    Printable UTF-8 is shown as is (the value, last on the line, even with spaces); other text
    as a quoted ``repr``, non-UTF-8 bytes as a ``b'...'`` repr and a null as ``(null)``.
    """
    headers = ", ".join(f"{name}={_readable(value)}" for name, value in record.headers)
    value = _readable(record.value, last=True)
    return (
        f"topic={record.topic} partition={record.partition} offset={record.offset} "
        f"key={_readable(record.key)} headers={{{headers}}} value={value}"
    )


def _readable(data: bytes | None, *, last: bool = False) -> str:
    if data is None:
        return "(null)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    # Mid-line, a bare word must not be mistaken for the next field or a separator.
    plain = text.isprintable() and (last or not any(c in text for c in " ,={}"))
    return text if plain and text else repr(text)
