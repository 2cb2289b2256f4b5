"""Metric labels, redaction, the health verdicts, the metrics files and JSON log lines (no runner).

The runner's endpoint end to end is ``tests/integration/test_metrics.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mockafka.kafka_store import KafkaStore
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from kafkaupstream.api import Answer, HTTPRequest
from kafkaupstream.builtin import StopPlugin
from kafkaupstream.logs import JsonLineFormatter, RateLimit, log_event, render_value
from kafkaupstream.observability import MetricsDir
from kafkaupstream.observability.http import (
    BadRequest,
    HttpThread,
    Response,
    parse_address,
    parse_head,
)
from kafkaupstream.observability.labels import (
    OTHER,
    UNKNOWN,
    BoundedLabels,
    route_label,
)
from kafkaupstream.observability.report import RunnerStatus, WorkerState, health, ready
from kafkaupstream.plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import ProducerPool, redact_bootstrap
from kafkaupstream.server import RunnerServer, ServerSettings
from tests.waiting import eventually

from .test_plugin_handle import MockafkaProducer

# --- route labels from PrepareConf keys -------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("route#1#ext-plugin-pre-req#1", "1"),
        ("route#orders-v2#ext-plugin-post-req#1712345678", "orders-v2"),
        # APISIX merges a route with its service or consumer: still the route's id (a consumer
        # name is no route label).
        ("route&service#r7&s3#ext-plugin-post-req#12&4", "r7"),
        ("route&consumer#r7&alice#ext-plugin-post-req#12&9", "r7"),
        ("global_rule#1#ext-plugin-pre-req#5", "global_rule#1"),
        ("service#s3#ext-plugin-pre-req#2", "service#s3"),
        ("route#1", "1"),
        ("", UNKNOWN),
        ("no-hash-at-all", UNKNOWN),
        ("#1#ext-plugin-pre-req#1", UNKNOWN),
        ("route##ext-plugin-pre-req#1", UNKNOWN),
        ('route#a b/c"d\n{x}#p#1', "a_b_c_d__x_"),
        ("route#" + "x" * 500 + "#p#1", "x" * 80),
    ],
)
def test_route_label_is_the_route_id_of_the_key(key: str, label: str) -> None:
    assert route_label(key) == label


def test_a_route_keeps_its_label_across_versions() -> None:
    assert route_label("route#5#ext-plugin-pre-req#1") == route_label(
        "route#5#ext-plugin-pre-req#2"
    )


def test_bounded_labels_count_newcomers_past_the_cap_as_other() -> None:
    labels = BoundedLabels(2)
    assert [labels.admit(v) for v in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
        "b",
    ]


# --- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "shown"),
    [
        ("kafka:9092", ["kafka:9092"]),
        ("k1:9092, k2:9092,,", ["k1:9092", "k2:9092"]),
        ("alice:pa55word@kafka:9092", ["kafka:9092"]),
        (
            "SASL_SSL://alice:pa55word@k1:9093,PLAINTEXT://k2:9092",
            ["SASL_SSL://k1:9093", "PLAINTEXT://k2:9092"],
        ),
        ("kafka:9092?password=pa55word", ["kafka:9092"]),
        ("kafka:9092/secret-path", ["kafka:9092"]),
        ("[::1]:9092", ["[::1]:9092"]),
        ("", []),
    ],
)
def test_redacted_bootstrap_shows_hosts_and_ports_only(servers: str, shown: list[str]) -> None:
    assert redact_bootstrap(servers) == shown
    assert "pa55word" not in json.dumps(redact_bootstrap(servers))


def test_a_long_bootstrap_list_is_cut_at_ten_entries() -> None:
    shown = redact_bootstrap(",".join(f"k{i}:9092" for i in range(13)))
    assert shown == [f"k{i}:9092" for i in range(10)] + ["(+3 more)"]


# --- /health and /ready ------------------------------------------------------------------------


def status(*workers: WorkerState, expected: int = 2, listening: bool = True) -> RunnerStatus:
    return RunnerStatus(expected, workers, listening, conf_tokens=3, worker_restarts=0)


def producer(name: str, reachable: bool | None) -> dict[str, Any]:
    return {
        "name": name,
        "bootstrap": ["k1:9092"],
        "reachable": reachable,
        "last_error": "_TRANSPORT",
    }


NOW = 1_000_000.0
A, B = WorkerState(11, NOW - 60, True), WorkerState(12, NOW - 60, True)


def test_health_is_ok_while_every_producer_is_reachable_or_not_probed_yet() -> None:
    reports = {
        11: {"at": NOW - 0.5, "producers": [producer("producer-1", True)]},
        12: {"at": NOW - 0.5, "producers": [producer("producer-1", None)]},
    }
    code, body = health(status(A, B), reports, NOW)
    assert (code, body["status"], body["problems"]) == (200, "ok", [])


def test_health_is_degraded_naming_the_unreachable_producer_and_its_worker() -> None:
    reports = {
        11: {"at": NOW - 0.5, "producers": [producer("producer-1", True)]},
        12: {
            "at": NOW - 0.5,
            "producers": [producer("producer-1", True), producer("producer-2", False)],
        },
    }
    code, body = health(status(A, B), reports, NOW)
    assert (code, body["status"]) == (503, "degraded")
    assert body["problems"] == [
        "producer producer-2 of worker pid 12: brokers k1:9092 unreachable (_TRANSPORT)"
    ]


def test_health_is_degraded_naming_a_stalled_producer_and_why() -> None:
    stalled = {
        **producer("producer-3", True),
        "pending": 12,
        "stalled": True,
        "stalled_s": 14.2,
        "stall_cause": "_MSG_TIMED_OUT",
    }
    reports = {
        11: {"at": NOW - 0.5, "producers": [producer("producer-1", True)]},
        12: {"at": NOW - 0.5, "producers": [stalled]},
    }
    code, body = health(status(A, B), reports, NOW)
    assert (code, body["status"]) == (503, "degraded")
    assert body["problems"] == [
        "producer producer-3 of worker pid 12: brokers k1:9092: no successful delivery for 14 s "
        "with records pending or timing out (12 pending now; _MSG_TIMED_OUT)"
    ]


def test_health_is_degraded_when_a_worker_stops_reporting() -> None:
    young = WorkerState(13, NOW - 1, True)  # just started: no report yet is fine
    reports = {11: {"at": NOW - 30, "producers": []}}
    code, body = health(status(A, young), reports, NOW)
    assert code == 503 and body["problems"] == ["worker pid 11 has not reported for 30 s"]
    assert [w["reported"] for w in body["workers"]] == [True, False]


def test_ready_needs_the_socket_and_every_worker_accepting() -> None:
    starting = WorkerState(12, NOW, False)
    assert ready(status(A, B))[0] == 200
    assert ready(status(A, starting))[0] == 503
    assert ready(status(A))[0] == 503  # one being restarted
    assert ready(status(A, B, listening=False))[1]["status"] == "not_ready"


# --- the metrics directory ----------------------------------------------------------------------


def write_counter(directory: Path, name: str, values: dict[str, float]) -> None:
    file = MmapedDict(str(directory / name))
    for route, count in values.items():
        key = mmap_key(
            "kafkaupstream_requests", "kafkaupstream_requests_total", ["route"], [route], "h"
        )
        file.write_value(key, count, 0.0)
    file.close()


def totals(directory: Path) -> dict[str, float]:
    collector = MultiProcessCollector(None, path=str(directory))
    return {s.labels["route"]: s.value for metric in collector.collect() for s in metric.samples}


def test_a_dead_workers_counts_are_kept_in_one_archive_file(tmp_path: Path) -> None:
    write_counter(tmp_path, "counter_101.db", {"r1": 3, "r2": 1})
    write_counter(tmp_path, "counter_102.db", {"r1": 5})
    write_counter(tmp_path, "counter_archive.db", {"r2": 10})
    (tmp_path / "health_101.json").write_text("{}")
    metrics = MetricsDir(str(tmp_path))
    before = totals(tmp_path)
    metrics.process_dead(101)
    assert totals(tmp_path) == before == {"r1": 8, "r2": 11}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_102.db", "counter_archive.db"]
    metrics.process_dead(102)  # a second death adds to the same archive
    assert totals(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_archive.db"]


def test_reports_round_trip_and_unreadable_ones_are_skipped(tmp_path: Path) -> None:
    metrics = MetricsDir(str(tmp_path))
    metrics.write_report(7, {"pid": 7, "producers": []})
    (tmp_path / "health_8.json").write_text("{not json")
    (tmp_path / "health_x.json").write_text("{}")
    assert metrics.read_reports() == {7: {"pid": 7, "producers": []}}


# --- the server counts each answer once, with its route ------------------------------------------


class SpyRecorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, int, str]] = []

    def request(self, route: str, status: int, error: str) -> None:
        self.requests.append((route, status, error))


class SpyTelemetry:
    """What the server needs of Telemetry: a recorder, and the start/stop/close hooks."""

    def __init__(self) -> None:
        self.recorder = SpyRecorder()
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


class Failing(StopPlugin):
    """A plugin with a bug: the server answers 500 internal_error for it."""

    name = "failing"

    async def handle(self, state: Any, request: HTTPRequest) -> Answer | None:
        raise RuntimeError("a bug")


def test_the_server_counts_every_answer_once_with_the_route_of_its_key(tmp_path: Path) -> None:
    topic = f"mock-{uuid.uuid4().hex[:10]}"
    KafkaStore().create_partition(topic=topic, partitions=1)
    telemetry = SpyTelemetry()
    kafka = KafkaUpstreamPlugin(lambda: ProducerPool(factory=MockafkaProducer))
    settings = ServerSettings(socket_path=str(tmp_path / "r.sock"))
    server = RunnerServer(settings, [kafka, Failing()], telemetry=telemetry)  # type: ignore[arg-type]
    value = json.dumps(
        {
            "config": {"bootstrap.servers": "b:1"},
            "topic": topic,
            "delivery": "async",
            "partition": 0,
        }
    )
    orders = PluginConf((("kafkaupstream", value),), conf_id="orders")
    bad = PluginConf((("kafkaupstream", '{"config": {}}'),), "global_rule", "1")
    failing = PluginConf((("failing", ""),), conf_id="buggy")

    async def scenario() -> list[int]:
        await server.start()
        async with FakeApisix(settings.socket_path) as apisix:
            answers = [
                await apisix.request(orders, ClientRequest(body=b"{}")),
                await apisix.request(orders, ClientRequest(body=b"")),
                await apisix.request(orders, ClientRequest(headers=(("topic", "x"),), body=b"{}")),
                await apisix.request(bad, ClientRequest(body=b"{}")),
                await apisix.request(failing, ClientRequest(body=b"{}")),
            ]
        await server.shutdown()
        return [a.status for a in answers]

    assert asyncio.run(scenario()) == [202, 400, 403, 500, 500]
    assert telemetry.recorder.requests == [
        ("orders", 202, ""),
        ("orders", 400, "empty_body"),
        ("orders", 403, "topic_not_allowed"),
        ("global_rule#1", 500, "route_config_invalid"),
        ("buggy", 500, "internal_error"),
    ]
    assert telemetry.calls == ["start", "stop", "close"]


# --- the metrics listener's HTTP --------------------------------------------------------------


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _get_or_none(port: int, path: str) -> bytes | None:
    try:
        return _get(port, path)
    except ConnectionRefusedError:
        return None


def test_the_listener_retries_a_taken_port_then_serves_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "kafkaupstream.observability.http")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    seen: list[tuple[str, str]] = []

    def respond(method: str, target: str) -> Response:
        seen.append((method, target))
        return Response(200, "text/plain", b"ok\n")

    listener = HttpThread(("127.0.0.1", port), respond)
    listener.start()
    try:
        eventually(lambda: "event=metrics_listen_failed" in caplog.text, 3, "a bind failure")
        squatter.close()
        answer = eventually(
            lambda: _get_or_none(port, "/ready?x=1"), 4, "an answer after the retry"
        )
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n")
        assert seen == [("GET", "/ready?x=1")]
        assert caplog.text.count("event=metrics_listen_failed") == 1  # once per cause
    finally:
        listener.close()
    with pytest.raises(OSError):
        _get(port, "/ready")


def test_parse_head_waits_for_the_whole_head_and_refuses_garbage() -> None:
    assert parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n") is None
    assert parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n") == ("GET", "/metrics?x=1")
    with pytest.raises(BadRequest):
        parse_head(b"\x16\x03\x01 TLS hello\r\n\r\n")
    with pytest.raises(BadRequest):
        parse_head(b"GET /" + b"a" * 9000)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ],
)
def test_metrics_listen_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9100", ":9100", "host:", "host:http", "host:70000"])
def test_bad_metrics_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# --- JSON log lines -----------------------------------------------------------------------------


class Lines(logging.Handler):
    """Keeps what one logger emits, formatted as the runner's text and JSON lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def json(self) -> list[dict[str, Any]]:
        lines = [JsonLineFormatter().format(r) for r in self.records]
        assert all("\n" not in line for line in lines)
        return [json.loads(line) for line in lines]


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("kafkaupstream.test_lines")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


def test_log_event_renders_the_text_and_hands_json_the_fields_as_given(lines: Lines) -> None:
    logger = logging.getLogger("kafkaupstream.test_lines")
    config = {"bootstrap.servers": "k:9092", "acks": "all"}
    log_event(
        logger,
        logging.WARNING,
        "producer_created",
        producer="producer-1",
        config=config,
        cause="it's\nbroken",
        left=3,
        budget_s=0.7,
    )
    (record,) = lines.records
    assert record.getMessage() == (
        "event=producer_created producer=producer-1 "
        'config={"bootstrap.servers":"k:9092","acks":"all"} '
        'cause="it\'s\\nbroken" left=3 budget_s=0.7'
    )
    (line,) = lines.json()
    assert line["event"] == "producer_created" and line["level"] == "warning"
    assert line["fields"] == {
        "producer": "producer-1",
        "config": config,
        "cause": "it's\nbroken",
        "left": 3,
        "budget_s": 0.7,
    }
    assert line["msg"] == record.getMessage()
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_a_line_not_logged_as_an_event_is_kept_whole(lines: Lines) -> None:
    logging.getLogger("kafkaupstream.test_lines").warning("plain text = not a %s", "field")
    (line,) = lines.json()
    assert line["msg"] == "plain text = not a field" and "event" not in line
    assert "fields" not in line


def test_values_that_are_not_plain_tokens_are_quoted() -> None:
    assert [render_value(v) for v in ("a-1.b:2", "", "two words", "x=y", None, True)] == [
        "a-1.b:2",
        "''",
        "'two words'",
        "'x=y'",
        "-",
        "True",
    ]


def test_a_rate_limit_lets_one_through_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    limit = RateLimit(5.0, clock=lambda: now[0])
    assert limit.hit() == 0
    assert [limit.hit(), limit.hit()] == [None, None]
    assert limit.hit("other key") == 0  # keys are limited apart
    now[0] += 5.0
    assert limit.hit() == 2  # the two held back since
    assert limit.hit() is None


def test_a_rate_limited_event_says_how_many_it_stands_for(lines: Lines) -> None:
    logger = logging.getLogger("kafkaupstream.test_lines")
    now = [0.0]
    limit = RateLimit(5.0, clock=lambda: now[0])
    for _ in range(3):
        limit.log(logger, logging.WARNING, "in_flight_cap_reached", counted="refused", cap=8)
    now[0] = 5.0
    limit.log(logger, logging.WARNING, "in_flight_cap_reached", counted="refused", cap=8)
    assert [r.getMessage() for r in lines.records] == [
        "event=in_flight_cap_reached cap=8 refused=1",
        "event=in_flight_cap_reached cap=8 refused=3",
    ]
