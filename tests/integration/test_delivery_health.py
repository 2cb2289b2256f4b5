"""``/health`` and ``/ready`` tell the truth about delivery, and frozen parts are replaced.

Real runner processes with ``--metrics-listen``, the fake APISIX, and a Tansu broker of each
test's own that the test freezes (SIGSTOP: connections stay open, nothing is answered, which is
what a stalled broker or a stuck producer looks like from the runner). Each test prints its
figures (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.broker import EmbeddedBroker
from harness.runner_process import RunnerProcess
from tests.waiting import eventually

from .conftest import BrokerFactory
from .faultkit import (
    Clients,
    by_status,
    conf,
    landed,
    new_topic_name,
    pause,
    restart,
    until,
)
from .test_metrics import base_url, get_json, scrape, total
from .workerkit import only_running, process_state

#: What an answer may take beyond its route's timeout_ms on a loaded 2-core box.
SLACK_S = 0.5


@pytest.fixture
def runner_factory() -> Iterator[Callable[..., RunnerProcess]]:
    started: list[RunnerProcess] = []

    def start(*extra: str, workers: int = 1) -> RunnerProcess:
        runner = RunnerProcess(workers=workers, args=["--metrics-listen", "127.0.0.1:0", *extra])
        started.append(runner)
        return runner.start()

    yield start
    for runner in started:
        runner.close()


async def health(base: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(get_json, base + "/health")


def stall_problems(body: dict[str, Any]) -> list[str]:
    return [p for p in body["problems"] if "no successful delivery" in p]


def test_a_frozen_broker_turns_health_degraded_naming_the_producer_then_ok_again(
    broker_factory: BrokerFactory, runner_factory: Callable[..., RunnerProcess]
) -> None:
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    stall_after_s = 2
    runner = runner_factory("--stall-after", str(stall_after_s))
    base = base_url(runner)
    route = conf(broker.bootstrap, topic, timeout_ms=500)

    async def scenario() -> tuple[list[str], float, float, Clients]:
        async with Clients(runner.socket_path, {"sync": route}, clients=2) as clients:
            await clients.one("sync")
            status, body = await health(base)
            assert status == 200 or not stall_problems(body), body
            clients.start()
            await asyncio.sleep(0.3)
            pause(broker)
            paused_at = time.monotonic()
            degraded: list[str] = []

            async def stalled() -> bool:
                status, body = await health(base)
                degraded[:] = stall_problems(body) if status == 503 else []
                return bool(degraded)

            while not await stalled():
                assert time.monotonic() - paused_at < stall_after_s + 5, "never degraded"
                await asyncio.sleep(0.2)
            detected_s = time.monotonic() - paused_at
            broker.resume()
            resumed_at = time.monotonic()
            while (await health(base))[0] != 200:
                assert time.monotonic() - resumed_at < 15, (await health(base))[1]
                await asyncio.sleep(0.2)
            return degraded, detected_s, time.monotonic() - resumed_at, clients

    degraded, detected_s, ok_again_s, clients = asyncio.run(scenario())
    print(
        f"stall_after_s={stall_after_s} degraded_after_s={detected_s:.1f} "
        f"ok_after_resume_s={ok_again_s:.1f} answers={by_status(clients.sent)}"
    )
    [problem] = degraded
    # The producer, its worker and its brokers (host:port only), and why.
    assert f"producer producer-1 of worker pid {runner.pid}" in problem
    assert broker.bootstrap in problem and "records pending" in problem and "pending now" in problem
    logs = runner.logs()
    assert "event=delivery_stalled producer=producer-1" in logs
    assert "event=delivery_resumed producer=producer-1" in logs
    # Every request was answered in its time: 200, or 504 while the broker was frozen.
    assert {s.status for s in clients.sent} <= {200, 504}
    assert max(s.latency for s in clients.sent) < 0.5 + SLACK_S


def test_a_frozen_worker_is_killed_and_replaced_within_the_worker_timeout(
    broker: EmbeddedBroker, runner_factory: Callable[..., RunnerProcess]
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 1})
    timeout_s = 3
    runner = runner_factory("--worker-timeout", str(timeout_s), workers=2)
    base = base_url(runner)
    eventually(lambda: get_json(base + "/ready")[0] == 200, what="ready")
    frozen, other = runner.worker_pids()
    os.kill(frozen, signal.SIGSTOP)
    stopped_at = time.monotonic()
    eventually(lambda: process_state(frozen) in ("T", "t"), what="the worker stopped")
    status, ready = eventually(
        lambda: (lambda r: r if r[0] == 503 else None)(get_json(base + "/ready")),
        timeout=timeout_s + 2,
        what="/ready 503 while the worker is frozen",
    )
    not_ready_s = time.monotonic() - stopped_at
    assert ready["workers"] == {"expected": 2, "accepting": 1}

    def replaced() -> list[int]:
        pids = runner.worker_pids()
        return pids if len(pids) == 2 and frozen not in pids else []

    pids = eventually(replaced, timeout=timeout_s + 5, what="the frozen worker replaced")
    replaced_s = time.monotonic() - stopped_at
    [new] = [pid for pid in pids if pid != other]
    eventually(lambda: get_json(base + "/ready")[0] == 200, what="ready again")
    ready_again_s = time.monotonic() - stopped_at
    # The new worker serves requests: the only one running while the request connects.
    route = conf(broker.bootstrap, topic)

    async def one() -> int:
        async with Clients(runner.socket_path, {"r": route}) as clients:
            return (await clients.one("r")).status

    with only_running(runner, new):
        status = asyncio.run(one())
    print(
        f"worker_timeout_s={timeout_s} not_ready_after_s={not_ready_s:.1f} "
        f"replaced_after_s={replaced_s:.1f} ready_again_after_s={ready_again_s:.1f} "
        f"new_worker_answer={status}"
    )
    assert status == 200
    logs = runner.logs()
    assert f"event=worker_unresponsive worker=0 pid={frozen}" in logs or (
        f"event=worker_unresponsive worker=1 pid={frozen}" in logs
    )
    assert f"pid={frozen} cause='killed by SIGKILL' action=restart" in logs
    assert replaced_s < timeout_s + 2


def test_an_idempotent_producer_stuck_after_a_broker_restart_is_replaced_and_200s_resume(
    broker_factory: BrokerFactory, runner_factory: Callable[..., RunnerProcess]
) -> None:
    """The known Tansu case: it forgets producer ids on restart and refuses librdkafka's epoch
    bump, so the idempotent producer (sync routes' default) never delivers again by itself,
    while the broker answers metadata. The pool replaces it after message.timeout.ms; what the
    old client held is answered (sync) or counted as failed (async), none lost silently."""
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    runner = runner_factory()
    base = base_url(runner)
    producer = {"message.timeout.ms": 3000, "enable.idempotence": True}
    sync = conf(broker.bootstrap, topic, timeout_ms=1000, config=producer)
    # The same producer config: the async route shares the sync route's (stuck) producer.
    queued = conf(broker.bootstrap, topic, delivery="async", config=producer)

    async def scenario() -> tuple[Clients, float, float]:
        routes = {"sync": sync, "async": queued}
        async with Clients(runner.socket_path, routes, clients=4, think_s=0.05) as clients:
            await clients.one("sync")
            clients.start()
            await asyncio.sleep(0.5)
            restart(broker)
            restarted_at = time.monotonic()
            recovered_s = await until(
                lambda: any(s.status == 200 for s in clients.sent[-8:] if s.started > restarted_at),
                20.0,
                "200s again after the restart",
            )
            await asyncio.sleep(1.0)
        return clients, restarted_at, recovered_s

    clients, restarted_at, recovered_s = asyncio.run(scenario())
    after = [s for s in clients.sent if s.started > restarted_at]
    replaced = [line for line in runner.logs().splitlines() if "event=producer_replaced" in line]
    # The restarted broker holds only what came after the restart (it lost the rest with its
    # memory): count what was answered after it.
    accepted = {s.id for s in after if s.status == 202}
    ok = {s.id for s in after if s.status == 200}
    found = landed(broker.bootstrap, topic, timeout=3.0)
    samples, _text = scrape(base)
    failed = total(samples, "kafkaupstream_records_failed_total")
    lost = len(accepted - set(found))
    print(
        f"recovered_after_restart_s={recovered_s:.1f} answers_after_restart={by_status(after)} "
        f"replacements={len(replaced)} async_accepted={len(accepted)} "
        f"async_not_in_kafka={lost} records_failed_counted={failed}"
    )
    assert any("cause=stalled" in line for line in replaced), replaced
    sync_after = [s for s in after if s.route == "sync"]
    assert {(s.status, s.error) for s in sync_after} <= {
        (200, None),
        (503, "kafka_unavailable"),
        (504, "delivery_timeout"),
    }
    assert max(s.latency for s in sync_after) < 1.0 + SLACK_S
    # Every 202 the broker does not hold was counted as failed (timed out or purged with the
    # stuck client), and every 200 is there.
    assert lost <= failed
    assert ok <= set(found)
