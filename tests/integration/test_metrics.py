"""``--metrics-listen``: Prometheus metrics, ``/health`` and ``/ready`` of the whole runner.

Real runner processes (two workers unless said otherwise), the fake APISIX and a Tansu broker.
To make a given worker serve a request, the other one is stopped (SIGSTOP) while the request's
connection is accepted; every figure asserted is then the sum over both workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.broker import EmbeddedBroker, free_port
from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from harness.runner_process import RunnerProcess
from kafkaupstream.core import core
from tests.integration.workerkit import only_running
from tests.waiting import eventually

JSON = ("Content-Type", "application/json")
SECRET = "s3cr3t-Hunter2-do-not-leak"
SASL_USER = "alice-user-q7"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers ----------------------------------------------------------------------------------


def conf(bootstrap: str, topic: str, config: dict[str, Any] | None = None, **fields: Any) -> str:
    return json.dumps(
        {
            "config": {"bootstrap.servers": bootstrap, "linger.ms": 0, **(config or {})},
            "topic": topic,
            **fields,
        }
    )


def route(route_id: str, value: str) -> PluginConf:
    return PluginConf(conf=(("kafkaupstream", value),), conf_id=route_id)


def request(body: bytes = b'{"hello": "world"}', *headers: tuple[str, str]) -> ClientRequest:
    return ClientRequest("POST", "/kafkaupstream", headers=(JSON, *headers), body=body)


def logged(proc: RunnerProcess, pattern: str, timeout: float = 5.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while (found := re.search(pattern, proc.logs())) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not logged:\n{proc.logs()}")
        time.sleep(0.02)
    return found


def base_url(proc: RunnerProcess) -> str:
    return "http://" + logged(proc, r"event=metrics_listening address=([0-9.:]+)").group(1)


def http_get(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body); an error status is an answer here, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, content_type, body = http_get(url)
    assert content_type == "application/json", (status, content_type, body)
    return status, json.loads(body)


def scrape(base: str) -> tuple[Samples, str]:
    status, content_type, body = http_get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    text = body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (found, labels) in samples if found == name]


def total(samples: Samples, name: str) -> float:
    return sum(v for (found, _labels), v in samples.items() if found == name)


async def answers(socket_path: str, plugin: PluginConf, *requests: ClientRequest) -> list[int]:
    async with FakeApisix(socket_path) as apisix:
        return [(await apisix.request(plugin, r)).status for r in requests]


def statuses(proc: RunnerProcess, plugin: PluginConf, *requests: ClientRequest) -> list[int]:
    return asyncio.run(answers(proc.socket_path, plugin, *requests))


def tcp_listeners(pids: list[int]) -> list[str]:
    """Local addresses of the listening TCP sockets these processes hold (from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found.append(fields[1])
    return found


def metrics_runner(workers: int, *extra: str) -> RunnerProcess:
    return RunnerProcess(
        workers=workers, args=["--metrics-listen", "127.0.0.1:0", "--log-format", "json", *extra]
    )


# --- one runner, traffic on both workers ---------------------------------------------------------


@dataclass
class Traffic:
    proc: RunnerProcess
    base: str
    topic: str
    worker_a: int
    worker_b: int
    dead_bootstrap: str
    in_flight_seen: float
    delivered_by: dict[int, int]


@pytest.fixture(scope="module")
def traffic(broker: EmbeddedBroker) -> Iterator[Traffic]:
    topic = f"metrics-{os.getpid()}"
    broker.create_topics({topic: 1})
    dead = f"127.0.0.1:{free_port()}"
    live = route("live", conf(broker.bootstrap, topic))
    queued = route("queued", conf(broker.bootstrap, topic, delivery="async"))
    # Held for 2.5 s by the unreachable broker, then 503 kafka_unavailable.
    held = {"message.timeout.ms": 2500}
    stalled = route("stalled", conf(dead, "dead-topic", held, timeout_ms=10000))
    secret = route(
        "secret",
        conf(
            dead,
            "secret-topic",
            {
                **held,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": SASL_USER,
                "sasl.password": SECRET,
            },
            timeout_ms=10000,
        ),
    )
    with metrics_runner(2) as proc:
        base = base_url(proc)
        worker_a, worker_b = proc.worker_pids()

        async def drive() -> float:
            async with FakeApisix(proc.socket_path) as apisix:
                with only_running(proc, worker_a):
                    held_calls = [
                        asyncio.create_task(apisix.request(stalled, request())) for _ in range(3)
                    ] + [asyncio.create_task(apisix.request(secret, request()))]

                    def in_flight() -> float:
                        seen = value(scrape(base)[0], "kafkaupstream_in_flight_requests") or 0.0
                        return seen if seen >= 4 else 0.0

                    # The 4 held requests show in worker A's next report (one a second).
                    seen = await asyncio.to_thread(eventually, in_flight, 5, "4 in flight")
                    assert [a.status for a in await asyncio.gather(*held_calls)] == [503] * 4
                    for answer, expected in [
                        (await apisix.request(live, request()), 200),
                        (await apisix.request(live, request()), 200),
                        (await apisix.request(live, request(b'{"hello": ')), 400),
                        (await apisix.request(live, request(b"{}", ("topic", "other"))), 403),
                    ]:
                        assert answer.status == expected, answer
                # Its connections were A's; the tokens stay cached, as in APISIX: B gets
                # requests with tokens A prepared and adopts them (keys included).
                await apisix.close()
                with only_running(proc, worker_b):
                    for plugin, expected in [(live, 200), (live, 200), (queued, 202)]:
                        assert (await apisix.request(plugin, request())).status == expected
                assert apisix.prepare_count == 4  # live, stalled and secret on A, queued on B
                return float(seen)

        in_flight_seen = asyncio.run(drive())

        def delivered_by_worker() -> dict[int, int]:
            _status, health = get_json(base + "/health")
            counts = {
                w["pid"]: sum(p["delivered"] for p in w["producers"]) for w in health["workers"]
            }
            return counts if counts == {worker_a: 2, worker_b: 3} else {}

        delivered_by = eventually(delivered_by_worker, what="every record delivered and reported")
        yield Traffic(proc, base, topic, worker_a, worker_b, dead, in_flight_seen, delivered_by)


def test_requests_are_counted_by_route_status_and_error_over_both_workers(
    traffic: Traffic,
) -> None:
    samples, _text = scrape(traffic.base)
    requests = "kafkaupstream_requests_total"
    assert value(samples, requests, route="live", status="200", error="") == 4  # 2 on A, 2 on B
    assert value(samples, requests, route="live", status="400", error="invalid_json") == 1
    assert value(samples, requests, route="live", status="403", error="topic_not_allowed") == 1
    assert value(samples, requests, route="queued", status="202", error="") == 1
    assert value(samples, requests, route="stalled", status="503", error="kafka_unavailable") == 3
    assert value(samples, requests, route="secret", status="503", error="kafka_unavailable") == 1
    assert total(samples, requests) == 11
    assert traffic.delivered_by == {traffic.worker_a: 2, traffic.worker_b: 3}


def test_records_produced_and_failed_are_counted_by_topic_async_ones_included(
    traffic: Traffic,
) -> None:
    samples, _text = scrape(traffic.base)
    assert value(samples, "kafkaupstream_records_produced_total", topic=traffic.topic) == 5
    assert total(samples, "kafkaupstream_records_produced_total") == 5
    failed = "kafkaupstream_records_failed_total"
    assert value(samples, failed, topic="dead-topic", error="_MSG_TIMED_OUT") == 3
    assert value(samples, failed, topic="secret-topic", error="_MSG_TIMED_OUT") == 1


def test_the_delivery_histogram_counts_every_delivered_record(traffic: Traffic) -> None:
    samples, _text = scrape(traffic.base)
    count = value(samples, "kafkaupstream_delivery_seconds_count")
    assert count == total(samples, "kafkaupstream_records_produced_total") == 5
    assert value(samples, "kafkaupstream_delivery_seconds_bucket", le="+Inf") == 5
    assert value(samples, "kafkaupstream_delivery_seconds_bucket", le="0.0005") is not None
    assert value(samples, "kafkaupstream_delivery_seconds_bucket", le="10.0") == 5
    assert 0 < (value(samples, "kafkaupstream_delivery_seconds_sum") or 0) < 5 * 10


def test_gauges_show_in_flight_back_at_zero_queue_depths_and_tokens(traffic: Traffic) -> None:
    assert traffic.in_flight_seen == 4  # while the stalled requests waited
    eventually(
        lambda: value(scrape(traffic.base)[0], "kafkaupstream_in_flight_requests") == 0,
        what="in-flight back to 0",
    )
    samples, _text = scrape(traffic.base)
    depth = series(samples, "kafkaupstream_producer_queue_depth")
    assert {d["pid"] for d in depth} == {str(traffic.worker_a), str(traffic.worker_b)}
    # A: the live producer and the two dead-broker ones; B: the live one and the async one
    # (async routes are not idempotent by default: another config, another producer).
    assert len(depth) == 5
    assert value(samples, "kafkaupstream_conf_tokens") == 4  # live, queued, stalled, secret
    info = {"version": "0.1.0", "workers": "2", "core": core()}
    assert value(samples, "kafkaupstream_runner_info", **info) == 1
    assert value(samples, "kafkaupstream_workers_accepting") == 2
    assert value(samples, "kafkaupstream_backpressure_refusals_total", reason="queue_full") is None


def test_health_is_degraded_naming_the_producer_whose_broker_is_dead(traffic: Traffic) -> None:
    def degraded() -> dict[str, Any]:
        status, body = get_json(traffic.base + "/health")
        down = [
            (w["pid"], p["name"], p["bootstrap"])
            for w in body["workers"]
            for p in w["producers"]
            if p["reachable"] is False
        ]
        return body if status == 503 and len(down) == 2 else {}

    body = eventually(degraded, what="both dead-broker producers unreachable")
    assert body["status"] == "degraded"
    (worker_a,) = [w for w in body["workers"] if w["pid"] == traffic.worker_a]
    by_name = {p["name"]: p for p in worker_a["producers"]}
    down = sorted(name for name, p in by_name.items() if p["reachable"] is False)
    assert [by_name[name]["bootstrap"] for name in down] == [[traffic.dead_bootstrap]] * 2
    assert all(
        f"producer {name} of worker pid {traffic.worker_a}" in str(body["problems"])
        for name in down
    )
    samples, _text = scrape(traffic.base)
    reachable = "kafkaupstream_producer_reachable"
    assert {value(samples, reachable, producer=n, pid=str(traffic.worker_a)) for n in down} == {0}
    # The transition is logged once per producer, not per probe or reconnect.
    downs = re.findall(r"event=broker_unreachable producer=(\S+)", traffic.proc.logs())
    assert sorted(downs) == down


def test_ready_when_every_worker_accepts(traffic: Traffic) -> None:
    status, body = get_json(traffic.base + "/ready")
    assert (status, body["status"], body["workers"]) == (
        200,
        "ready",
        {"expected": 2, "accepting": 2},
    )
    assert get_json(traffic.base + "/nothing-here")[0] == 404


def test_no_secret_reaches_metrics_or_health(traffic: Traffic) -> None:
    _samples, text = scrape(traffic.base)
    _status, health = get_json(traffic.base + "/health")
    published = text + json.dumps(health)
    assert "secret" in published  # the route and its topic are there, as labels...
    for leaked in (SECRET, SASL_USER, "sasl", "password"):  # ...its credentials are not
        assert leaked not in published
    assert SECRET not in traffic.proc.logs()


def test_every_log_line_is_json_in_the_parent_and_the_workers(traffic: Traffic) -> None:
    lines = traffic.proc.logs().splitlines()
    parsed = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    by_pid: dict[int, set[str]] = {}
    for line in parsed:
        by_pid.setdefault(line["pid"], set()).add(line.get("event", ""))
    parent = traffic.proc.pid
    assert {"metrics_dir_created", "metrics_listening", "worker_started", "listening"} <= by_pid[
        parent
    ]
    for worker in (traffic.worker_a, traffic.worker_b):
        assert {"worker_accepting", "producer_created", "broker_reachable"} <= by_pid[worker]
    down = next(p for p in parsed if p.get("event") == "broker_unreachable")
    assert down["level"] == "warning" and down["fields"]["bootstrap"] == traffic.dead_bootstrap


# --- other runners ------------------------------------------------------------------------------


def test_a_single_process_runner_serves_metrics_health_ok_and_ready(broker: EmbeddedBroker) -> None:
    topic = f"metrics-single-{os.getpid()}"
    broker.create_topics({topic: 1})
    live = route("single", conf(broker.bootstrap, topic))
    with metrics_runner(1) as proc:
        base = base_url(proc)
        assert statuses(proc, live, request(), request(b"")) == [200, 400]

        def healthy() -> dict[str, Any]:
            status, body = get_json(base + "/health")
            producers = [p for w in body["workers"] for p in w["producers"]]
            return body if status == 200 and [p["reachable"] for p in producers] == [True] else {}

        body = eventually(healthy, what="the live producer reachable")
        assert body["status"] == "ok" and body["problems"] == []
        assert [w["pid"] for w in body["workers"]] == [proc.pid]
        assert body["workers"][0]["producers"][0]["bootstrap"] == [broker.bootstrap]
        status, ready = get_json(base + "/ready")
        assert (status, ready["workers"]) == (200, {"expected": 1, "accepting": 1})

        # Delivery reports are folded into the metrics on a later loop turn than the answer.
        def delivery_counted() -> Samples:
            samples, _text = scrape(base)
            return samples if value(samples, "kafkaupstream_delivery_seconds_count") == 1 else {}

        samples = eventually(delivery_counted, what="the delivery observed")
        requests = "kafkaupstream_requests_total"
        assert value(samples, requests, route="single", status="200", error="") == 1
        assert value(samples, requests, route="single", status="400", error="empty_body") == 1
        assert (
            value(
                samples,
                "kafkaupstream_producer_reachable",
                producer="producer-1",
                pid=str(proc.pid),
            )
            == 1
        )
        directory = logged(proc, r"event=metrics_dir_created path=(\S+?)\"").group(1)
        assert os.path.isdir(directory)
        assert proc.stop() == 0
    assert not os.path.exists(directory)  # removed at exit


def test_batches_count_every_record_and_a_partial_one_as_207(broker: EmbeddedBroker) -> None:
    topic = f"metrics-batch-{os.getpid()}"
    broker.create_topics({topic: 1})
    batch = route(
        "batch", conf(broker.bootstrap, topic, {"message.max.bytes": 2000}, batch="ndjson")
    )
    ndjson = ("Content-Type", "application/x-ndjson")
    whole = b"".join(b'{"n": %d}\n' % i for i in range(5))
    # The middle record's value fits message.max.bytes, not with the 300-byte key: librdkafka
    # refuses that record alone.
    partial = b'{"n": 5}\n{"pad": "' + b"x" * 1750 + b'"}\n{"n": 7}\n'
    long_key = ("key", "k" * 300)
    full = {"linger.ms": 60_000, "queue.buffering.max.messages": 2}
    queued = route("queued", conf(broker.bootstrap, topic, full, batch="ndjson", delivery="async"))
    with metrics_runner(1) as proc:
        base = base_url(proc)
        sent = [
            ClientRequest("POST", "/kafkaupstream", headers=(ndjson,), body=whole),
            ClientRequest("POST", "/kafkaupstream", headers=(ndjson, long_key), body=partial),
        ]
        assert statuses(proc, batch, *sent) == [200, 207]
        assert statuses(proc, queued, sent[0]) == [207]  # 2 queued, 3 refused: queue full

        def folded() -> Samples:
            samples = scrape(base)[0]
            return samples if value(samples, "kafkaupstream_delivery_seconds_count") == 7 else {}

        samples = eventually(folded, what="seven delivery reports counted")
        requests = "kafkaupstream_requests_total"
        assert value(samples, requests, route="batch", status="200", error="") == 1
        assert value(samples, requests, route="batch", status="207", error="") == 1
        assert value(samples, requests, route="queued", status="207", error="") == 1

        def refusals() -> float:
            samples = scrape(base)[0]
            seen = value(samples, "kafkaupstream_backpressure_refusals_total", reason="queue_full")
            return seen or 0.0

        assert eventually(refusals, what="the refused batch tail counted") == 1
        assert value(samples, "kafkaupstream_records_produced_total", topic=topic) == 7
        failed = "kafkaupstream_records_failed_total"
        assert value(samples, failed, topic=topic, error="MSG_SIZE_TOO_LARGE") == 1


def test_metrics_are_off_by_default() -> None:
    with RunnerProcess(workers=2) as proc:
        pids = [proc.pid, *proc.worker_pids()]
        assert len(pids) == 3
        assert tcp_listeners(pids) == []
        time.sleep(1.2)  # a monitor would have reported by now
        logs = proc.logs()
    assert "metrics" not in logs and "broker_reachable" not in logs


def test_a_restarted_worker_keeps_its_counts_and_leaves_no_stale_gauges(
    broker: EmbeddedBroker,
) -> None:
    topic = f"metrics-restart-{os.getpid()}"
    broker.create_topics({topic: 1})
    live = route("restart", conf(broker.bootstrap, topic))
    with metrics_runner(2) as proc:
        base = base_url(proc)
        directory = logged(proc, r"event=metrics_dir_created path=(\S+?)\"").group(1)
        victim, survivor = proc.worker_pids()
        with only_running(proc, victim):
            assert statuses(proc, live, request(), request(), request()) == [200] * 3
        with only_running(proc, survivor):
            assert statuses(proc, live, request()) == [200]

        def both_reported() -> Samples:
            samples = scrape(base)[0]
            pids = {d["pid"] for d in series(samples, "kafkaupstream_producer_queue_depth")}
            return samples if pids == {str(victim), str(survivor)} else {}

        before = eventually(both_reported, what="both workers' producers reported")
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: len(proc.worker_pids()) == 2 and victim not in proc.worker_pids(),
            what="the dead worker replaced",
        )
        eventually(lambda: get_json(base + "/ready")[0] == 200, what="ready again")
        after, _text = scrape(base)
        for name, labels in [
            ("kafkaupstream_requests_total", {"route": "restart", "status": "200", "error": ""}),
            ("kafkaupstream_records_produced_total", {"topic": topic}),
            ("kafkaupstream_delivery_seconds_count", {}),
        ]:
            assert value(before, name, **labels) == value(after, name, **labels) == 4, name
        pids = {d["pid"] for d in series(after, "kafkaupstream_producer_queue_depth")}
        assert pids == {str(survivor)}  # the dead worker's gauges went with it
        assert value(after, "kafkaupstream_worker_restarts_total") == 1
        _status, health = get_json(base + "/health")
        assert victim not in [w["pid"] for w in health["workers"]]
        files = sorted(os.listdir(directory))
        assert "counter_archive.db" in files and f"counter_{victim}.db" not in files
        assert f"health_{victim}.json" not in files
        (replacement,) = [p for p in proc.worker_pids() if p != survivor]
        with only_running(proc, replacement):  # the new worker's counts add to the old ones
            assert statuses(proc, live, request()) == [200]
        # A worker counts an answer just after writing it: the client may scrape in between.
        eventually(
            lambda: (
                value(
                    scrape(base)[0],
                    "kafkaupstream_requests_total",
                    route="restart",
                    status="200",
                    error="",
                )
                == 5
            ),
            what="the replacement's answer counted on top of the dead worker's four",
        )
