"""After a run: read the topic back and count which of the run's ids the broker really holds.

Partitions are ``assign()``-ed from offset 0 (Tansu's group join takes ~20 s) and records are
counted by consuming them: Tansu's high watermark can read low.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Set
from dataclasses import dataclass

from harness.load.bodies import BodyTemplate


@dataclass(frozen=True, slots=True)
class BrokerCheck:
    topic: str
    #: Records of the requests answered 200/202 (warm-up included): each must be in the topic.
    expected: int
    #: Distinct ids of this run found in the topic.
    confirmed: int
    #: Answered 200/202 but not found before the timeout.
    missing: int
    #: Records whose id had already been seen (a retried produce, say).
    duplicates: int
    #: Found although the answer was not 200/202 (e.g. a 504 whose record landed later).
    unanswered_found: int
    records_scanned: int
    seconds: float


def verify_broker(
    bootstrap: str,
    topic: str,
    bodies: BodyTemplate,
    *,
    sent: int,
    expected: int,
    rejected: Set[int],
    timeout: float = 30.0,
    idle: float = 5.0,
) -> BrokerCheck:
    """Consume ``topic`` until every accepted id was seen, nothing new came for ``idle`` seconds,
    or ``timeout`` seconds passed. ``expected`` counts records (``bodies.records`` a request)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    started = time.monotonic()
    deadline = started + timeout
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"load-verify-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "log_level": 3,
        }
    )
    pattern = bodies.id_pattern()
    per_request = bodies.records
    seen: set[int] = set()
    duplicates = scanned = unanswered = 0
    try:
        metadata = consumer.list_topics(timeout=timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise RuntimeError(
                f"cannot read topic {topic!r} on {bootstrap}: "
                f"{found.error if found else 'no such topic'}"
            )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in found.partitions])
        last_record = time.monotonic()
        while len(seen) - unanswered < expected:
            now = time.monotonic()
            if now > deadline or now - last_record > idle:
                break
            messages = consumer.consume(num_messages=10_000, timeout=0.2)
            if messages:
                last_record = time.monotonic()
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consumer error on {topic!r}: {error}")
                scanned += 1
                value = message.value()
                match = pattern.search(value) if isinstance(value, bytes) else None
                if match is None:
                    continue
                n = int(match.group(1))
                if n >= sent:
                    continue
                ident = n * per_request + int(match.group(2) or 0)
                if ident in seen:
                    duplicates += 1
                    continue
                seen.add(ident)
                unanswered += n in rejected
    finally:
        consumer.close()
    confirmed = len(seen)
    return BrokerCheck(
        topic=topic,
        expected=expected,
        confirmed=confirmed,
        missing=expected - (confirmed - unanswered),
        duplicates=duplicates,
        unanswered_found=unanswered,
        records_scanned=scanned,
        seconds=time.monotonic() - started,
    )
