"""The test harness itself: the embedded Tansu broker and the record reader."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

import harness.broker
from harness.broker import BrokerError, EmbeddedBroker, free_port
from harness.consume import ConsumeError, follow, read_records

from .conftest import DEFAULT_TOPICS, BrokerFactory

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 in a container may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def produce(bootstrap: str, topic: str, values: list[bytes]) -> Producer:
    """Produce and flush; the producer is returned so a test can keep its connection open."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(10) == 0
    return producer


def metadata_answers(bootstrap: str, timeout: float) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def test_session_broker_has_the_default_topics_with_their_partition_counts(
    broker: EmbeddedBroker,
) -> None:
    counts = broker.partition_counts()
    assert {name: counts.get(name) for name in DEFAULT_TOPICS} == dict(DEFAULT_TOPICS)
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.log_path is not None and broker.log_path.exists()


def test_create_topics_accepts_same_count_and_refuses_a_different_one(
    broker: EmbeddedBroker,
) -> None:
    broker.create_topics({"harness-extra": 2})
    broker.create_topics({"harness-extra": 2})
    assert broker.partition_counts()["harness-extra"] == 2
    with pytest.raises(BrokerError, match="harness-extra"):
        broker.create_topics({"harness-extra": 5}, timeout=1.0)


def test_stop_leaves_no_process_behind(broker_factory: BrokerFactory) -> None:
    broker = broker_factory({"t": 1})
    pid = broker.pid
    assert pid is not None and alive(pid)
    # An open client connection must not delay stop (Tansu drains for 5 s on SIGTERM).
    client = produce(broker.bootstrap, "t", [b"x"])
    started = time.monotonic()
    broker.stop()
    assert time.monotonic() - started < 2.0
    del client
    assert not alive(pid)
    assert not broker.running
    broker.stop()  # idempotent


def test_context_manager_stops_the_broker_when_the_body_raises() -> None:
    pids: list[int | None] = []
    with pytest.raises(RuntimeError, match="boom"), EmbeddedBroker({"t": 1}) as broker:
        pids.append(broker.pid)
        raise RuntimeError("boom")
    assert pids[0] is not None and not alive(pids[0])


@pytest.mark.parametrize("death", ["exit_without_stop", "sigkill"])
def test_broker_dies_with_the_process_that_started_it(death: str) -> None:
    """Interpreter exit runs the finalizer; SIGKILL of the parent is covered by PDEATHSIG."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from harness.broker import EmbeddedBroker
        broker = EmbeddedBroker({{"t": 1}}).start()
        print(broker.pid, flush=True)
        if {death!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(0)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    pid = int(child.stdout.split()[0])
    assert wait_dead(pid), f"broker {pid} outlived its parent ({death})"


def test_pause_freezes_the_broker_and_resume_brings_it_back(
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory({"t": 1})
    broker.pause()
    try:
        assert broker.paused and broker.running
        assert not metadata_answers(broker.bootstrap, timeout=0.5)
    finally:
        broker.resume()
    assert metadata_answers(broker.bootstrap, timeout=5.0)
    broker.stop()


def test_stop_works_on_a_paused_broker(broker_factory: BrokerFactory) -> None:
    broker = broker_factory({"t": 1})
    pid = broker.pid
    assert pid is not None
    broker.pause()
    broker.stop(timeout=2.0)
    assert not alive(pid)


def test_restart_keeps_the_port_and_recreates_topics_empty(broker_factory: BrokerFactory) -> None:
    broker = broker_factory({"t": 2})
    port, old_pid = broker.port, broker.pid
    produce(broker.bootstrap, "t", [b"before"])
    broker.create_topics({"later": 3})
    broker.restart()
    assert broker.port == port and broker.pid != old_pid
    counts = broker.partition_counts()
    assert counts["t"] == 2 and counts["later"] == 3
    # Tansu's storage is memory: what was produced before the restart is gone.
    assert read_records(broker.bootstrap, "t", timeout=1.0) == []
    produce(broker.bootstrap, "t", [b"after"])
    assert [r.value for r in read_records(broker.bootstrap, "t", expected=1)] == [b"after"]
    broker.stop()


def test_fixed_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match=str(port)):
            EmbeddedBroker(port=port, start_timeout=5.0).start()


def test_free_port_race_is_retried_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(harness.broker, "free_port", lambda: next(ports, None) or free_port())
        with EmbeddedBroker({"t": 1}) as broker:
            assert broker.port != taken
            assert broker.partition_counts()["t"] == 1


def test_read_records_returns_keys_values_headers_sorted_by_partition_and_offset(
    broker: EmbeddedBroker, new_topic
) -> None:
    topic = new_topic(2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, b"b", b"k", partition=1, headers=[("h", b"1"), ("h", None)])
    producer.produce(topic, None, None, partition=0)
    producer.produce(topic, b"a", b"", partition=0)
    assert producer.flush(10) == 0
    records = read_records(broker.bootstrap, topic, expected=3)
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (0, 0, None, None),
        (0, 1, b"", b"a"),
        (1, 0, b"k", b"b"),
    ]
    assert records[2].headers == (("h", b"1"), ("h", None))
    assert records[0].headers == ()
    assert all(r.timestamp is not None and r.timestamp > 0 for r in records)


def test_read_records_of_a_missing_topic_is_an_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(ConsumeError, match="no-such-topic"):
        read_records(broker.bootstrap, "no-such-topic", timeout=2.0)


def test_follow_yields_new_records_and_stops_when_asked(broker: EmbeddedBroker, new_topic) -> None:
    topic = new_topic(1)
    produce(broker.bootstrap, topic, [b"old"])
    stop = threading.Event()
    seen: list[bytes | None] = []

    def consume() -> None:
        for record in follow(broker.bootstrap, topic, stop=stop, poll_interval=0.05):
            seen.append(record.value)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            produce(broker.bootstrap, topic, [b"new"])
            time.sleep(0.2)
    finally:
        stop.set()
        reader.join(5)
    assert not reader.is_alive()
    assert seen and set(seen) == {b"new"}


def test_follow_from_beginning_can_be_closed_like_any_generator(
    broker: EmbeddedBroker, new_topic
) -> None:
    topic = new_topic(1)
    produce(broker.bootstrap, topic, [b"1", b"2", b"3"])
    records = follow(broker.bootstrap, topic, from_beginning=True)
    assert [next(records).value for _ in range(3)] == [b"1", b"2", b"3"]
    records.close()
