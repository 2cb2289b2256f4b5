"""``kafkaupstream-harness demo`` (what ``make demo`` runs) as a user runs it, end to end.

The demo is a subprocess on free ports; requests go to its gateway over HTTP, records are read
back from its broker, and its stdout is watched for the ready line and the live record lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.broker import free_port
from harness.consume import ConsumedRecord, format_record, read_records
from tests.integration.cli_process import CommandProcess, alive, processes_mentioning

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process checks read Linux's /proc"
)

README_BODY = '{ "hello" : "world" }'
JSON = {"content-type": "application/json"}
READY = r"^Ready: (http://\S+) -- "


@dataclass
class Demo:
    """A running demo and what its banner says about it."""

    process: CommandProcess
    base_url: str
    bootstrap: str
    broker_pid: int
    runner_pid: int
    socket_path: Path

    def post(self, path: str, data: str | bytes, **headers: str) -> requests.Response:
        return requests.post(self.base_url + path, data=data, headers=headers, timeout=15)

    def record_at(self, answer: dict[str, object]) -> ConsumedRecord:
        """The record at the (topic, partition, offset) a 200 answer named."""
        topic, partition, offset = answer["topic"], answer["partition"], answer["offset"]
        assert isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int)
        records = read_records(
            self.bootstrap, topic, partitions=[partition], expected=offset + 1, timeout=10
        )
        found = [r for r in records if r.offset == offset]
        assert found, f"no record at {topic}[{partition}]@{offset}; read {records}"
        return found[0]

    def wait_for_live_line(self, record: ConsumedRecord) -> None:
        self.process.wait_for("^kafka  " + re.escape(format_record(record)) + "$", timeout=10)


def start_demo(*extra: str) -> Demo:
    http_port, broker_port = free_port(), free_port()
    process = CommandProcess(
        "demo", "--http-port", str(http_port), "--broker-port", str(broker_port), *extra
    )
    try:
        base_url = process.wait_for(READY, timeout=60).group(1).rsplit("/", 1)[0]
        # The banner is printed before the ready line, so these are already there.
        broker = process.wait_for(r"^  broker +Tansu at bootstrap.servers=(\S+),.*\[pid (\d+)\]$")
        runner = process.wait_for(r"^  runner .*APISIX_LISTEN_ADDRESS=unix:(\S+) +\[pid (\d+)\]$")
    except BaseException:
        process.close()
        raise
    assert base_url == f"http://127.0.0.1:{http_port}"
    assert broker.group(1) == f"127.0.0.1:{broker_port}"
    return Demo(
        process,
        base_url,
        broker.group(1),
        int(broker.group(2)),
        int(runner.group(2)),
        Path(runner.group(1)),
    )


def assert_all_gone(demo: Demo) -> None:
    """No child outlived the demo, and its socket and temporary directory are gone."""
    assert not alive(demo.broker_pid), "the broker outlived the demo"
    assert not alive(demo.runner_pid), "the runner outlived the demo"
    assert processes_mentioning(str(demo.socket_path.parent)) == []
    assert processes_mentioning(demo.bootstrap) == []
    assert not demo.socket_path.exists()
    assert not demo.socket_path.parent.exists()


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = start_demo()
    yield running
    code = running.process.stop(signal.SIGINT)
    assert code == 0, running.process.output()
    assert_all_gone(running)


def test_readme_curl_body_is_produced_compacted_and_shown_live(demo: Demo) -> None:
    response = demo.post("/kafkaupstream", README_BODY, **JSON)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["topic"] == "kafkaupstream"
    assert set(answer) == {"topic", "partition", "offset"}
    record = demo.record_at(answer)
    assert record.value == b'{"hello":"world"}'
    assert record.key is None
    assert record.headers == ()
    demo.wait_for_live_line(record)
    demo.process.wait_for(r"^http   POST /kafkaupstream -> 200 \{")


def test_key_header_and_forwarded_request_id_reach_the_record(demo: Demo) -> None:
    response = demo.post(
        "/kafkaupstream", '{"user": {"id": 42}}', key="user-42", **{"x-request-id": "r-1"}, **JSON
    )

    assert response.status_code == 200, response.text
    record = demo.record_at(response.json())
    assert record.key == b"user-42"
    assert record.value == b'{"user":{"id":42}}'
    assert dict(record.headers) == {"x-request-id": b"r-1"}
    demo.wait_for_live_line(record)


def test_topic_header_picks_the_allowed_second_topic(demo: Demo) -> None:
    # What curl --data sends: a form content type, so the bytes are produced unchanged.
    response = demo.post(
        "/kafkaupstream",
        "plain text,  kept",
        topic="kafkaupstream2",
        **{"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["topic"] == "kafkaupstream2"
    record = demo.record_at(response.json())
    assert record.value == b"plain text,  kept"
    demo.wait_for_live_line(record)


def test_jsonkey_route_takes_the_key_from_the_body(demo: Demo) -> None:
    response = demo.post("/kafkaupstream-jsonkey", '{"user": {"id": "42"}}', **JSON)

    assert response.status_code == 200, response.text
    assert demo.record_at(response.json()).key == b"42"


def test_schema_route_produces_a_valid_body_and_refuses_a_violation(demo: Demo) -> None:
    valid = demo.post("/kafkaupstream-schema", '{"user": {"id": 42}, "action": "login"}', **JSON)
    assert valid.status_code == 200, valid.text
    assert demo.record_at(valid.json()).value == b'{"user":{"id":42},"action":"login"}'
    since = len(demo.process.stdout)
    refused = demo.post(
        "/kafkaupstream-schema", '{"user": {"id": "42"}, "action": "login"}', **JSON
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["violations"] == [{"pointer": "/user/id", "keyword": "type"}]
    demo.process.wait_for(
        r"^http   POST /kafkaupstream-schema -> 422 .*schema_violation", since=since
    )


def test_batch_route_produces_one_record_per_ndjson_line_keyed_by_each(demo: Demo) -> None:
    lines = ['{ "user": {"id": "7"}, "n": 1 }', '{"user": {"id": "8"}, "n": 2}']
    response = demo.post(
        "/kafkaupstream-batch",
        "\n".join(lines) + "\n",
        **{"content-type": "application/x-ndjson"},
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["delivered"], answer["failed"]) == (2, 0)
    records = [demo.record_at({"topic": answer["topic"], **entry}) for entry in answer["records"]]
    assert [(r.key, r.value) for r in records] == [
        (b"7", b'{"user":{"id":"7"},"n":1}'),
        (b"8", b'{"user":{"id":"8"},"n":2}'),
    ]
    demo.wait_for_live_line(records[1])


def test_invalid_json_is_refused_and_shown(demo: Demo) -> None:
    since = len(demo.process.stdout)
    response = demo.post("/kafkaupstream", '{"hello": ', **JSON)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "invalid_json"
    demo.process.wait_for(r"^http   POST /kafkaupstream -> 400 .*invalid_json", since=since)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_printed_curl_command_gets_the_answer_it_promises(demo: Demo) -> None:
    printed = demo.process.stdout
    commands = [line.strip() for line in printed if re.match(r"  (curl|printf) ", line)]
    promised = [200, 200, 200, 400, 403, 200, 200, 422, 200]
    assert len(commands) == len(promised), commands
    assert commands[0] == (
        "curl -X POST -H 'content-type: application/json' --data '{ \"hello\" : \"world\" }' "
        f"{demo.base_url}/kafkaupstream"
    )
    got = []
    for command in commands:
        # As pasted into a POSIX shell (the batch example pipes printf into curl).
        script = f"{command} -s -o /dev/null -w '%{{http_code}}'"
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=15)
        got.append(int(done.stdout))
    assert got == promised, list(zip(commands, got, strict=True))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_everything_and_exits_0(sig: signal.Signals) -> None:
    demo = start_demo()
    assert alive(demo.broker_pid) and alive(demo.runner_pid)
    assert demo.socket_path.exists()

    code = demo.process.stop(sig, timeout=10)

    assert code == 0, demo.process.output()
    assert demo.process.stdout[-1] == "Stopped."
    assert demo.process.stderr == [], demo.process.output()
    assert_all_gone(demo)


def test_a_runner_that_dies_stops_the_demo_with_an_error() -> None:
    demo = start_demo()

    os.kill(demo.runner_pid, signal.SIGKILL)

    assert demo.process.wait(15) == 1
    assert "the runner exited unexpectedly with code -9" in "\n".join(demo.process.stderr)
    assert_all_gone(demo)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="parent-death signals need setpriv")
def test_a_killed_demo_leaves_no_process_behind() -> None:
    demo = start_demo()

    demo.process.proc.kill()  # no cleanup code runs: the parent-death signals must do it

    demo.process.wait(10)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (alive(demo.broker_pid) or alive(demo.runner_pid)):
            time.sleep(0.05)
        assert not alive(demo.broker_pid) and not alive(demo.runner_pid)
        assert processes_mentioning(str(demo.socket_path.parent)) == []
    finally:
        # Only processes that still are ours: a pid freed by the expected death may be reused.
        ours = {demo.broker_pid: b"broker", demo.runner_pid: b"kafkaupstream"}
        for pid, marker in ours.items():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(demo.socket_path.parent, ignore_errors=True)


@pytest.mark.parametrize("option", ["--http-port", "--broker-port"])
def test_a_taken_port_is_named_with_the_option_that_changes_it(option: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        other = "--broker-port" if option == "--http-port" else "--http-port"
        process = CommandProcess("demo", option, str(taken), other, str(free_port()))
        code = process.wait(30)

    assert code == 1
    message = "\n".join(process.stderr)
    assert f"port {taken}" in message and option in message, process.output()
    assert not any(line.startswith("Ready") for line in process.stdout)


def test_routes_option_serves_the_users_routes(tmp_path: Path) -> None:
    broker_port = free_port()
    value = json.dumps(
        {"config": {"bootstrap.servers": f"127.0.0.1:{broker_port}"}, "topic": "kafkaupstream2"}
    )
    routes = tmp_path / "apisix.yaml"
    routes.write_text(
        "routes:\n  - id: mine\n    uri: /mine\n    plugins:\n      ext-plugin-pre-req:\n"
        f"        conf:\n          - name: kafkaupstream\n            value: '{value}'\n#END\n"
    )
    http_port = free_port()
    process = CommandProcess(
        "demo", "--http-port", str(http_port), "--broker-port", str(broker_port),
        "--routes", str(routes),
    )  # fmt: skip
    try:
        process.wait_for(rf"^Ready: http://127.0.0.1:{http_port}/mine ", timeout=60)
        assert not any("/kafkaupstream-jsonkey" in line for line in process.stdout)
        mine = requests.post(f"http://127.0.0.1:{http_port}/mine", data=b"x", timeout=15)
        generated = requests.post(f"http://127.0.0.1:{http_port}/kafkaupstream", timeout=15)
        if mine.status_code == 200:
            process.wait_for(r"^kafka  topic=kafkaupstream2 partition=0 offset=\d+ .* value=x$")
    finally:
        code = process.stop()

    assert code == 0, process.output()
    assert generated.status_code == 404
    assert mine.status_code == 200, mine.text
    assert mine.json()["topic"] == "kafkaupstream2"
