"""Limits a hostile or careless client must not get past, against the real runner process.

Each test drives ``kafkaupstream run`` with the fake APISIX and a Tansu broker, asserts the
answers and the records read back, and prints its figures (``pytest -s``; also listed in the
terminal summary with the fault scenarios'). CPU figures are the runner's utime + stime.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from harness.broker import EmbeddedBroker
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer, PluginConf
from harness.runner_process import RunnerProcess

from .conftest import ReadRecords, Report
from .faultkit import conf, new_topic_name

T = TypeVar("T")
JSON = (("Content-Type", "application/json"),)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post(apisix: FakeApisix, plugin: PluginConf, body: bytes) -> HTTPAnswer:
    return await apisix.request(plugin, ClientRequest("POST", "/", headers=JSON, body=body))


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    # One worker: a body that held the event loop would hold every other request with it.
    with RunnerProcess(workers=1) as proc:
        yield proc


# --- jsonkey on huge numbers ---------------------------------------------------------------------

DIGITS = 999_000


def test_a_999000_digit_jsonkey_is_its_exact_digits_and_stalls_nothing(
    runner: RunnerProcess, broker: EmbeddedBroker, read_records: ReadRecords, figures: Report
) -> None:
    topic, other = new_topic_name(), new_topic_name()
    broker.create_topics({topic: 1, other: 1})
    # The record holds the digits twice (value and key): the producer must take ~2 MB.
    big_route = conf(broker.bootstrap, topic, jsonkey="id", config={"message.max.bytes": 3_000_000})
    small_route = conf(broker.bootstrap, other)
    digits = b"7" + b"3" * (DIGITS - 1)
    body = b'{"id": ' + digits + b"}"
    assert len(body) < 1_048_576  # under the default max_body_bytes

    async def scenario() -> tuple[HTTPAnswer, float, float, list[float]]:
        async with FakeApisix(runner.socket_path) as apisix:
            # Producers connect first (0.5-1 s once each), or that is what gets measured.
            assert (await post(apisix, big_route, b'{"id": 1}')).status == 200
            assert (await post(apisix, small_route, b"{}")).status == 200
            cpu = cpu_seconds(runner.pid)
            started = time.monotonic()
            big = asyncio.ensure_future(post(apisix, big_route, body))
            small: list[float] = []
            while not big.done() or len(small) < 3:
                t = time.monotonic()
                assert (await post(apisix, small_route, b"{}")).status == 200
                small.append(time.monotonic() - t)
            answer = await big
            return answer, time.monotonic() - started, cpu_seconds(runner.pid) - cpu, small

    answer, big_s, cpu_s, small = run(scenario())
    figures(
        digits=DIGITS,
        big_answer_s=round(big_s, 3),
        runner_cpu_s=round(cpu_s, 3),
        small_answers=len(small),
        small_max_s=round(max(small), 3),
    )
    assert answer.status == 200, answer.body
    where = json.loads(answer.body)
    [record] = [
        r
        for r in read_records(topic, partitions=[0], expected=where["offset"] + 1)
        if r.offset == where["offset"]
    ]
    assert record.key == digits
    assert record.value == b'{"id":' + digits + b"}"
    # Not a timing bound: the small route is answered while the big one is in flight or just
    # after, never queued behind seconds of integer conversion (int() of these digits alone
    # takes over half a second of CPU).
    assert max(small) < 0.5, small


def test_a_4m_digit_body_is_refused_413_before_it_is_parsed(
    runner: RunnerProcess, broker: EmbeddedBroker, read_records: ReadRecords, figures: Report
) -> None:
    topic = new_topic_name()
    broker.create_topics({topic: 1})
    # The body lacks the jsonkey: parsing it would end in 422, so a 413 shows nothing parsed it.
    body = b'{"n": ' + b"9" * 4_000_000 + b"}"
    # Over max_body_bytes (the default 1 MiB); and under a raised max_body_bytes, over the
    # producer's message.max.bytes (librdkafka's default 1,000,000), which is checked before
    # jsonkey parses anything, not at produce time.
    routes = {
        "max_body_bytes": conf(broker.bootstrap, topic, jsonkey="id"),
        "message_max_bytes": conf(broker.bootstrap, topic, jsonkey="id", max_body_bytes=8_000_000),
    }

    async def scenario() -> dict[str, tuple[HTTPAnswer, float]]:
        out = {}
        async with FakeApisix(runner.socket_path) as apisix:
            for name, plugin in routes.items():
                cpu = cpu_seconds(runner.pid)
                answer = await post(apisix, plugin, body)
                out[name] = (answer, cpu_seconds(runner.pid) - cpu)
        return out

    results = run(scenario())
    figures(**{f"{name}_runner_cpu_s": round(cpu, 3) for name, (_, cpu) in results.items()})
    for name, (answer, _) in results.items():
        assert answer.status == 413, (name, answer.body)
        assert json.loads(answer.body)["error"] == "body_too_large"
    assert "message.max.bytes" in json.loads(results["message_max_bytes"][0].body)["message"]
    assert read_records(topic, partitions=[0], timeout=1.0) == []
