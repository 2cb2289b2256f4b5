"""Without a broker: dead producers are replaced, and the in-flight cap refuses before the body.

A scripted client stands in for librdkafka so that fatal and fencing errors, which a real broker
gives only in rare states, happen exactly when a test says (the fault tests in
``tests/integration/test_faults.py`` show them against Tansu).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from kafkaupstream.plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import KafkaRecord, ProducerPool, canonical_config, pool
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
