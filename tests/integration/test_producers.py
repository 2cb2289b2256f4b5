"""The producer pool against a real Kafka-protocol broker, read back with a real consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from harness.broker import EmbeddedBroker, free_port
from harness.consume import read_records
from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryTimeout,
    Failed,
    FailureKind,
    KafkaRecord,
    ProducerClosedError,
    ProducerConfigError,
    ProducerPool,
    Queued,
    canonical_config,
)

from .conftest import BrokerFactory, ReadRecords

T = TypeVar("T")
NewTopic = Callable[[int], str]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def open_pool(close_budget: float = 2.0, **options: Any) -> AsyncIterator[ProducerPool]:
    """A pool closed on exit; records to a dead broker keep close() busy for the whole budget."""
    pool = ProducerPool(**options)
    try:
        yield pool
    finally:
        await pool.close(close_budget)


def live(broker: EmbeddedBroker, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": broker.bootstrap, "linger.ms": 0, **extra}


def dead(**extra: Any) -> dict[str, Any]:
    """A config whose bootstrap port has nobody listening."""
    return {"bootstrap.servers": f"127.0.0.1:{free_port()}", **extra}


# -- where records land --------------------------------------------------------------------------


def test_sync_produce_reports_the_partition_and_offset_where_the_record_is(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(3)
    sent = [
        KafkaRecord(topic, b"v%d" % i, b"k%d" % i, headers=(("h", b"\x00\xff"), ("h", b"%d" % i)))
        for i in range(6)
    ]

    async def scenario() -> list[Any]:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(broker, acks="all")))
            return [await producer.produce(r, wait=True, timeout=5.0) for r in sent]

    outcomes = run(scenario())
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    by_position = {(r.partition, r.offset): r for r in read_records(topic, expected=len(sent))}
    for record, outcome in zip(sent, outcomes, strict=True):
        got = by_position[(outcome.partition, outcome.offset)]
        assert (got.topic, got.key, got.value, got.headers) == (
            topic,
            record.key,
            record.value,
            record.headers,
        )


def test_explicit_partition_is_honoured(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(3)

    async def scenario() -> list[Any]:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(broker)))
            return [
                await producer.produce(
                    KafkaRecord(topic, b"%d" % i, partition=2), wait=True, timeout=5.0
                )
                for i in range(4)
            ]

    outcomes = run(scenario())
    assert [(o.partition, o.offset) for o in outcomes] == [(2, 0), (2, 1), (2, 2), (2, 3)]
    assert {r.partition for r in read_records(topic, expected=4)} == {2}


def test_null_key_and_empty_key_stay_distinct(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)

    async def scenario() -> None:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(broker)))
            await producer.produce(KafkaRecord(topic, b"no key", None), wait=True, timeout=5.0)
            await producer.produce(KafkaRecord(topic, b"empty key", b""), wait=True, timeout=5.0)

    run(scenario())
    assert [(r.value, r.key) for r in read_records(topic, expected=2)] == [
        (b"no key", None),
        (b"empty key", b""),
    ]


def test_async_produce_answers_queued_and_the_record_arrives(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)

    async def scenario() -> Any:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(broker, **{"linger.ms": 50})))
            return await producer.produce(
                KafkaRecord(topic, b"later", b"k"), wait=False, timeout=5.0
            )

    assert run(scenario()) == Queued(topic)
    assert [(r.key, r.value) for r in read_records(topic, expected=1)] == [(b"k", b"later")]


# -- pooling ---------------------------------------------------------------------------------------


def test_equal_configs_share_a_producer_and_different_configs_do_not(
    broker: EmbeddedBroker,
) -> None:
    async def scenario() -> None:
        async with open_pool() as pool:
            flat: dict[str, Any] = {
                "bootstrap.servers": broker.bootstrap,
                "linger.ms": 5,
                "acks": "all",
            }
            reordered: dict[str, Any] = {
                "acks": "all",
                "linger.ms": "5",
                "bootstrap.servers": broker.bootstrap,
            }
            nested: dict[str, Any] = {
                "bootstrap": {"servers": broker.bootstrap},
                "linger": {"ms": 5},
                "acks": "all",
            }
            snapshot = dict(flat)
            shared = pool.get_canonical(canonical_config(flat))
            assert pool.get_canonical(canonical_config(reordered)) is shared
            assert pool.get_canonical(canonical_config(nested)) is shared
            other = pool.get_canonical(canonical_config({**flat, "acks": 1}))
            assert other is not shared
            assert pool.get_canonical(
                canonical_config({**flat, "enable.idempotence": True})
            ) not in (shared, other)
            assert len(pool) == 3
            assert flat == snapshot

    run(scenario())


def test_created_producer_is_logged_with_secrets_redacted(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kafkaupstream.producers")
    config = live(
        broker,
        **{
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "PLAIN",
            "sasl": {"username": "alice", "password": "hunter2-secret"},
        },
    )

    async def scenario() -> None:
        async with open_pool() as pool:
            pool.get_canonical(canonical_config(config))

    run(scenario())
    assert "event=producer_created" in caplog.text
    assert '"sasl.password":"***"' in caplog.text
    assert "hunter2" not in caplog.text


def test_a_config_librdkafka_refuses_is_an_error_without_secrets(broker: EmbeddedBroker) -> None:
    async def scenario() -> None:
        async with open_pool() as pool:
            with pytest.raises(ProducerConfigError, match=r"no\.such\.property") as refused:
                pool.get_canonical(
                    canonical_config(
                        live(broker, **{"no.such.property": "x", "sasl.password": "hunter2"})
                    )
                )
            assert "hunter2" not in str(refused.value)
            with pytest.raises(ProducerConfigError, match="reserved"):
                pool.get_canonical(canonical_config(live(broker, error_cb="x")))
            assert len(pool) == 0

    run(scenario())


# -- failures ------------------------------------------------------------------------------------


def test_unknown_partition_is_unknown_topic_or_partition(
    broker: EmbeddedBroker, new_topic: NewTopic
) -> None:
    """The first try fails in the delivery report (no metadata yet), later ones in produce()."""
    topic = new_topic(1)

    async def scenario() -> list[Any]:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(broker)))
            record = KafkaRecord(topic, b"x", partition=99)
            return [await producer.produce(record, wait=True, timeout=5.0) for _ in range(2)]

    for outcome in run(scenario()):
        assert isinstance(outcome, Failed)
        assert outcome.kind is FailureKind.UNKNOWN_TOPIC_OR_PARTITION
        assert outcome.error_name == "_UNKNOWN_PARTITION"
        assert not outcome.retriable


def test_dead_broker_fails_within_bound_while_another_producer_keeps_delivering(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)

    async def scenario() -> tuple[list[Any], list[Any], float]:
        async with open_pool() as pool:
            doomed = pool.get_canonical(canonical_config(dead(**{"message.timeout.ms": 1000})))
            healthy = pool.get_canonical(canonical_config(live(broker)))
            started = time.monotonic()
            failing = [
                asyncio.create_task(
                    doomed.produce(KafkaRecord(topic, b"lost"), wait=True, timeout=3.0)
                )
                for _ in range(20)
            ]
            delivered: list[Any] = []
            while not all(task.done() for task in failing):
                record = KafkaRecord(topic, b"ok %d" % len(delivered))
                delivered.append(await healthy.produce(record, wait=True, timeout=2.0))
            failed = [task.result() for task in failing]
            return failed, delivered, time.monotonic() - started

    failed, delivered, elapsed = run(scenario())
    assert elapsed < 3.5
    for outcome in failed:
        assert isinstance(outcome, Failed | DeliveryTimeout), outcome
        if isinstance(outcome, Failed):
            assert outcome.kind is FailureKind.KAFKA_UNAVAILABLE and outcome.retriable
    assert len(delivered) >= 5 and all(isinstance(o, Delivered) for o in delivered), delivered
    assert len(read_records(topic, expected=len(delivered))) == len(delivered)


def test_no_report_in_time_is_a_delivery_timeout_and_a_late_report_harms_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The report comes after the waiter gave up, even after its loop is gone."""
    pool = ProducerPool()

    async def scenario() -> tuple[Any, float]:
        producer = pool.get_canonical(canonical_config(dead(**{"message.timeout.ms": 300})))
        started = time.monotonic()
        outcome = await producer.produce(KafkaRecord("t", b"x"), wait=True, timeout=0.1)
        return outcome, time.monotonic() - started

    outcome, elapsed = run(scenario())
    assert outcome == DeliveryTimeout(0.1)
    assert elapsed < 1.0
    [producer] = pool.producers
    assert producer.stats().waiters == 0
    deadline = time.monotonic() + 5
    while producer.stats().failed == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert producer.stats().failed == 1
    assert "poll_failed" not in caplog.text
    assert run(pool.close(1.0)) == 0


def test_delivery_timeout_while_the_broker_is_frozen_then_delivered_after_resume(
    broker_factory: BrokerFactory,
) -> None:
    """A 504 does not mean the record was lost: it may still arrive (documented semantics)."""
    frozen = broker_factory({"t": 1})

    async def scenario() -> Any:
        async with open_pool() as pool:
            producer = pool.get_canonical(canonical_config(live(frozen)))
            warm = await producer.produce(KafkaRecord("t", b"warm"), wait=True, timeout=5.0)
            assert isinstance(warm, Delivered)
            frozen.pause()
            try:
                return await producer.produce(KafkaRecord("t", b"late"), wait=True, timeout=0.5)
            finally:
                frozen.resume()

    assert run(scenario()) == DeliveryTimeout(0.5)
    assert [r.value for r in read_records(frozen.bootstrap, "t", expected=2)] == [b"warm", b"late"]
    frozen.stop()


def test_full_queue_is_backpressure_not_an_error(broker: EmbeddedBroker) -> None:
    async def scenario() -> tuple[list[Any], Any]:
        async with open_pool(close_budget=0.1, retry_after_s=2.0) as pool:
            producer = pool.get_canonical(
                canonical_config(dead(**{"queue.buffering.max.messages": 1}))
            )
            first = await producer.produce(KafkaRecord("t", b"1"), wait=False, timeout=1.0)
            outcomes = [first]
            for wait in (False, True):
                started = time.monotonic()
                outcomes.append(
                    await producer.produce(KafkaRecord("t", b"2"), wait=wait, timeout=5.0)
                )
                assert time.monotonic() - started < 0.25
            return outcomes, producer.stats()

    outcomes, stats = run(scenario())
    assert outcomes == [Queued("t"), Backpressure(2.0), Backpressure(2.0)]
    # len(producer) also counts events not yet served (an error report here), so at least 1.
    assert stats.queue_depth >= 1 and stats.backpressured == 2


def test_stats_and_reachability(broker: EmbeddedBroker) -> None:
    async def scenario() -> None:
        async with open_pool(close_budget=0.5) as pool:
            healthy = pool.get_canonical(canonical_config(live(broker)))
            doomed = pool.get_canonical(canonical_config(dead(**{"message.timeout.ms": 30000})))
            await healthy.produce(KafkaRecord("other", b"x"), wait=True, timeout=5.0)
            await doomed.produce(KafkaRecord("other", b"x"), wait=False, timeout=5.0)
            waiting = asyncio.create_task(
                doomed.produce(KafkaRecord("other", b"y"), wait=True, timeout=5.0)
            )
            await asyncio.sleep(0.1)
            assert await healthy.reachable(timeout=2.0)
            started = time.monotonic()
            assert not await doomed.reachable(timeout=0.3)
            assert time.monotonic() - started < 1.0
            stats = {s.name: s for s in pool.stats()}
            assert stats[healthy.name].delivered == 1 and stats[healthy.name].queue_depth == 0
            assert stats[doomed.name].queue_depth >= 2 and stats[doomed.name].waiters == 1
            waiting.cancel()

    run(scenario())


# -- shutdown --------------------------------------------------------------------------------------


def test_close_flushes_queued_records_into_the_broker(
    broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(3)

    async def scenario() -> int:
        pool = ProducerPool()
        producer = pool.get_canonical(canonical_config(live(broker, **{"linger.ms": 200})))
        for i in range(300):
            assert await producer.produce(
                KafkaRecord(topic, b"%d" % i), wait=False, timeout=1.0
            ) == Queued(topic)
        assert producer.stats().queue_depth > 0
        left = await pool.close(5.0)
        with pytest.raises(ProducerClosedError):
            await producer.produce(KafkaRecord(topic, b"too late"), wait=False, timeout=1.0)
        with pytest.raises(ProducerClosedError):
            pool.get_canonical(canonical_config(live(broker)))
        return left

    assert run(scenario()) == 0
    values = {r.value for r in read_records(topic, expected=300)}
    assert values == {b"%d" % i for i in range(300)}


def test_close_within_a_small_budget_counts_what_is_left_and_settles_waiters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[int, Any, float]:
        pool = ProducerPool()
        producer = pool.get_canonical(canonical_config(dead(**{"message.timeout.ms": 30000})))
        for _ in range(4):
            await producer.produce(KafkaRecord("t", b"x"), wait=False, timeout=1.0)
        waiter = asyncio.create_task(
            producer.produce(KafkaRecord("t", b"y"), wait=True, timeout=30.0)
        )
        await asyncio.sleep(0.05)
        started = time.monotonic()
        left = await pool.close(0.2)
        elapsed = time.monotonic() - started
        return left, await asyncio.wait_for(waiter, 1.0), elapsed

    left, waited, elapsed = run(scenario())
    # len(producer): the 5 records, plus an error event should one arrive at that very moment.
    assert left in (5, 6)
    assert elapsed < 1.0
    assert isinstance(waited, Failed) and waited.kind is FailureKind.KAFKA_UNAVAILABLE
    assert waited.error_name == "_PURGE_QUEUE"
    assert "event=flush_incomplete" in caplog.text and f"left={left}" in caplog.text
