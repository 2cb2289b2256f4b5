"""Without a broker: dead producers are replaced, and the in-flight cap refuses before the body.

A scripted client stands in for librdkafka so that fatal and fencing errors, which a real broker
gives only in rare states, happen exactly when a test says (the fault tests in
``tests/integration/test_faults.py`` show them against Tansu).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from kafkaupstream.plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import (
    KafkaRecord,
    ProducerLimitReached,
    ProducerPool,
    canonical_config,
    pool,
)
from tests.waiting import eventually

from .test_plugin_handle import Requests

CONFIG = {"bootstrap.servers": "unused:9092"}


class ScriptedClient:
    """The part of confluent-kafka's Producer the pool uses, failing as each test sets it up."""

    made: list[ScriptedClient] = []

    def __init__(self, settings: dict[str, Any]) -> None:
        self.error_cb: Callable[[KafkaError], None] = settings["error_cb"]
        #: What the next poll() does with each waiting report: None delivers nothing.
        self.report_error: KafkaError | None = None
        self.raise_on_poll: KafkaError | None = None
        self.waiting: list[Callable[[KafkaError | None, Any], None]] = []
        self.closed = False
        self.metadata_error: KafkaError | None = None
        ScriptedClient.made.append(self)

    def produce(self, *args: Any, on_delivery: Any = None, **kwargs: Any) -> None:
        self.waiting.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if self.raise_on_poll is not None:
            error, self.raise_on_poll = self.raise_on_poll, None
            raise KafkaException(error)
        if self.report_error is not None:
            waiting, self.waiting = self.waiting, []
            for report in waiting:
                report(self.report_error, None)
        time.sleep(min(timeout, 0.01))
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        waiting, self.waiting = self.waiting, []
        for report in waiting:
            report(KafkaError(KafkaError._PURGE_QUEUE), None)

    def close(self) -> None:
        self.closed = True

    def list_topics(self, timeout: float = 0) -> None:
        """Metadata: the brokers answer, unless a test says they do not."""
        if self.metadata_error is not None:
            raise KafkaException(self.metadata_error)

    def __len__(self) -> int:
        return len(self.waiting)


def scripted(settings: dict[str, Any]) -> Producer:
    return cast(Producer, ScriptedClient(settings))


@pytest.fixture(autouse=True)
def _fresh_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    ScriptedClient.made = []
    monkeypatch.setattr(pool, "REPLACE_INTERVAL_S", 0.0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    "kill",
    [
        pytest.param(
            lambda c: setattr(
                c, "raise_on_poll", KafkaError(KafkaError.UNKNOWN_PRODUCER_ID, "lost", fatal=True)
            ),
            id="fatal-error-from-poll",
        ),
        pytest.param(
            lambda c: c.error_cb(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True)),
            id="fatal-error-callback",
        ),
        pytest.param(
            lambda c: setattr(c, "report_error", KafkaError(KafkaError.PRODUCER_FENCED)),
            id="fenced-delivery-report",
        ),
    ],
)
def test_a_dead_producer_is_replaced_and_its_waiters_answered(
    kill: Callable[[ScriptedClient], None], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        first = pool_.get_canonical(canonical_config(CONFIG))
        waiter = asyncio.create_task(first.produce(KafkaRecord("t", b"v"), wait=True, timeout=5.0))
        await asyncio.sleep(0.05)
        kill(ScriptedClient.made[0])
        await asyncio.to_thread(
            eventually, lambda: first.dead is not None, timeout=2.0, interval=0.01
        )
        second = pool_.get_canonical(canonical_config(CONFIG))
        assert second is not first and second.dead is None
        assert pool_.get_canonical(canonical_config(CONFIG)) is second
        # The dead client is purged and closed by its own poll thread; its waiter is answered.
        outcome = await asyncio.wait_for(waiter, 2.0)
        assert type(outcome).__name__ == "Failed"
        await asyncio.to_thread(
            eventually, lambda: ScriptedClient.made[0].closed, timeout=2.0, interval=0.01
        )
        await pool_.close(1.0)

    run(scenario())
    assert "event=producer_replaced producer=producer-1 new=producer-2" in caplog.text


def test_an_ordinary_delivery_failure_keeps_the_producer() -> None:
    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        first = pool_.get_canonical(canonical_config(CONFIG))
        ScriptedClient.made[0].report_error = KafkaError(KafkaError._MSG_TIMED_OUT)
        outcome = await first.produce(KafkaRecord("t", b"v"), wait=True, timeout=2.0)
        assert type(outcome).__name__ == "Failed"
        assert first.dead is None and pool_.get_canonical(canonical_config(CONFIG)) is first
        await pool_.close(1.0)

    run(scenario())


def test_replacements_are_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "REPLACE_INTERVAL_S", 60.0)

    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        first = pool_.get_canonical(canonical_config(CONFIG))
        ScriptedClient.made[0].error_cb(KafkaError(KafkaError._FATAL, fatal=True))
        # Dead within a minute of being made: kept (it fails fast) rather than churned.
        assert first.dead is not None and pool_.get_canonical(canonical_config(CONFIG)) is first
        await pool_.close(1.0)

    run(scenario())


# --- the in-flight cap ----------------------------------------------------------------------------


def test_over_the_in_flight_cap_is_503_backpressure_without_fetching_the_body() -> None:
    plugin = KafkaUpstreamPlugin(
        pool_factory=lambda: ProducerPool(factory=scripted), max_in_flight=2
    )
    state = plugin.prepare(json.dumps({"config": CONFIG, "topic": "t", "timeout_ms": 300}))
    bodies = Requests()

    async def scenario() -> None:
        # The scripted client never reports: both wait for timeout_ms.
        held = [
            asyncio.create_task(plugin.handle(state, bodies.make(b"payload"))) for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        refused = await plugin.handle(state, bodies.make(b"payload"))
        assert refused.status == 503
        assert json.loads(refused.body)["error"] == "backpressure"
        assert ("Retry-After", "1") in refused.headers
        assert bodies.body_fetches == 2
        assert [a.status for a in await asyncio.gather(*held)] == [504, 504]
        # Answered requests leave the count: the next one is let in.
        ScriptedClient.made[0].report_error = KafkaError(KafkaError._MSG_TIMED_OUT)
        again = await plugin.handle(state, bodies.make(b"payload"))
        assert again.status == 503 and json.loads(again.body)["error"] == "kafka_unavailable"
        assert bodies.body_fetches == 3
        await plugin.close(1.0)

    run(scenario())


def test_in_flight_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KafkaUpstreamPlugin(max_in_flight=0)
    with pytest.raises(ValueError, match="max_awaiting_body must be at least 1"):
        KafkaUpstreamPlugin(max_awaiting_body=0)


def test_requests_awaiting_their_body_are_counted_apart_from_those_in_flight() -> None:
    plugin = KafkaUpstreamPlugin(
        pool_factory=lambda: ProducerPool(factory=scripted), max_in_flight=1, max_awaiting_body=2
    )
    state = plugin.prepare(json.dumps({"config": CONFIG, "topic": "t", "timeout_ms": 300}))
    bodies = Requests()

    async def scenario() -> None:
        arrived = asyncio.Event()
        uploads = [
            asyncio.create_task(plugin.handle(state, bodies.make(b"payload", arrives=arrived)))
            for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        assert (plugin.awaiting_body, plugin.in_flight) == (2, 0)
        over = await plugin.handle(state, bodies.make(b"payload"))
        assert over.status == 503 and b"waiting for their bodies" in over.body
        assert plugin.refused_awaiting_body_cap == 1
        arrived.set()
        # The first body takes the one in-flight slot (the scripted client never reports);
        # the second arrives to a full cap and is refused then.
        answers = await asyncio.gather(*uploads)
        assert sorted(a.status for a in answers) == [503, 504]
        assert plugin.refused_in_flight_cap == 1
        assert (plugin.awaiting_body, plugin.in_flight) == (0, 0)
        await plugin.close(1.0)

    run(scenario())


# --- producer lifetimes: released when unused, capped, replaced when stalled ---------------------


def test_a_producer_unused_for_idle_after_is_released_and_made_again_on_the_next_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kafkaupstream.producers.pool")

    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted, idle_after_s=30.0)
        first = pool_.get_canonical(canonical_config(CONFIG))
        now = time.monotonic()
        pool_.maintain(now)  # the use is noted: idle from now on
        pool_.maintain(now + 29.0)
        assert pool_.producers == (first,)
        pool_.maintain(now + 30.5)
        assert pool_.producers == () and pool_.released == 1
        # Flushed, purged and closed by its own poll thread, off the loop.
        await asyncio.to_thread(
            eventually, lambda: ScriptedClient.made[0].closed, timeout=2.0, interval=0.01
        )
        second = pool_.get_canonical(canonical_config(CONFIG))
        assert second is not first and len(ScriptedClient.made) == 2
        await pool_.close(1.0)

    run(scenario())
    assert "event=producer_released producer=producer-1" in caplog.text


def test_a_used_producer_is_kept() -> None:
    pool_ = ProducerPool(factory=scripted, idle_after_s=30.0)
    key = canonical_config(CONFIG)
    first = pool_.get_canonical(key)
    now = time.monotonic()
    for minute in range(5):
        pool_.get_canonical(key)
        pool_.maintain(now + 20.0 * minute)
    assert pool_.producers == (first,) and pool_.released == 0
    asyncio.run(pool_.close(1.0))


def test_the_pool_refuses_a_producer_past_max_producers_but_serves_the_ones_it_has() -> None:
    pool_ = ProducerPool(factory=scripted, max_producers=2)
    one = pool_.get_canonical(canonical_config({**CONFIG, "client.id": "a"}))
    two = pool_.get_canonical(canonical_config({**CONFIG, "client.id": "b"}))
    with pytest.raises(ProducerLimitReached) as refused:
        pool_.get_canonical(canonical_config({**CONFIG, "client.id": "c"}))
    assert refused.value.limit == 2 and len(ScriptedClient.made) == 2
    assert pool_.get_canonical(canonical_config({**CONFIG, "client.id": "a"})) is one
    assert pool_.get_canonical(canonical_config({**CONFIG, "client.id": "b"})) is two
    asyncio.run(pool_.close(1.0))


def test_the_plugin_answers_503_too_many_producers_over_the_cap() -> None:
    plugin = KafkaUpstreamPlugin(
        pool_factory=lambda: ProducerPool(factory=scripted, max_producers=1)
    )
    first = plugin.prepare(json.dumps({"config": CONFIG, "topic": "t", "timeout_ms": 50}))
    other = {**CONFIG, "client.id": "other"}
    second = plugin.prepare(json.dumps({"config": other, "topic": "t", "timeout_ms": 50}))

    async def scenario() -> list[tuple[int, str]]:
        answers = [
            await plugin.handle(state, Requests().make(b"payload")) for state in (first, second)
        ]
        await plugin.close(1.0)
        return [(a.status, json.loads(a.body).get("error", "")) for a in answers]

    # The scripted client never reports: the first waits out its timeout_ms.
    assert run(scenario()) == [(504, "delivery_timeout"), (503, "too_many_producers")]


async def replaced(pool_: ProducerPool) -> None:
    await asyncio.to_thread(
        eventually, lambda: pool_.producers == () and pool_.replaced == 1, timeout=2.0
    )


def test_a_producer_with_records_pending_and_no_delivery_for_message_timeout_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = {**CONFIG, "message.timeout.ms": 2000}

    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        stuck = pool_.get_canonical(canonical_config(config))
        waiter = asyncio.create_task(stuck.produce(KafkaRecord("t", b"v"), wait=True, timeout=9.0))
        await asyncio.sleep(0.05)
        assert stuck.pending == 1
        now = time.monotonic()
        pool_.maintain(now)  # the stall starts here
        pool_.maintain(now + 0.5)
        assert pool_.producers == (stuck,)
        # 2 s of message.timeout.ms, less the one-second sampling interval; then the brokers
        # are asked (off the loop) whether they answer: they do, so the client is stuck.
        pool_.maintain(now + 1.0)
        await replaced(pool_)
        # Its waiting request gets the purge's outcome, not a silent timeout.
        outcome = await asyncio.wait_for(waiter, 2.0)
        assert type(outcome).__name__ == "Failed"
        fresh = pool_.get_canonical(canonical_config(config))
        assert fresh is not stuck and fresh.pending == 0
        await pool_.close(1.0)

    run(scenario())
    assert "event=producer_replaced producer=producer-1 cause=stalled pending=1" in caplog.text


def test_a_producer_that_delivers_is_not_stalled() -> None:
    pool_ = ProducerPool(factory=scripted)
    producer = pool_.get_canonical(canonical_config({**CONFIG, "message.timeout.ms": 2000}))
    assert producer.sample_progress(100.0) == 0.0  # nothing pending
    assert producer.stats().stalled_s == 0.0
    asyncio.run(pool_.close(1.0))


def test_records_timing_out_one_at_a_time_keep_the_stall_clock_running() -> None:
    """Light traffic on a stuck client: one record at a time, each failing after its timeout."""
    config = {**CONFIG, "message.timeout.ms": 3000}

    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        stuck = pool_.get_canonical(canonical_config(config))
        client = ScriptedClient.made[0]
        now = time.monotonic()

        async def one_timing_out(sampled_at: float) -> None:
            """A record pending when the pool samples at ``sampled_at``, then timed out."""
            client.report_error = None
            waiter = asyncio.create_task(
                stuck.produce(KafkaRecord("t", b"v"), wait=True, timeout=9.0)
            )
            await asyncio.sleep(0.02)
            pool_.maintain(sampled_at)
            client.report_error = KafkaError(KafkaError._MSG_TIMED_OUT)
            assert type(await asyncio.wait_for(waiter, 2.0)).__name__ == "Failed"

        await one_timing_out(now)  # the stall starts here
        assert stuck.pending == 0
        pool_.maintain(now + 1.0)  # nothing pending, but a record timed out since: still stalled
        assert pool_.producers == (stuck,)
        await one_timing_out(now + 2.0)  # 3 s of message.timeout.ms, less the sampling interval
        await replaced(pool_)
        await pool_.close(1.0)

    run(scenario())


def test_a_producer_idle_after_a_timeout_is_not_stalled() -> None:
    async def scenario() -> float:
        pool_ = ProducerPool(factory=scripted)
        producer = pool_.get_canonical(canonical_config(CONFIG))
        ScriptedClient.made[0].report_error = KafkaError(KafkaError._MSG_TIMED_OUT)
        await producer.produce(KafkaRecord("t", b"v"), wait=True, timeout=2.0)
        now = time.monotonic()
        assert producer.sample_progress(now) == 0.0  # the clock starts at the failure
        stalled = producer.sample_progress(now + 1.0)  # then nothing pending, nothing failing
        await pool_.close(1.0)
        return stalled

    assert run(scenario()) == 0.0


def test_a_stalled_producer_whose_brokers_do_not_answer_is_kept() -> None:
    """An outage, not a stuck client: a new one would do no better, and /health keeps it."""
    config = {**CONFIG, "message.timeout.ms": 2000}

    async def scenario() -> None:
        pool_ = ProducerPool(factory=scripted)
        stalled = pool_.get_canonical(canonical_config(config))
        ScriptedClient.made[0].metadata_error = KafkaError(KafkaError._TRANSPORT)
        waiter = asyncio.create_task(stalled.produce(KafkaRecord("t", b"v"), wait=True, timeout=9))
        await asyncio.sleep(0.05)
        now = time.monotonic()
        pool_.maintain(now)
        pool_.maintain(now + 5.0)
        await asyncio.sleep(0.2)  # the probe's answer: no metadata
        assert pool_.producers == (stalled,) and pool_.replaced == 0
        assert stalled.stalled_for(time.monotonic()) > 0
        await pool_.close(0.5)
        assert type(await waiter).__name__ == "Failed"  # purged at close: it was waiting

    run(scenario())
