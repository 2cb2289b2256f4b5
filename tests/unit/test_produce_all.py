"""``PooledProducer.produce_all`` without a broker: one outcome per record, in request order.

A scripted client stands in for librdkafka: it takes ``room`` records in all, then raises
BufferError (a full queue); it refuses a ``b"huge"`` value as librdkafka refuses a record over
``message.max.bytes``; and, when told to, reports every taken record delivered at its next poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    Failed,
    KafkaRecord,
    PooledProducer,
    Queued,
    canonical_config,
)

CONFIG = canonical_config({"bootstrap.servers": "unused:9092"})


class Message:
    """The part of a delivery report's Message the producer reads."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def latency(self) -> float:
        return 0.001


class ScriptedClient:
    def __init__(self, room: int, report: bool) -> None:
        self.room, self.report = room, report
        self.accepted: list[bytes] = []
        self._reports: list[Any] = []

    def produce(self, topic: str, value: bytes, key: Any = None, **kwargs: Any) -> None:
        if value == b"huge":
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        if len(self.accepted) >= self.room:
            raise BufferError("queue full")
        self.accepted.append(value)
        self._reports.append((len(self.accepted) - 1, kwargs["on_delivery"]))

    def poll(self, timeout: float = 0) -> int:
        if self.report:
            reports, self._reports = self._reports, []
            for offset, report in reports:
                report(None, Message(offset))
        time.sleep(min(timeout, 0.005))
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._reports)


def produce_all(
    values: list[bytes], *, room: int, wait: bool, report: bool = True, timeout: float = 5.0
) -> tuple[list[DeliveryOutcome], list[bytes]]:
    client = ScriptedClient(room, report)

    async def scenario() -> list[DeliveryOutcome]:
        producer = PooledProducer("p", CONFIG, factory=lambda _settings: cast(Producer, client))
        try:
            records = [KafkaRecord("t", value) for value in values]
            return await producer.produce_all(records, wait=wait, timeout=timeout)
        finally:
            producer.stop_polling()
            producer.join(1.0)

    return asyncio.run(scenario()), client.accepted


def test_sync_outcomes_come_in_request_order_with_a_refused_record_in_its_place() -> None:
    outcomes, accepted = produce_all([b"a", b"huge", b"c"], room=10, wait=True)
    assert accepted == [b"a", b"c"]
    assert outcomes[0] == Delivered("t", 0, 0) and outcomes[2] == Delivered("t", 0, 1)
    assert isinstance(outcomes[1], Failed) and outcomes[1].error_name == "MSG_SIZE_TOO_LARGE"


def test_a_full_queue_stops_queueing_so_only_the_tail_is_refused() -> None:
    for wait in (True, False):
        outcomes, accepted = produce_all([b"a", b"b", b"c", b"d", b"e"], room=2, wait=wait)
        assert accepted == [b"a", b"b"], "nothing after the first refusal is even tried"
        assert [type(o) for o in outcomes[2:]] == [Backpressure] * 3
        done = Delivered if wait else Queued
        assert [type(o) for o in outcomes[:2]] == [done, done]


def test_missing_reports_time_out_together_at_one_deadline() -> None:
    outcomes, _ = produce_all([b"a"] * 50, room=100, wait=True, report=False, timeout=0.2)
    assert outcomes == [DeliveryTimeout(0.2)] * 50
    assert all(o is outcomes[0] for o in outcomes), "one timer settled every waiting record"
