"""Faults: nothing acknowledged is ever lost, memory stays bounded.

Each scenario drives the real runner process (``kafkaupstream run``) with the fake APISIX and
a Tansu broker of its own wherever it pauses (SIGSTOP) or restarts one. Every request body
carries a unique id; records are read back with ``assign()`` and counted by consuming them.
Each test prints its figures (``pytest -s``), keeps them as junit properties and lists them in
the terminal summary.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from harness.broker import EmbeddedBroker
from harness.runner_process import RunnerProcess

from .conftest import BrokerFactory, Report
from .faultkit import (
    Clients,
    RSSWatch,
    Sent,
    by_status,
    conf,
    flush_left,
    has_exited,
    landed,
    new_topic_name,
    pause,
    recovered,
    restart,
    rss_mib,
    statuses_in,
    steady_since,
    until,
    warm_up,
)

#: What an answer may take beyond ``timeout_ms``: the RPC round trips on a loaded 2-core box.
SLACK_S = 0.35
#: After SIGSTOP, a 200 acknowledged just before may still be on its way for this long.
ACK_IN_TRANSIT_S = 0.3
#: Memory a runner may gain while a fault lasts; the loads here would hold far more unbounded.
RSS_BOUND_MIB = 32

RunnerFactory = Callable[..., RunnerProcess]


@pytest.fixture
def runner_factory() -> Iterator[RunnerFactory]:
    """Starts runners (``runner_factory(workers=2, args=[...])``); all stopped afterwards."""
    started: list[RunnerProcess] = []

    def start(*, workers: int = 1, args: Sequence[str] = (), **options: Any) -> RunnerProcess:
        runner = RunnerProcess(workers=workers, args=list(args), **options)
        started.append(runner)
        return runner.start()

    yield start
    for runner in started:
        runner.close()


@pytest.fixture(autouse=True)
def _quiet_fake_apisix(caplog: pytest.LogCaptureFixture) -> None:
    # It logs every request the runner could not take: hundreds once the runner is gone.
    caplog.set_level(logging.CRITICAL, logger="harness.fake_apisix")


# --- 1. the broker paused during sync load --------------------------------------------------------


def test_paused_broker_sync_answers_in_time_keeps_every_200_and_recovers(
    broker_factory: BrokerFactory, runner_factory: RunnerFactory, figures: Report
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 3})
    runner = runner_factory(workers=2)
    timeout_ms, pause_s = 500, 2.5
    # message.timeout.ms under the pause: records in flight when the broker froze time out, so
    # librdkafka bumps its idempotent epoch (Tansu fences it; the pool replaces the producer).
    producer = {"message.timeout.ms": 1000}
    sync = conf(broker.bootstrap, topic, timeout_ms=timeout_ms, config=producer)
    patient = conf(broker.bootstrap, topic, timeout_ms=5000, config=producer)

    async def scenario() -> tuple[list[Sent], RSSWatch, float, float]:
        async with Clients(runner.socket_path, {"sync": sync, "patient": patient}) as clients:
            # Same producer config: the warm-up gives each worker's producer its producer id.
            # More rounds than elsewhere: with message.timeout.ms at 1 s, a first record can
            # time out while a loaded machine is still getting the producer id (0.5-1 s on an
            # idle one), and its fenced producer is replaced at most once a second.
            await warm_up(clients, "patient", rounds=10)
            clients.loop_routes = ["sync"]
            async with RSSWatch(runner.pid) as watch:
                clients.start()
                await asyncio.sleep(0.7)
                pause(broker)
                paused_at = time.monotonic()
                await asyncio.sleep(pause_s)
                broker.resume()
                resumed_at = time.monotonic()
                await until(steady_since(clients, resumed_at), 15.0, "recovery after SIGCONT")
        return [s for s in clients.sent if s.route == "sync"], watch, paused_at, resumed_at

    sent, watch, paused_at, resumed_at = asyncio.run(scenario())
    ok = {s.id for s in sent if s.status == 200}
    not_ok = [s for s in sent if s.status != 200]
    found = landed(broker.bootstrap, topic)
    recovered_at = recovered(sent, resumed_at)
    figures(
        sent=len(sent),
        answered_2xx=len(ok),
        answers=by_status(sent),
        records_found=sum(found.values()),
        ok_missing=len(ok - set(found)),
        ok_duplicated=sum(1 for i in ok if found[i] > 1),
        landed_504=sum(1 for s in not_ok if s.status == 504 and s.id in found),
        landed_503=sum(1 for s in not_ok if s.status == 503 and s.id in found),
        not_ok_duplicated=sum(1 for s in not_ok if found[s.id] > 1),
        max_latency_s=round(max(s.latency for s in sent), 3),
        rss_baseline_mib=round(watch.baseline, 1),
        max_rss_mib=round(watch.max, 1),
        recovery_s=round(recovered_at - resumed_at, 2),
        producers_replaced=runner.logs().count("event=producer_replaced"),
    )
    assert statuses_in(sent) <= {(200, None), (504, "delivery_timeout"), (503, "kafka_unavailable")}
    # Sync answers are bounded by timeout_ms, whatever the broker does.
    slow = [s for s in sent if s.latency > timeout_ms / 1000 + SLACK_S]
    assert not slow, f"{len(slow)} answers over timeout_ms + slack, e.g. {slow[:3]}"
    # A frozen broker acknowledges nothing: no 200 is answered during the pause (past those
    # acknowledged just before it), and requests there do get 504/503.
    frozen = [s for s in sent if paused_at + ACK_IN_TRANSIT_S < s.answered < resumed_at]
    assert frozen and all(s.status in (503, 504) for s in frozen), by_status(frozen)
    # Every 200 is in the broker, exactly once.
    assert ok and not ok - set(found), f"{len(ok - set(found))} records answered 200 are missing"
    assert all(found[i] == 1 for i in ok), "a record answered 200 was written twice"
    assert watch.growth < RSS_BOUND_MIB, f"RSS grew {watch.growth:.1f} MiB"
    assert recovered_at - resumed_at < 10


# --- 2. the broker killed and restarted on the same port ------------------------------------------


def test_broker_restart_on_the_same_port_the_runner_reconnects_by_itself(
    broker_factory: BrokerFactory, runner_factory: RunnerFactory, figures: Report
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 3})
    runner = runner_factory(workers=2)
    # Not idempotent here: Tansu keeps nothing across a restart, not even producer ids, and
    # answers the epoch bump librdkafka then makes (KIP-360, which Kafka accepts) with
    # UNKNOWN_PRODUCER_ID for ever, so an idempotent producer may never deliver again. Kafka
    # keeps producer state across restarts; the idempotent default is in the pause test.
    producer = {"message.timeout.ms": 2000, "enable.idempotence": False}
    sync = conf(broker.bootstrap, topic, timeout_ms=1000, config=producer)

    async def scenario() -> tuple[list[Sent], RSSWatch, float]:
        async with Clients(runner.socket_path, {"sync": sync}) as clients:
            await warm_up(clients, "sync")
            async with RSSWatch(runner.pid) as watch:
                clients.start()
                await asyncio.sleep(0.5)
                await asyncio.to_thread(restart, broker)
                restarted_at = time.monotonic()
                await until(steady_since(clients, restarted_at), 20.0, "recovery after restart")
        return clients.sent, watch, restarted_at

    sent, watch, restarted_at = asyncio.run(scenario())
    recovered_at = recovered(sent, restarted_at)
    # Tansu lost everything from before the restart; what was answered 200 after it is there.
    ok_after = {s.id for s in sent if s.status == 200 and s.started > restarted_at}
    found = landed(broker.bootstrap, topic, expected=len(sent))
    figures(
        sent=len(sent),
        answered_2xx=sum(1 for s in sent if s.status == 200),
        answers=by_status(sent),
        ok_after_restart=len(ok_after),
        records_found=sum(found.values()),
        ok_missing=len(ok_after - set(found)),
        ok_duplicated=sum(1 for i in ok_after if found[i] > 1),
        max_rss_mib=round(watch.max, 1),
        recovery_s=round(recovered_at - restarted_at, 2),
    )
    assert statuses_in(sent) <= {(200, None), (504, "delivery_timeout"), (503, "kafka_unavailable")}
    assert not has_exited(runner), "the runner must not restart itself"
    assert "event=worker_died" not in runner.logs(), "no worker may have been restarted"
    assert recovered_at - restarted_at < 10, "no recovery within 10 s of the broker's restart"
    assert ok_after and not ok_after - set(found)
    assert all(found[i] == 1 for i in ok_after)


# --- 3. the runner stopped under async load -------------------------------------------------------


def test_sigterm_under_async_load_every_202_is_in_the_broker_after_exit(
    broker: EmbeddedBroker, runner_factory: RunnerFactory, figures: Report
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 3})
    runner = runner_factory(workers=2)
    # linger.ms keeps records queued in the producer at SIGTERM: the flush must send them.
    lingering = conf(broker.bootstrap, topic, delivery="async", config={"linger.ms": 200})

    async def scenario() -> tuple[list[Sent], RSSWatch, float]:
        async with Clients(runner.socket_path, {"async": lingering}) as clients:
            await warm_up(clients, "async")
            async with RSSWatch(runner.pid) as watch:
                clients.start()
                await asyncio.sleep(0.6)
                runner.send_signal(signal.SIGTERM)
                exit_s = await until(lambda: has_exited(runner), 5.0, "exit after SIGTERM")
        return clients.sent, watch, exit_s

    sent, watch, exit_s = asyncio.run(scenario())
    accepted = {s.id for s in sent if s.status == 202}
    found = landed(broker.bootstrap, topic, expected=len(accepted))
    logs = runner.logs()
    figures(
        sent=len(sent),
        answered_2xx=len(accepted),
        answers=by_status(sent),
        records_found=sum(found.values()),
        accepted_missing=len(accepted - set(found)),
        duplicated=sum(1 for c in found.values() if c > 1),
        max_rss_mib=round(watch.max, 1),
        exit_s=round(exit_s, 3),
    )
    assert runner.proc is not None and runner.proc.returncode == 0
    # The documented budget (--shutdown-timeout, default 0.8 s) and a little for the exit itself.
    assert exit_s < 0.8 + 0.5
    # After SIGTERM: 503 from the runner while it drains, APISIX's own 503 once it is gone.
    assert statuses_in(sent) <= {
        (202, None),
        (503, "kafka_unavailable"),
        (503, "shutting_down"),
        (503, "rpc"),
    }
    assert len(accepted) > 50
    assert not accepted - set(found), f"{len(accepted - set(found))} records answered 202 lost"
    # Each worker that made a producer flushed it completely and said so.
    made = logs.count("event=producer_created")
    assert made and logs.count("event=producers_closed producers=1 left=0") == made, logs[-2000:]
    assert "event=flush_incomplete" not in logs


def test_sigterm_with_a_paused_broker_logs_how_many_records_it_could_not_flush(
    broker_factory: BrokerFactory, runner_factory: RunnerFactory, figures: Report
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    budget_s, queued = 0.5, 40
    runner = runner_factory(args=["--shutdown-timeout", str(budget_s)])
    async_route = conf(broker.bootstrap, topic, delivery="async")

    async def scenario() -> tuple[set[str], set[str], float]:
        async with Clients(runner.socket_path, {"async": async_route}) as clients:
            warm = await warm_up(clients, "async", rounds=1)
            # Pause once the warm-up records are in: then exactly `queued` are left at SIGTERM.
            await asyncio.to_thread(landed, broker.bootstrap, topic, len(warm), 5.0)
            pause(broker)
            for _ in range(queued):
                await clients.one("async")
            runner.send_signal(signal.SIGTERM)
            exit_s = await until(lambda: has_exited(runner), 5.0, "exit after SIGTERM")
        return warm, clients.ids(202) - warm, exit_s

    try:
        warm, accepted, exit_s = asyncio.run(scenario())
    finally:
        broker.resume()
    left = flush_left(runner.logs())
    found = landed(broker.bootstrap, topic, expected=len(warm) + queued)
    figures(
        sent=len(warm) + queued,
        answered_2xx=len(warm) + len(accepted),
        queued_at_sigterm=len(accepted),
        logged_left=sum(n for _, n in left),
        queued_found_after_resume=len(accepted & set(found)),
        exit_s=round(exit_s, 3),
    )
    assert runner.proc is not None and runner.proc.returncode == 0
    assert exit_s < budget_s + 0.5, "the flush must give up when its budget runs out"
    assert len(accepted) == queued
    # One line per producer with the number of records it could not flush: all of them here.
    assert left == [("producer-1", queued)], runner.logs()[-2000:]


def test_sigkill_loses_queued_202s_but_never_a_200(
    broker: EmbeddedBroker, runner_factory: RunnerFactory, figures: Report
) -> None:
    sync_topic, async_topic = new_topic_name(), new_topic_name()
    broker.create_topics({sync_topic: 1, async_topic: 1})
    runner = runner_factory()
    sync = conf(broker.bootstrap, sync_topic)
    # A record answered 202 waits in the producer's memory until its batch is sent; a long
    # linger.ms stretches that window over the whole test, so what SIGKILL loses is certain.
    lingering = conf(broker.bootstrap, async_topic, delivery="async", config={"linger.ms": 30000})

    async def scenario() -> list[Sent]:
        async with Clients(runner.socket_path, {"sync": sync, "async": lingering}) as clients:
            await warm_up(clients, "sync", rounds=1)
            clients.start()
            await until(lambda: len(clients.ids(200)) >= 100, 10.0, "100 sync answers")
            runner.send_signal(signal.SIGKILL)
            await until(lambda: has_exited(runner), 5.0, "death by SIGKILL")
        return clients.sent

    sent = asyncio.run(scenario())
    ok = {s.id for s in sent if s.status == 200}
    accepted = {s.id for s in sent if s.status == 202}
    sync_found = landed(broker.bootstrap, sync_topic, expected=len(sent))
    async_found = landed(broker.bootstrap, async_topic, expected=len(accepted), timeout=1.0)
    figures(
        sent=len(sent),
        answered_200=len(ok),
        answered_202=len(accepted),
        answers=by_status(sent),
        records_200_found=len(ok & set(sync_found)),
        records_202_found=len(accepted & set(async_found)),
        ok_duplicated=sum(1 for i in ok if sync_found[i] > 1),
    )
    assert len(ok) >= 100 and len(accepted) >= 50
    assert not ok - set(sync_found), "a record answered 200 was lost to SIGKILL"
    assert all(sync_found[i] == 1 for i in ok)
    assert not accepted & set(async_found), "records still queued cannot have been sent"


# --- 4. back-pressure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "value", "most_queued"),
    [("queue.buffering.max.messages", 50, 50), ("queue.buffering.max.kbytes", 1024, 16)],
)
def test_full_producer_queue_answers_503_retry_after_and_memory_stays_bounded(
    broker_factory: BrokerFactory,
    runner_factory: RunnerFactory,
    figures: Report,
    limit: str,
    value: int,
    most_queued: int,
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    runner = runner_factory()
    body_kib, total = 64, 1500  # ~94 MiB of bodies: an unbounded queue would hold them all
    async_route = conf(broker.bootstrap, topic, delivery="async", config={limit: value})

    async def scenario() -> tuple[list[Sent], set[str], RSSWatch]:
        async with Clients(
            runner.socket_path, {"async": async_route}, think_s=0, body_pad=body_kib * 1024
        ) as clients:
            warm = await warm_up(clients, "async", rounds=1)
            await asyncio.to_thread(landed, broker.bootstrap, topic, len(warm), 5.0)
            async with RSSWatch(runner.pid) as watch:
                pause(broker)
                clients.start()
                await until(lambda: len(clients.sent) >= total + len(warm), 60.0, "answers")
        return [s for s in clients.sent if s.id not in warm], warm, watch

    try:
        paused, warm, watch = asyncio.run(scenario())
    finally:
        broker.resume()
    accepted = {s.id for s in paused if s.status == 202}
    # Once the broker is back, what was queued is delivered.
    found = landed(broker.bootstrap, topic, expected=len(warm) + len(accepted), timeout=10.0)
    figures(
        sent=len(paused),
        answered_2xx=len(accepted),
        answers=by_status(paused),
        bodies_mib=round(len(paused) * body_kib / 1024, 1),
        records_found_after_resume=len(accepted & set(found)),
        rss_baseline_mib=round(watch.baseline, 1),
        max_rss_mib=round(watch.max, 1),
    )
    assert statuses_in(paused) == {(202, None), (503, "backpressure")}
    assert 0 < len(accepted) <= most_queued
    assert all(s.retry_after == "1" for s in paused if s.status == 503)
    assert watch.growth < RSS_BOUND_MIB, f"RSS grew {watch.growth:.1f} MiB"
    assert not accepted - set(found), "a record answered 202 was lost after all"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_in_flight_cap_answers_503_at_once_before_fetching_the_body(
    broker_factory: BrokerFactory, runner_factory: RunnerFactory, figures: Report, how: str
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    cap, timeout_ms = 8, 2000
    if how == "flag":  # which also beats the environment
        runner = runner_factory(
            args=["--max-in-flight", str(cap)], env={"KAFKAUPSTREAM_MAX_IN_FLIGHT": "1000"}
        )
    else:
        runner = runner_factory(env={"KAFKAUPSTREAM_MAX_IN_FLIGHT": str(cap)})
    sync = conf(broker.bootstrap, topic, timeout_ms=timeout_ms)

    async def scenario() -> tuple[list[Sent], Sent, Sent, Sent, float]:
        async with Clients(runner.socket_path, {"sync": sync}, clients=cap) as clients:
            await warm_up(clients, "sync", rounds=1)
            pause(broker)
            held = [asyncio.create_task(clients.one("sync")) for _ in range(cap)]
            # They wait on a frozen broker for timeout_ms: long past their body fetch by now.
            await asyncio.sleep(0.5)
            over = await clients.one("sync")
            # No body: had the runner fetched it, the answer would be 400 empty_body.
            unfetched = await clients.one("sync", body=False)
            waited = await asyncio.gather(*held)
            broker.resume()
            resumed_at = time.monotonic()
            # Answered requests leave the count: the next one is served again.
            while (after := await clients.one("sync")).status != 200:
                assert time.monotonic() - resumed_at < 10, f"not served again: {after}"
        return waited, over, unfetched, after, time.monotonic() - resumed_at

    try:
        waited, over, unfetched, after, recovery_s = asyncio.run(scenario())
    finally:
        if broker.paused:
            broker.resume()
    figures(
        max_in_flight=cap,
        held=len(waited),
        held_answers=by_status(waited),
        over_cap=f"{over.status} {over.error}",
        over_cap_ms=round(over.latency * 1000, 1),
        bodyless_over_cap=f"{unfetched.status} {unfetched.error}",
        recovery_s=round(recovery_s, 2),
        rss_mib=round(rss_mib(runner.pid), 1),
    )
    assert [(s.status, s.error) for s in waited] == [(504, "delivery_timeout")] * cap
    assert (over.status, over.error, over.retry_after) == (503, "backpressure", "1")
    assert over.latency < 0.25, "over the cap is refused at once, not after timeout_ms"
    assert (unfetched.status, unfetched.error) == (503, "backpressure")
    assert after.status == 200
    assert f"event=in_flight_cap_reached max_in_flight={cap} refused=1" in runner.logs()


def test_bad_max_in_flight_from_the_environment_stops_the_runner_naming_it() -> None:
    runner = RunnerProcess(args=["--workers", "1"], env={"KAFKAUPSTREAM_MAX_IN_FLIGHT": "lots"})
    with pytest.raises(RuntimeError, match="exited with 2"):
        runner.start(timeout=10)
    assert "KAFKAUPSTREAM_MAX_IN_FLIGHT must be a whole number" in runner.logs()
    runner.close()
