"""The ``kafkaupstream-harness`` command line: help, version, ``broker`` and ``consume``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from harness.broker import EmbeddedBroker, free_port
from harness.consume import ConsumedRecord, format_record
from harness.routes import load_config
from kafkaupstream import __version__
from tests.integration.cli_process import HARNESS, CommandProcess, alive

#: Each command and options its --help must name.
HELP = {
    "": ["demo", "broker", "consume", "gateway", "load", "bench", "--version"],
    "demo": ["--host", "--http-port", "--broker-port", "--routes", "--log-dir", "--print-routes"],
    "broker": ["--port", "--topic", "NAME[:PARTITIONS]", "--log"],
    "consume": ["TOPIC", "--bootstrap", "--partition", "--follow", "--max", "--timeout"],
    "gateway": ["--routes", "--runner", "--listen"],
    "load": ["--socket", "--url"],
    "bench": ["--quick", "--duration"],
}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "top")
def test_help_exits_0_and_names_the_options(command: str) -> None:
    result = run(*([command] if command else []), "--help")

    assert result.returncode == 0, result.stderr
    missing = [word for word in HELP[command] if word not in result.stdout]
    assert missing == [], result.stdout


def test_version_names_the_program_and_release() -> None:
    result = run("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"kafkaupstream-harness {__version__}"


def test_console_script_runs_the_cli() -> None:
    script = Path(sys.executable).with_name("kafkaupstream-harness")
    assert script.exists(), "`make install` (pip install -e '.[dev]') installs the console script"

    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)

    assert result.stdout.strip() == f"kafkaupstream-harness {__version__}"


def test_no_command_is_a_usage_error() -> None:
    result = run()

    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_print_routes_is_an_apisix_yaml_for_the_given_broker(tmp_path: Path) -> None:
    result = run("demo", "--print-routes", "--broker-port", "19093")
    path = tmp_path / "apisix.yaml"
    path.write_text(result.stdout)

    config = load_config(path)

    assert [r.uris for r in config.routes] == [
        ("/kafkaupstream",),
        ("/kafkaupstream-jsonkey",),
        ("/kafkaupstream-schema",),
        ("/kafkaupstream-batch",),
    ]
    for route in config.routes:
        assert route.pre_req is not None and route.pre_req.conf is not None
        ((name, value),) = route.pre_req.conf
        assert name == "kafkaupstream"
        assert '"bootstrap.servers":"127.0.0.1:19093"' in value


def test_broker_topic_needs_a_positive_partition_count() -> None:
    result = run("broker", "--topic", "orders:0")

    assert result.returncode == 2
    assert "PARTITIONS" in result.stderr


def test_broker_refuses_a_taken_port_naming_the_option() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run("broker", "--port", str(taken))

    assert result.returncode == 1
    assert f"port {taken}" in result.stderr and "--port" in result.stderr


@pytest.fixture
def cli_broker() -> Iterator[tuple[CommandProcess, str, int]]:
    """``kafkaupstream-harness broker`` on a free port with topics rt (2 partitions) and one."""
    process = CommandProcess("broker", "--port", "0", "--topic", "rt:2", "--topic", "one")
    try:
        ready = process.wait_for(r"^Broker ready: bootstrap.servers=(\S+) .*pid=(\d+)", timeout=60)
        yield process, ready.group(1), int(ready.group(2))
    finally:
        process.close()


Header = tuple[str, str | bytes | None]


def produce(bootstrap: str, *records: tuple[int, bytes | None, bytes, list[Header]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, key, value, headers in records:
        producer.produce("rt", value, key, partition=partition, headers=headers)
    assert producer.flush(10) == 0


def test_broker_then_consume_round_trip(cli_broker: tuple[CommandProcess, str, int]) -> None:
    broker, bootstrap, tansu_pid = cli_broker
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert {name: len(topics[name].partitions) for name in ("rt", "one")} == {"rt": 2, "one": 1}
    produce(
        bootstrap,
        (0, b"k1", b'{"a": 1}', [("h", b"v")]),
        (1, None, b"\x00\xff", []),
        (1, b"with space", b"line\nbreak", [("h", b"two words")]),
    )

    result = run("consume", "rt", "--bootstrap", bootstrap, "--max", "3", "--timeout", "20")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'topic=rt partition=0 offset=0 key=k1 headers={h=v} value={"a": 1}',
        "topic=rt partition=1 offset=0 key=(null) headers={} value=b'\\x00\\xff'",
        "topic=rt partition=1 offset=1 key='with space' headers={h='two words'} "
        "value='line\\nbreak'",
    ]

    follower = CommandProcess("consume", "rt", "-b", bootstrap, "--follow", "--partition", "1")
    try:
        follower.wait_for(r"^topic=rt partition=1 offset=1 ", timeout=30)
        produce(bootstrap, (1, b"late", b"arrived", []))
        follower.wait_for(r"^topic=rt partition=1 offset=2 key=late headers=\{\} value=arrived$")
        assert not any("partition=0" in line for line in follower.stdout)
        assert follower.stop(signal.SIGINT) == 0, follower.output()
    finally:
        follower.close()

    assert broker.stop(signal.SIGINT) == 0, broker.output()
    assert not alive(tansu_pid)


def test_consume_names_a_missing_topic(broker: EmbeddedBroker) -> None:
    result = run("consume", "no-such-topic", "-b", broker.bootstrap)

    assert result.returncode == 1
    assert "'no-such-topic' does not exist" in result.stderr


def test_consume_without_a_broker_says_where_it_looked() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    result = run("consume", "t", "-b", bootstrap, "--timeout", "1")

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"kafkaupstream-harness consume: cannot read from {bootstrap}: "
    )
    assert "rdkafka" not in result.stderr


@pytest.mark.parametrize(
    ("key", "value", "headers", "line"),
    [
        (b"k", b'{"a": 1}', (), 'key=k headers={} value={"a": 1}'),
        (None, None, (("h", None),), "key=(null) headers={h=(null)} value=(null)"),
        (b"", b"", (), "key='' headers={} value=''"),
        (
            b"a=b",
            b"tab\there",
            (("x", b"\xff"),),
            "key='a=b' headers={x=b'\\xff'} value='tab\\there'",
        ),
        ("ключ".encode(), "значение".encode(), (), "key=ключ headers={} value=значение"),
    ],
)
def test_record_line_is_text_when_printable_and_repr_otherwise(
    key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes | None], ...], line: str
) -> None:
    record = ConsumedRecord("t", 2, 7, key, value, headers, None)

    assert format_record(record) == f"topic=t partition=2 offset=7 {line}"
