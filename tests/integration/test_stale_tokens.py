"""Stale conf tokens after a runner restart never serve another route's conf.

APISIX keeps conf tokens in a shared dict that survives ``apisix reload`` (the runner is replaced,
nothing is flushed) and, after a runner crash, in the lrucache of every worker that has not
processed the ``runner_exit`` event yet. The new runner must answer those tokens with
CONF_TOKEN_NOT_FOUND (APISIX then re-prepares) instead of taking them for a route it prepared
since. Each test runs real runner processes one after the other on one socket path, the fake
APISIX with its caches kept across the replacement, and reads the records back from the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from harness.broker import EmbeddedBroker
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer, PluginConf
from harness.runner_process import RunnerProcess
from tests.integration.test_broker import alive
from tests.waiting import eventually

from .conftest import ReadRecords

JSON = (("Content-Type", "application/json"),)


@pytest.fixture
def socket_path() -> Iterator[str]:
    """One path for every runner of a test, as APISIX respawns the runner on the same path."""
    with tempfile.TemporaryDirectory(prefix="ku-") as tmp:
        yield os.path.join(tmp, "runner.sock")


def route(bootstrap: str, route_id: str, topic: str, version: int = 1) -> PluginConf:
    """Route ``route_id``'s kafkaupstream conf; APISIX's key is ``route#<id>#<plugin>#<ver>``."""
    value = json.dumps({"config": {"bootstrap.servers": bootstrap, "linger.ms": 0}, "topic": topic})
    return PluginConf(conf=(("kafkaupstream", value),), conf_id=route_id, version=version)


async def post(apisix: FakeApisix, plugin: PluginConf, ident: str, worker: int = 0) -> HTTPAnswer:
    body = json.dumps({"id": ident}).encode()
    return await apisix.request(
        plugin, ClientRequest("POST", "/orders", headers=JSON, body=body), worker=worker
    )


def topic_of(answer: HTTPAnswer) -> Any:
    assert answer.status == 200, (answer.status, answer.body, answer.error)
    return json.loads(answer.body)["topic"]


def ids_in(read_records: ReadRecords, topic: str, expected: int) -> list[str]:
    """Every id in ``topic``, reading one record more than expected (so a stray one shows)."""
    records = read_records(topic, expected=expected + 1, timeout=2.0)
    return sorted(json.loads(r.value or b"{}")["id"] for r in records)


def runner(socket_path: str, workers: int = 1) -> RunnerProcess:
    return RunnerProcess(socket_path=socket_path, workers=workers)


async def killed(proc: RunnerProcess) -> None:
    """SIGKILL, and its workers gone, waited for off the loop so that the pools see their
    connections close (as nginx notices an idle pooled connection closing)."""
    workers = proc.worker_pids()
    await asyncio.to_thread(proc.stop, signal.SIGKILL)
    await asyncio.to_thread(
        eventually, lambda: not any(alive(pid) for pid in workers), what="workers gone"
    )
    await asyncio.sleep(0.05)


def test_after_a_reload_a_stale_token_is_re_prepared_not_served_with_another_routes_conf(
    broker: EmbeddedBroker, new_topic: Any, read_records: ReadRecords, socket_path: str
) -> None:
    tx, ty = new_topic(1), new_topic(1)
    x, y1 = route(broker.bootstrap, "x", tx), route(broker.bootstrap, "y", ty)
    y2 = route(broker.bootstrap, "y", ty, version=2)  # route Y edited along with the reload

    async def scenario() -> tuple[list[Any], int, int]:
        async with FakeApisix(socket_path) as apisix:
            with runner(socket_path) as first:
                before = [
                    topic_of(await post(apisix, x, "x1")),
                    topic_of(await post(apisix, y1, "y1")),
                ]
                old = (await apisix.prepare(x), await apisix.prepare(y1))
                await asyncio.to_thread(first.stop)
            apisix.reload()  # new nginx workers, same shared dict: X's old token is still there
            with runner(socket_path):
                after = [topic_of(await post(apisix, y2, "y2"))]
                new = await apisix.prepare(y2)
                after.append(topic_of(await post(apisix, x, "x2")))
            print(
                f"\nreload: runner 1 gave X {old[0]}, Y {old[1]}; runner 2 gave Y v2 {new}; "
                f"X's stale token then took {apisix.retry_count} CONF_TOKEN_NOT_FOUND retry; "
                f"{apisix.prepare_count} PrepareConfs in all"
            )
            return before + after, apisix.retry_count, apisix.prepare_count

    topics, retries, prepares = asyncio.run(scenario())
    assert topics == [tx, ty, ty, tx]
    assert (retries, prepares) == (1, 4)  # X's stale token: refused once, then re-prepared
    assert ids_in(read_records, tx, 2) == ["x1", "x2"]
    assert ids_in(read_records, ty, 2) == ["y1", "y2"]


@pytest.mark.parametrize(
    ("runner_workers", "processed_by"),
    [(1, [0]), (2, [])],
    ids=["one-worker-missed-runner_exit", "two-workers-with-different-stale-tokens"],
)
def test_after_a_crash_workers_holding_stale_tokens_land_in_their_own_topic(
    broker: EmbeddedBroker,
    new_topic: Any,
    read_records: ReadRecords,
    socket_path: str,
    runner_workers: int,
    processed_by: list[int],
) -> None:
    # Runners with one process and with two workers (the one allocator lives in the parent).
    tx, ty = new_topic(1), new_topic(1)
    x, y = route(broker.bootstrap, "x", tx), route(broker.bootstrap, "y", ty)

    async def scenario() -> tuple[list[Any], int]:
        async with FakeApisix(socket_path, workers=2) as apisix:
            with runner(socket_path, runner_workers) as first:
                before = [topic_of(await post(apisix, x, "x1", worker=1))]
                before.append(topic_of(await post(apisix, y, "y1", worker=0)))
                await killed(first)
            # The workers not listed still hold the dead runner's tokens in their lrucaches.
            apisix.runner_exit(processed_by)
            with runner(socket_path, runner_workers):  # the agent's respawn
                after = [topic_of(await post(apisix, y, "y2", worker=0))]
                after.append(topic_of(await post(apisix, x, "x2", worker=1)))
                after.append(topic_of(await post(apisix, y, "y3", worker=0)))
            return before + after, apisix.retry_count

    topics, retries = asyncio.run(scenario())
    assert topics == [tx, ty, ty, tx, ty]
    assert retries == 2 - len(processed_by)  # each stale token refused once, then re-prepared
    assert ids_in(read_records, tx, 2) == ["x1", "x2"]
    assert ids_in(read_records, ty, 3) == ["y1", "y2", "y3"]
