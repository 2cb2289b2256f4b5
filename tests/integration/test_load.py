"""The load generator and the bench's floor, against real processes. No throughput is asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench.scenarios import Settings, floor_row
from harness.load import LoadOptions, RouteConf, Summary, make_template, run_load, summarize
from harness.load.http import HTTPClient
from harness.load.rpc import ConfTokens, RPCClient, error_code, extra_info_kind, stop_status
from harness.load.verify import verify_broker
from harness.runner_process import RunnerProcess
from kafkaupstream.protocol import (
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    HTTPReqCallResponse,
    ReqBody,
    Rewrite,
    Stop,
    TextEntry,
    Var,
    encode_message,
)

ROOT = Path(__file__).resolve().parents[2]
OK = json.dumps({"status": 200, "body": "ok"})
ECHO = json.dumps({"echo_body": True})


@pytest.fixture(scope="module")
def runner():
    with RunnerProcess(args=["--test-plugins"]) as proc:
        yield proc


def load(socket: str, conf: str = OK, **fields: object) -> Summary:
    options = LoadOptions(
        bodies=make_template("test", "json", 256),
        socket=socket,
        route=RouteConf("stop", conf),
        connections=4,
        **fields,  # type: ignore[arg-type]
    )
    return summarize(asyncio.run(run_load(options)), loop="asyncio")


def assert_ordered(summary: Summary) -> None:
    p = summary.latency_ms
    assert 0 < p.p50 <= p.p90 <= p.p99 <= p.p999 <= p.max


def test_closed_loop_counts_every_request_once(runner):
    summary = load(runner.socket_path, ECHO, warmup=0.2, duration=1.0)
    assert summary.sent > 0
    assert summary.answered == summary.sent == summary.latency_ms.count
    assert summary.statuses == {"200": summary.sent}
    assert summary.failures == {}
    assert summary.warmup_requests > 0
    assert summary.prepares == 1
    assert_ordered(summary)


def test_fixed_rate_sends_what_was_scheduled(runner):
    summary = load(runner.socket_path, rate=300.0, warmup=0.2, duration=1.0)
    # Requests due in the 1 s window at 300/s, whatever the answers' speed.
    assert 299 <= summary.sent <= 301
    assert summary.statuses == {"200": summary.sent}
    assert summary.service_ms is not None and summary.service_ms.count == summary.sent
    assert_ordered(summary)


def test_cli_json_summary_parses(runner):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.load",
            "--socket",
            runner.socket_path,
            "--plugin",
            "stop",
            "--conf",
            OK,
            "--requests",
            "200",
            "--warmup",
            "0",
            "-c",
            "2",
            "--body-shape",
            "pretty-json",
            "--json",
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    summary = json.loads(done.stdout)
    assert summary["sent"] == summary["answered"] == 200
    assert summary["statuses"] == {"200": 200}
    assert summary["body_shape"] == "pretty-json"


def test_unknown_token_is_prepared_again_and_retried(runner):
    async def scenario() -> tuple[int, int]:
        tokens = ConfTokens(runner.socket_path, RouteConf("stop", ECHO, "route#9#x#1"))
        tokens.token = 987_654  # as if the runner had restarted since
        client = RPCClient(tokens, make_template("test", "json", 64), call_id=1)
        try:
            return await client.request(1), tokens.prepares
        finally:
            client.close()

    assert asyncio.run(scenario()) == (200, 1)


@pytest.mark.parametrize("status", [0, 200, 202, 405, 503, 504])
def test_minimal_answer_reads_agree_with_the_codec(status):
    stop = encode_message(HTTPReqCallResponse(7, Stop(status, (TextEntry("a", "b"),), b"x")))
    assert stop_status(stop[4:]) == (status or 200)
    assert stop_status(encode_message(HTTPReqCallResponse(7))[4:]) == 0
    assert stop_status(encode_message(HTTPReqCallResponse(7, Rewrite(path="/p")))[4:]) == 0
    assert extra_info_kind(encode_message(ExtraInfoRequest(ReqBody()))[4:]) == 2
    assert extra_info_kind(encode_message(ExtraInfoRequest(Var("remote_addr")))[4:]) == 1
    for code in ErrorCode:
        assert error_code(encode_message(ErrorResponse(code))[4:]) == code


def test_http_client_keeps_alive_and_reads_every_framing():
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ]
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            answer = answers.pop(0)
            writer.write(answer)
            if b"close" in answer:
                break
        writer.close()

    async def scenario() -> list[int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HTTPClient(f"http://127.0.0.1:{port}/x", make_template("t", "json", 100))
        try:
            return [await client.request(n) for n in range(4)]
        finally:
            client.close()
            server.close()

    assert asyncio.run(scenario()) == [200, 202, 503, 200]
    assert connections == 2


def test_broker_check_counts_ids_by_consuming():
    from confluent_kafka import Producer

    from harness.broker import EmbeddedBroker

    bodies = make_template("verify", "json", 100)
    with EmbeddedBroker({"v": 2}) as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        # ids 0..5 land (3 twice), id 6 was answered 2xx but never produced, 5 was answered 504.
        for n in (0, 1, 2, 3, 3, 4, 5):
            producer.produce("v", bodies.body(n), partition=n % 2)
        producer.produce("v", make_template("other", "json", 100).body(1))
        assert producer.flush(10) == 0
        check = verify_broker(
            broker.bootstrap, "v", bodies, sent=7, expected=6, rejected={5}, timeout=3
        )
    assert (check.confirmed, check.missing, check.duplicates) == (6, 1, 1)
    assert check.unanswered_found == 1
    assert check.records_scanned == 8


def test_floor_bench_row_smoke():
    row = floor_row("asyncio", Settings(duration=0.5, warmup=0.2, connections=4), "a")
    assert row.error == ""
    assert row.rate is not None and row.rate > 0
    assert row.answers.startswith("200: ") and "(" not in row.answers
    assert {"server", "load"} <= row.cpu.keys()


def test_batch_bodies_are_ndjson_lines_of_the_record_size_each_with_its_own_id():
    bodies = make_template("b", "json", 200, records=3)
    body = bodies.body(42)
    lines = body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4 and len(body) == bodies.size == 600
    assert [json.loads(line)["id"] for line in lines[:3]] == [
        "b-0000000042-0000",
        "b-0000000042-0001",
        "b-0000000042-0002",
    ]
    assert bodies.content_type == "application/x-ndjson"
    with pytest.raises(ValueError):
        make_template("b", "pretty-json", 200, records=3)


def test_a_batch_load_run_is_verified_record_by_record_in_the_broker(broker, new_topic):
    topic = new_topic(1)
    with RunnerProcess(args=["--workers", "1"]) as kafka_runner:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.load",
                "--socket",
                kafka_runner.socket_path,
                "--verify-broker",
                broker.bootstrap,
                "--topic",
                topic,
                "--delivery",
                "async",
                "--batch",
                "20",
                "--body-size",
                "200",
                "--requests",
                "30",
                "--warmup",
                "0",
                "-c",
                "2",
                "--json",
                "--no-progress",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    summary = json.loads(done.stdout)
    assert summary["statuses"] == {"202": 30}
    assert summary["records_per_request"] == 20
    assert summary["records_per_s"] == pytest.approx(summary["req_per_s"] * 20)
    broker_check = summary["broker"]
    assert (broker_check["expected"], broker_check["confirmed"]) == (600, 600)
    assert (broker_check["missing"], broker_check["duplicates"]) == (0, 0)
