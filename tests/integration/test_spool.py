"""The durable spool against the real runner process and Tansu: 202 means on disk.

Every body carries a unique id; records are read back from the broker by consuming them. The
broker is one of the test's own wherever it is down, started late or restarted; a broker that
is down is a port nobody listens on yet. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import resource
import signal
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.broker import EmbeddedBroker, free_port
from harness.consume import read_records
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer, PluginConf
from harness.runner_process import RunnerProcess

from .conftest import BrokerFactory
from .faultkit import Clients, by_status, conf, landed, new_topic_name, pause, until

JSON = (("Content-Type", "application/json"),)


@pytest.fixture
def spool_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ku-spool-") as directory:
        yield directory


def spool_runner(spool_dir: str, *args: str, workers: int = 1) -> RunnerProcess:
    return RunnerProcess(args=["--spool-dir", spool_dir, *args], workers=workers)


async def post(
    apisix: FakeApisix, route: PluginConf, body: dict[str, Any], *headers: tuple[str, str]
) -> HTTPAnswer:
    request = ClientRequest(
        "POST", "/kafkaupstream", headers=(*JSON, *headers), body=json.dumps(body).encode()
    )
    return await apisix.request(route, request)


def error_of(answer: HTTPAnswer) -> str | None:
    return json.loads(answer.body).get("error") if answer.status >= 400 else None


def late_broker(factory: BrokerFactory, port: int, topic: str) -> EmbeddedBroker:
    """A broker started on ``port`` once the runner spooled; the forwarder's producer has the
    topic auto-created (creating it here would race that), so wait until it exists."""
    broker = factory(None, port=port)
    deadline = time.monotonic() + 20
    while topic not in broker.partition_counts():
        assert time.monotonic() < deadline, f"topic {topic} never appeared"
        time.sleep(0.1)
    return broker


def opened_duplicates(logs: str) -> int:
    """The possible duplicates every ``spool_opened`` line counted."""
    return sum(int(n) for n in re.findall(r"event=spool_opened .*possible_duplicates=(\d+)", logs))


def test_spool_route_without_spool_dir_is_route_config_invalid(broker: EmbeddedBroker) -> None:
    async def scenario(runner: RunnerProcess) -> HTTPAnswer:
        async with FakeApisix(runner.socket_path) as apisix:
            return await post(apisix, conf(broker.bootstrap, "kafkaupstream", delivery="spool"), {})

    with RunnerProcess(workers=1) as runner:
        answer = asyncio.run(scenario(runner))
    assert answer.status == 500
    assert error_of(answer) == "route_config_invalid"
    assert "delivery: 'spool' needs the runner's --spool-dir" in json.loads(answer.body)["message"]


def test_spooled_record_is_answered_202_and_lands_with_key_partition_headers(
    broker: EmbeddedBroker, spool_dir: str
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 3})
    route = conf(broker.bootstrap, topic, delivery="spool", forward_headers=["x-request-id"])

    async def scenario(runner: RunnerProcess) -> HTTPAnswer:
        async with FakeApisix(runner.socket_path) as apisix:
            return await post(
                apisix,
                route,
                {"id": "one", "n": 1},
                ("key", "user-7"),
                ("partition", "2"),
                ("x-request-id", "r-1"),
            )

    with spool_runner(spool_dir) as runner:
        answer = asyncio.run(scenario(runner))
        records = read_records(broker.bootstrap, topic, expected=1, timeout=10)
    assert answer.status == 202
    assert answer.body == b'{"topic": "%s", "status": "spooled"}' % topic.encode()
    assert len(records) == 1
    record = records[0]
    assert (record.partition, record.key, record.value) == (2, b"user-7", b'{"id":"one","n":1}')
    assert record.headers == (("x-request-id", b"r-1"),)
    files = sorted(os.listdir(spool_dir))
    assert "spool-0.db" in files and "spool-0.lock" in files
    for name in files:
        assert stat.S_IMODE(os.stat(os.path.join(spool_dir, name)).st_mode) == 0o600, name


async def keyed_senders(
    socket_path: str, route: PluginConf, keys: list[str], stop: asyncio.Event
) -> dict[str, list[tuple[int, HTTPAnswer]]]:
    """One sequential client per key: each request waits for its answer before the next."""
    answers: dict[str, list[tuple[int, HTTPAnswer]]] = {key: [] for key in keys}

    async def one_key(key: str) -> None:
        async with FakeApisix(socket_path) as apisix:
            n = 0
            while not stop.is_set():
                answer = await post(apisix, route, {"id": f"{key}-{n}", "n": n}, ("key", key))
                answers[key].append((n, answer))
                n += 1
                await asyncio.sleep(0.002)

    await asyncio.gather(*(one_key(k) for k in keys))
    return answers


def test_broker_down_for_10_s_under_load_keeps_answering_202_then_drains_in_key_order(
    spool_dir: str, broker_factory: BrokerFactory
) -> None:
    topic = new_topic_name()
    port = free_port()
    route = conf(f"127.0.0.1:{port}", topic, delivery="spool")
    keys = [f"k{i}" for i in range(6)]

    async def scenario(
        runner: RunnerProcess,
    ) -> tuple[dict[str, list[tuple[int, HTTPAnswer]]], int]:
        stop = asyncio.Event()
        load = asyncio.create_task(keyed_senders(runner.socket_path, route, keys, stop))
        await asyncio.sleep(10)  # no broker listens on the port
        broker = await asyncio.to_thread(broker_factory, None, port=port)
        assert broker.port == port
        await asyncio.sleep(4)  # the backlog drains while the clients go on
        stop.set()
        answers = await load
        return answers, sum(len(a) for a in answers.values())

    with spool_runner(spool_dir) as runner:
        answers, total = asyncio.run(scenario(runner))
        statuses = collections.Counter(a.status for per in answers.values() for _n, a in per)
        records = read_records(f"127.0.0.1:{port}", topic, expected=total, timeout=30)
    print(f"\nbroker down 10 s: {total} requests, answers {dict(statuses)}, {len(records)} records")
    assert statuses == {202: total}
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for record in records:
        assert record.key is not None
        by_key[record.key.decode()].append(json.loads(record.value or b"")["n"])
    for key in keys:
        assert by_key[key] == sorted(by_key[key]), f"key {key} out of order"
        assert set(by_key[key]) == {n for n, _a in answers[key]}, f"key {key} lost records"
    assert len(records) == total


def test_sigkill_of_a_worker_and_of_the_runner_loses_no_spooled_record(
    spool_dir: str, broker: EmbeddedBroker
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 2})
    routes = {"s": conf(broker.bootstrap, topic, delivery="spool")}
    logs = ""

    async def load(runner: RunnerProcess, clients: Clients, kill: str) -> None:
        clients.start()
        await asyncio.sleep(2)
        if kill == "worker":
            os.kill(runner.worker_pids()[0], signal.SIGKILL)
            await asyncio.sleep(2)
        else:
            runner.send_signal(signal.SIGKILL)
            await asyncio.sleep(0.2)
        await clients.stop()

    async def scenario() -> Clients:
        nonlocal logs
        first = spool_runner(spool_dir, workers=2).start()
        clients = Clients(first.socket_path, routes, clients=8, think_s=0.001)
        try:
            await load(first, clients, "worker")
            clients.apisix = FakeApisix(first.socket_path)
            await load(first, clients, "runner")
            assert first.proc is not None
            first.proc.wait(10)
        finally:
            logs += first.logs()
            first.close()
        # Fewer workers now: the one left takes over the other slot's file and drains it.
        with spool_runner(spool_dir, workers=1) as second:
            await until(lambda: not _spool_holds_records(spool_dir), 30, "spool drained")
            taken_over = Path(spool_dir, "spool-1.db")
            await until(lambda: not taken_over.exists(), 10, "the drained spool-1 removed")
            logs += second.logs()
        return clients

    clients = asyncio.run(scenario())
    accepted = clients.ids(202)
    counts = landed(broker.bootstrap, topic, expected=len(accepted), timeout=15)
    missing = accepted - set(counts)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    bound = opened_duplicates(logs)
    print(
        f"\nSIGKILL: answers {by_status(clients.sent)}, {len(accepted)} accepted, "
        f"{len(missing)} missing, {duplicates} duplicates (possible duplicates counted: {bound})"
    )
    assert accepted and not missing
    assert duplicates <= bound


def _spool_holds_records(spool_dir: str) -> bool:
    """Whether any spool file still holds a record (read with SQLite itself, no lock taken)."""
    for path in Path(spool_dir).glob("spool-*.db"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            if db.execute("SELECT count(*) FROM records").fetchone()[0]:
                return True
    return False


def test_sigterm_exits_within_the_budget_and_the_next_runner_delivers_the_spool(
    spool_dir: str, broker_factory: BrokerFactory
) -> None:
    topic = new_topic_name()
    port = free_port()
    route = conf(f"127.0.0.1:{port}", topic, delivery="spool")

    async def spool_some(runner: RunnerProcess) -> list[HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            return list(
                await asyncio.gather(*(post(apisix, route, {"id": f"t-{i}"}) for i in range(200)))
            )

    runner = spool_runner(spool_dir).start()
    try:
        answers = asyncio.run(spool_some(runner))
        started = time.monotonic()
        code = runner.stop(signal.SIGTERM)
        elapsed = time.monotonic() - started
    finally:
        runner.close()
    assert [a.status for a in answers] == [202] * 200
    # The budget (--shutdown-timeout, default 0.8 s) and a little for the exit itself.
    assert code == 0 and elapsed < 0.8 + 0.5, (code, elapsed)
    with spool_runner(spool_dir):
        late_broker(broker_factory, port, topic)
        counts = landed(f"127.0.0.1:{port}", topic, expected=200, timeout=20)
    assert set(counts) == {f"t-{i}" for i in range(200)}
    print(f"\nSIGTERM with 200 spooled: exit {code} in {elapsed:.2f} s, all 200 delivered after")


def test_records_kafka_refuses_for_good_become_dead_letters_and_the_rest_flows(
    spool_dir: str, broker: EmbeddedBroker
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 1})
    route = conf(broker.bootstrap, topic, delivery="spool", config={"message.max.bytes": 1000})

    async def scenario(runner: RunnerProcess) -> list[HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            return [
                await post(apisix, route, {"id": "small-1"}),
                # Its value fits message.max.bytes, not with its key: only Kafka's client can
                # refuse it (a value over the limit is refused 413 before it is spooled).
                await post(apisix, route, {"id": "big", "pad": "x" * 800}, ("key", "k" * 300)),
                await post(apisix, route, {"id": "huge", "pad": "x" * 3000}),
                await post(apisix, route, {"id": "bad-partition"}, ("partition", "7")),
                await post(apisix, route, {"id": "small-2"}),
            ]

    with spool_runner(spool_dir) as runner:
        answers = asyncio.run(scenario(runner))
        counts = landed(broker.bootstrap, topic, expected=2, timeout=10)

        def dead_letters() -> list[tuple[str, bytes]]:
            with sqlite3.connect(f"file:{spool_dir}/spool-0.db?mode=ro", uri=True) as db:
                return db.execute("SELECT error, value FROM dead_letters ORDER BY id").fetchall()

        asyncio.run(until(lambda: len(dead_letters()) == 2, 15, "two dead letters"))
        dead = dead_letters()
        logs = runner.logs()
    assert [a.status for a in answers] == [202, 202, 413, 202, 202]
    assert dict(counts) == {"small-1": 1, "small-2": 1}
    assert dead[0][0] == "MSG_SIZE_TOO_LARGE"
    assert json.loads(dead[0][1])["id"] == "big"
    assert dead[1][0] == "_UNKNOWN_PARTITION"
    assert json.loads(dead[1][1])["id"] == "bad-partition"
    assert "event=spool_dead_letter" in logs


def test_full_spool_answers_503_backpressure_and_loses_nothing_accepted(
    spool_dir: str, broker_factory: BrokerFactory
) -> None:
    topic = new_topic_name()
    port = free_port()
    route = conf(f"127.0.0.1:{port}", topic, delivery="spool")

    async def fill(runner: RunnerProcess) -> list[HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            return [
                await post(apisix, route, {"id": f"f-{i}", "pad": "x" * 900}) for i in range(60)
            ]

    with spool_runner(spool_dir, "--spool-max-bytes", "20000") as runner:
        answers = asyncio.run(fill(runner))
        accepted = {f"f-{i}" for i, a in enumerate(answers) if a.status == 202}
        refused = [a for a in answers if a.status != 202]
        late_broker(broker_factory, port, topic)
        counts = landed(f"127.0.0.1:{port}", topic, expected=len(accepted), timeout=20)
        asyncio.run(until(lambda: not _spool_holds_records(spool_dir), 15, "spool drained"))
        again = asyncio.run(fill(runner))
    print(f"\nfull spool: {len(accepted)} accepted, {len(refused)} refused")
    assert 10 <= len(accepted) < 60
    assert all(a.status == 202 for a in answers[: len(accepted)])
    assert {(a.status, error_of(a), a.header("Retry-After")) for a in refused} == {
        (503, "backpressure", "1")
    }
    assert set(counts) == accepted
    assert again[0].status == 202


def test_a_failing_spool_write_answers_503_spool_unavailable_while_other_routes_serve(
    spool_dir: str, broker: EmbeddedBroker, broker_factory: BrokerFactory
) -> None:
    """RLIMIT_FSIZE on the runner makes its writes fail with EFBIG, as a full disk would."""
    topic = new_topic_name()
    port = free_port()
    spool_route = conf(f"127.0.0.1:{port}", topic, delivery="spool")
    sync_route = conf(broker.bootstrap, "kafkaupstream")

    async def send(runner: RunnerProcess, prefix: str, n: int) -> list[tuple[str, HTTPAnswer]]:
        async with FakeApisix(runner.socket_path) as apisix:
            out = []
            for i in range(n):
                ident = f"{prefix}-{i}"
                out.append(
                    (ident, await post(apisix, spool_route, {"id": ident, "pad": "x" * 900}))
                )
            return out

    async def other(runner: RunnerProcess) -> HTTPAnswer:
        async with FakeApisix(runner.socket_path) as apisix:
            return await post(apisix, sync_route, {"id": "other"})

    with spool_runner(spool_dir) as runner:
        before = asyncio.run(send(runner, "before", 20))
        resource.prlimit(runner.pid, resource.RLIMIT_FSIZE, (1_500_000, resource.RLIM_INFINITY))
        try:
            during = asyncio.run(send(runner, "during", 1500))
            other_answer = asyncio.run(other(runner))
        finally:
            resource.prlimit(
                runner.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        asyncio.run(asyncio.sleep(0.5))
        after = asyncio.run(send(runner, "after", 20))
        late_broker(broker_factory, port, topic)
        accepted = {i for i, a in (*before, *during, *after) if a.status == 202}
        counts = landed(f"127.0.0.1:{port}", topic, expected=len(accepted), timeout=30)
        logs = runner.logs()
    refused = [a for _i, a in during if a.status != 202]
    print(f"\nRLIMIT_FSIZE: {len(accepted)} accepted, {len(refused)} refused while writes failed")
    assert refused, "the limit never made a write fail"
    assert {(a.status, error_of(a), a.header("Retry-After")) for a in refused} == {
        (503, "spool_unavailable", "1")
    }
    assert other_answer.status == 200
    assert all(a.status == 202 for _i, a in after)
    assert set(counts) == accepted
    assert "event=spool_write_failed" in logs


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metric(text: str, name: str) -> float:
    values = [float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)]
    return sum(values)


def test_metrics_and_health_show_the_backlog_its_age_and_the_drain(
    spool_dir: str, broker_factory: BrokerFactory
) -> None:
    topic = new_topic_name()
    port = free_port()
    metrics = f"127.0.0.1:{free_port()}"
    route = conf(f"127.0.0.1:{port}", topic, delivery="spool")

    async def spool_some(runner: RunnerProcess) -> list[HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            return [await post(apisix, route, {"id": f"m-{i}"}) for i in range(30)]

    args = ("--metrics-listen", metrics, "--spool-max-age", "1")
    with spool_runner(spool_dir, *args) as runner:
        answers = asyncio.run(spool_some(runner))

        def degraded() -> bool:
            status, body = _get(f"http://{metrics}/health")
            return status == 503 and b"oldest record waits" in body

        asyncio.run(until(degraded, 10, "/health degraded by the spool's age"))
        _status, backlog = _get(f"http://{metrics}/metrics")
        late_broker(broker_factory, port, topic)
        counts = landed(f"127.0.0.1:{port}", topic, expected=30, timeout=20)

        def drained() -> bool:
            _status, body = _get(f"http://{metrics}/metrics")
            text = body.decode()
            return _metric(text, "kafkaupstream_spool_forwarded_total") == 30 and (
                _metric(text, "kafkaupstream_spool_records") == 0
            )

        asyncio.run(until(drained, 15, "metrics show the spool drained"))
        health_after, _body = _get(f"http://{metrics}/health")
    text = backlog.decode()
    assert [a.status for a in answers] == [202] * 30
    assert _metric(text, "kafkaupstream_spool_records") == 30
    assert _metric(text, "kafkaupstream_spool_bytes") > 30 * 10
    assert _metric(text, "kafkaupstream_spool_oldest_record_age_seconds") > 1
    assert _metric(text, "kafkaupstream_spool_available") == 1
    assert len(counts) == 30
    assert health_after == 200


def _sent_mark(spool_dir: str) -> int:
    with sqlite3.connect(f"file:{spool_dir}/spool-0.db?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'sent_upto'").fetchone()
    return int(row[0]) if row else 0


def test_records_in_flight_at_a_sigkill_are_delivered_again_and_counted(
    spool_dir: str, broker_factory: BrokerFactory
) -> None:
    """The broker frozen while the forwarder hands records over, then the runner SIGKILLed: the
    next runner counts those records as possible duplicates and produces them again."""
    topic = new_topic_name()
    broker = broker_factory({topic: 1})
    route = conf(broker.bootstrap, topic, delivery="spool")

    async def send(runner: RunnerProcess, prefix: str, n: int) -> list[HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            sends = (post(apisix, route, {"id": f"{prefix}-{i}"}) for i in range(n))
            return list(await asyncio.gather(*sends))

    first = spool_runner(spool_dir).start()
    try:
        warm = asyncio.run(send(first, "warm", 5))
        assert len(landed(broker.bootstrap, topic, expected=5, timeout=10)) == 5
        pause(broker)
        frozen = asyncio.run(send(first, "frozen", 100))
        # The forwarder handed the first batch after the warm-up to the producer (ids from 6).
        asyncio.run(until(lambda: _sent_mark(spool_dir) > 5, 10, "a batch handed over"))
        first.stop(signal.SIGKILL)
        logs = first.logs()
    finally:
        first.close()
    with spool_runner(spool_dir) as second:
        broker.resume()
        counts = landed(broker.bootstrap, topic, expected=105, timeout=20)
        asyncio.run(until(lambda: not _spool_holds_records(spool_dir), 20, "spool drained"))
        logs += second.logs()
    counted = opened_duplicates(logs)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\nSIGKILL with 100 in flight: {duplicates} duplicates, {counted} counted at the open")
    assert [a.status for a in (*warm, *frozen)] == [202] * 105
    assert set(counts) == {f"warm-{i}" for i in range(5)} | {f"frozen-{i}" for i in range(100)}
    assert 0 < counted <= 100
    assert duplicates <= counted


def test_a_spool_dir_that_cannot_be_made_answers_503_and_other_routes_serve(
    broker: EmbeddedBroker,
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    spool_route = conf(broker.bootstrap, "kafkaupstream", delivery="spool")
    sync_route = conf(broker.bootstrap, "kafkaupstream")

    async def scenario(runner: RunnerProcess) -> tuple[HTTPAnswer, HTTPAnswer]:
        async with FakeApisix(runner.socket_path) as apisix:
            return (
                await post(apisix, spool_route, {"id": "spooled"}),
                await post(apisix, sync_route, {"id": "sync"}),
            )

    # /dev/null is not a directory: every attempt to make the spool directory fails (ENOTDIR).
    with spool_runner("/dev/null/spool", "--metrics-listen", metrics) as runner:
        spooled, synced = asyncio.run(scenario(runner))
        asyncio.run(until(lambda: _get(f"http://{metrics}/health")[0] == 503, 10, "degraded"))
        _status, health = _get(f"http://{metrics}/health")
        logs = runner.logs()
    assert (spooled.status, error_of(spooled), spooled.header("Retry-After")) == (
        503,
        "spool_unavailable",
        "1",
    )
    assert synced.status == 200
    assert b"cannot be opened" in health
    assert "event=spool_open_failed" in logs


def test_files_of_slots_past_the_worker_count_are_taken_over_drained_and_removed(
    spool_dir: str, broker: EmbeddedBroker
) -> None:
    """What a runner with more workers left: slot 3 with records, slot 5 with a dead letter."""
    from kafkaupstream.producers import KafkaRecord, canonical_config
    from kafkaupstream.spool.store import SpoolStore, record_size

    topic = new_topic_name()
    broker.create_topics({topic: 1})
    config = canonical_config({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    left = SpoolStore(os.path.join(spool_dir, "spool-3.db"))
    records = [KafkaRecord(topic, json.dumps({"id": f"left-{i}"}).encode()) for i in range(5)]
    left.commit([(config, r, time.time(), record_size(r)) for r in records])
    left.close()
    dead = SpoolStore(os.path.join(spool_dir, "spool-5.db"))
    dead.commit([(config, KafkaRecord(topic, b"x"), time.time(), 1)])
    (stored,) = dead.read(0, 1, 1 << 20)
    dead.commit([], dead=[(stored, "MSG_SIZE_TOO_LARGE", "too large")])
    dead.close()

    with spool_runner(spool_dir, workers=2) as runner:
        counts = landed(broker.bootstrap, topic, expected=5, timeout=15)
        gone = Path(spool_dir, "spool-3.db")
        asyncio.run(until(lambda: not gone.exists(), 10, "the drained spool-3 removed"))
        time.sleep(2.5)  # a few maintenance rounds
        logs = runner.logs()
    assert dict(counts) == {f"left-{i}": 1 for i in range(5)}
    assert Path(spool_dir, "spool-5.db").exists()
    assert len(re.findall(r"event=spool_opened file=spool-5\.db", logs)) == 1
    assert re.search(r"event=spool_opened file=spool-3\.db own=False records=5", logs)
