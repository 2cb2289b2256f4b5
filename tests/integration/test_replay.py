"""Record and replay against the real runner, gateway and broker; the sample as a regression suite.

``tests/data/replay/sample.jsonl`` was recorded once (``python -m harness.replay.sample``) and
covers every precedence rule and every answer of README's "HTTP answers" a live broker gives.
Replaying it against today's runner must show no difference, and every 200's record must be in
the broker with the recorded key and headers. A runner (or route) that behaves differently must
make the replay fail and say where.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harness.broker import EmbeddedBroker, free_port
from harness.gateway import GatewayThread
from harness.replay import cli as replay_cli
from harness.replay.loader import load_recording
from harness.replay.sample import DATA_DIR, TOPICS, dead_address
from harness.replay.template import render_file
from harness.runner_process import RunnerProcess
from tests.integration.cli_process import HARNESS, CommandProcess

SAMPLE = DATA_DIR / "sample.jsonl"
ROUTES = DATA_DIR / "routes.yaml"
HAR = DATA_DIR / "capture.har"
#: The sample's answers whose records --verify-broker reads back: 200s and batch 207s.
SAMPLE_VERIFIED = sum(e.answer.status in (200, 207) for e in load_recording(SAMPLE).exchanges)


@pytest.fixture
def runner() -> Iterator[RunnerProcess]:
    """A runner of its own per test: no producer state carries over from another replay."""
    with RunnerProcess(args=["--workers", "1"]) as proc:
        yield proc


@pytest.fixture
def broker(broker: EmbeddedBroker) -> EmbeddedBroker:
    broker.create_topics(TOPICS)
    return broker


@pytest.fixture
def values(broker: EmbeddedBroker) -> dict[str, str]:
    return {"BOOTSTRAP": broker.bootstrap, "DEAD_BOOTSTRAP": dead_address()}


@pytest.fixture
def routes(tmp_path: Path, values: dict[str, str]) -> Path:
    return render_file(ROUTES, values, tmp_path)


@pytest.fixture
def gateway(routes: Path, runner: RunnerProcess) -> Iterator[GatewayThread]:
    with GatewayThread(routes, runner.socket_path) as gw:
        yield gw


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """``replay ARGS --json`` in process: the exit code and the summary."""
    code = replay_cli.main([*args, "--json", "--no-progress"])
    return code, json.loads(capsys.readouterr().out)


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# --- the sample as a regression suite -----------------------------------------------------------


def test_the_sample_replays_over_http_without_a_difference_and_every_record_is_in_the_broker(
    capsys: pytest.CaptureFixture[str], gateway: GatewayThread, broker: EmbeddedBroker
) -> None:
    code, summary = replay(
        capsys, str(SAMPLE), "--target", gateway.url, "--verify-broker", broker.bootstrap
    )
    assert summary["shown"] == []
    assert code == 0
    assert summary["requests"] == summary["matched"] == len(load_recording(SAMPLE).exchanges)
    assert summary["ignored"] == ["offset", "records[*].offset"]
    assert summary["broker"]["checked"] == SAMPLE_VERIFIED > 15
    assert summary["broker"]["mismatched"] == 0


def test_the_sample_replays_straight_to_the_runner_over_the_rpc(
    capsys: pytest.CaptureFixture[str],
    runner: RunnerProcess,
    broker: EmbeddedBroker,
    values: dict[str, str],
) -> None:
    code, summary = replay(
        capsys,
        str(SAMPLE),
        "--runner",
        f"unix:{runner.socket_path}",
        "--routes",
        str(ROUTES),
        *(f"--var={name}={value}" for name, value in values.items()),
        "--verify-broker",
        broker.bootstrap,
        "--concurrency",
        "4",
    )
    assert (code, summary["shown"]) == (0, [])
    assert summary["target"] == f"rpc unix:{runner.socket_path}"
    assert summary["broker"]["checked"] == SAMPLE_VERIFIED


def test_a_route_with_a_narrower_allowed_topics_fails_the_replay_and_shows_where(
    tmp_path: Path, runner: RunnerProcess, values: dict[str, str]
) -> None:
    data = yaml.safe_load(ROUTES.read_text())
    conf = data["routes"][0]["plugins"]["ext-plugin-pre-req"]["conf"][0]
    value = json.loads(conf["value"])
    assert value["allowed_topics"] == ["replay-other"]
    conf["value"] = json.dumps({**value, "allowed_topics": []})
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data) + "#END\n")
    result = subprocess.run(
        [
            *HARNESS,
            "replay",
            str(SAMPLE),
            "--runner",
            f"unix:{runner.socket_path}",
            "--routes",
            str(changed),
            *(f"--var={name}={value}" for name, value in values.items()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "  differing  1 (" in out
    assert (
        "  #12 POST /replay  (the topic header on allowed_topics beats the configured topic)\n"
        "      status: expected 200, got 403\n"
    ) in out
    assert 'body.error: expected (absent), got "topic_not_allowed"' in out


def test_a_usage_error_exits_2(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*HARNESS, "replay", str(SAMPLE), "--runner", "unix:/nowhere", "--routes", str(ROUTES)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2
    assert "needs a value for BOOTSTRAP, DEAD_BOOTSTRAP" in missing.stderr
    (tmp_path / "x.jsonl").write_text("hello\n")
    assert replay_cli.main([str(tmp_path / "x.jsonl"), "--target", "http://127.0.0.1:1"]) == 2


# --- recording ----------------------------------------------------------------------------------

CLIENT_REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("/replay", {"Content-Type": "application/json", "key": "rt-1"}, b'{ "user" : {"id": 1} }'),
    ("/replay", {"Content-Type": "application/json", "Authorization": "Bearer t0p"}, b"{"),
    ("/replay/plain", {"Content-Type": "application/octet-stream"}, b"\x00\xfe\xff"),
    ("/replay/partition", {"partition": "7"}, b"p"),
    ("/replay/async", {}, b"async"),
]


def post_all(base_url: str) -> list[requests.Response]:
    return [
        requests.post(base_url + path, headers=headers, data=body, timeout=15)
        for path, headers, body in CLIENT_REQUESTS
    ]


def test_gateway_record_then_replay_round_trip(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    routes: Path,
    runner: RunnerProcess,
    gateway: GatewayThread,
    broker: EmbeddedBroker,
) -> None:
    recording, port = tmp_path / "gateway.jsonl", free_port()
    recorder = CommandProcess(
        "gateway",
        "--routes",
        str(routes),
        "--runner",
        f"unix:{runner.socket_path}",
        "--listen",
        f"127.0.0.1:{port}",
        "--record",
        str(recording),
    )
    try:
        wait_listening(port)
        answers = post_all(f"http://127.0.0.1:{port}")
    finally:
        assert recorder.stop(signal.SIGTERM) == 0, recorder.output()
    assert [a.status_code for a in answers] == [200, 400, 200, 404, 202]
    exchanges = load_recording(recording).exchanges
    assert [e.answer.status for e in exchanges] == [200, 400, 200, 404, 202]
    assert exchanges[2].request.body == b"\x00\xfe\xff"
    assert ("Authorization", None) in exchanges[1].request.headers
    assert "t0p" not in recording.read_text()

    code, summary = replay(
        capsys, str(recording), "--target", gateway.url, "--verify-broker", broker.bootstrap
    )
    assert (code, summary["shown"]) == (0, [])
    assert summary["broker"]["checked"] == 2


def test_the_record_proxy_passes_answers_through_and_records_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gateway: GatewayThread
) -> None:
    recording, port = tmp_path / "proxy.jsonl", free_port()
    proxy = CommandProcess(
        "record",
        "--listen",
        f"127.0.0.1:{port}",
        "--target",
        gateway.url,
        "--out",
        str(recording),
    )
    try:
        proxy.wait_for(r"^Recording: http://127\.0\.0\.1:\d+ -> ", timeout=15)
        through = post_all(f"http://127.0.0.1:{port}")
    finally:
        assert proxy.stop(signal.SIGINT) == 0, proxy.output()
    proxy.wait_for(rf"^Recorded {len(CLIENT_REQUESTS)} exchange\(s\) to ")
    assert [a.status_code for a in through] == [200, 400, 200, 404, 202]
    assert through[0].json()["topic"] == "replay-main"
    recorded = load_recording(recording).exchanges
    assert [e.request.path for e in recorded] == [path for path, _, _ in CLIENT_REQUESTS]
    assert recorded[3].answer.body == through[3].content

    code, summary = replay(capsys, str(recording), "--target", gateway.url)
    assert (code, summary["shown"]) == (0, [])


def test_a_browser_har_export_replays_against_the_gateway(
    capsys: pytest.CaptureFixture[str], gateway: GatewayThread, broker: EmbeddedBroker
) -> None:
    code, summary = replay(
        capsys, str(HAR), "--target", gateway.url, "--verify-broker", broker.bootstrap
    )
    assert (code, summary["shown"]) == (0, [])
    assert (summary["kind"], summary["requests"], summary["skipped"]) == ("har 1.2", 6, 1)
    assert summary["broker"]["checked"] == 3


def test_the_demo_records_what_it_answers(tmp_path: Path) -> None:
    from tests.integration.test_demo import start_demo

    recording = tmp_path / "demo.jsonl"
    demo = start_demo("--record", str(recording))
    try:
        answer = demo.post(
            "/kafkaupstream", '{ "hello" : "world" }', **{"content-type": "application/json"}
        )
        demo.process.wait_for(r"^http   POST /kafkaupstream -> 200 ")
    finally:
        assert demo.process.stop(signal.SIGINT) == 0, demo.process.output()
    assert answer.status_code == 200
    (exchange,) = load_recording(recording).exchanges
    assert exchange.request.body == b'{ "hello" : "world" }'
    assert json.loads(exchange.answer.body or b"") == answer.json()
