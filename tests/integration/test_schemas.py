"""Route schemas end to end: fake APISIX -> runner process -> Tansu -> a real consumer.

Valid records land byte for byte as on a route without a schema; violations are refused with
their pointer and keyword and produce nothing; references outside the schema are refused when
the route is prepared, never fetched; a pattern that would backtrack forever is answered at once.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bench.scenarios import BENCH_SCHEMA, Settings, runner_row
from harness.broker import EmbeddedBroker
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer
from harness.runner_process import RunnerProcess

from .conftest import ReadRecords
from .test_kafka_plugin import (
    NewTopic,
    assert_error,
    plugin,
    record_at,
    route,
    run,
    send,
)

USER = {
    "type": "object",
    "required": ["id", "action"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "action": {"enum": ["login", "logout"]},
        "name": {"type": "string", "pattern": "^[A-Za-z ]+$"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
}


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    with RunnerProcess(args=["--workers", "1", "--log-level", "DEBUG"]) as proc:
        yield proc


def test_valid_records_land_byte_for_byte_as_without_a_schema(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    body = (
        b'{ "id" : 4.2e1 , "action" : "log\\u0069n" ,\n  "name" : "Ada \\u004covelace" ,'
        b' "tags" : [ "a" , "b" ] }\n'
    )
    schema_route = route(broker.bootstrap, topic=topic, schema=USER, jsonkey="action")
    plain_route = route(broker.bootstrap, topic=topic, jsonkey="action")
    validated = send(runner, schema_route, body)
    unvalidated = send(runner, plain_route, body)
    assert validated.status == unvalidated.status == 200, validated.body
    expected = b'{"id":4.2e1,"action":"log\\u0069n","name":"Ada \\u004covelace","tags":["a","b"]}'
    for answer in (validated, unvalidated):
        record = record_at(read_records, answer)
        assert record.value == expected
        assert record.key == b"login"


def test_a_violation_is_422_naming_pointer_and_keyword_and_nothing_is_produced(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, schema=USER)
    body = json.dumps({"id": 1, "action": "login", "tags": ["a", 2]}).encode()
    parsed = assert_error(send(runner, value, body), 422, "schema_violation")
    assert parsed["violations"] == [{"pointer": "/tags/1", "keyword": "type"}]
    assert "record" not in parsed
    missing = assert_error(send(runner, value, b'{"id": 3}'), 422, "schema_violation")
    assert missing["violations"] == [{"pointer": "", "keyword": "required"}]
    extra = assert_error(
        send(runner, value, b'{"id": 3, "action": "logout", "x/y": 1}'), 422, "schema_violation"
    )
    assert extra["violations"] == [{"pointer": "", "keyword": "additionalProperties"}]
    for answer in (parsed, missing, extra):
        assert "login" not in answer["message"] and "[A-Za-z" not in answer["message"]
    assert read_records(topic, timeout=0.5) == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_a_schema_route_refuses_bodies_that_are_not_json_with_415(
    runner: RunnerProcess,
    broker: EmbeddedBroker,
    new_topic: NewTopic,
    read_records: ReadRecords,
    content_type: str | None,
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, schema=USER)
    headers = [] if content_type is None else [("Content-Type", content_type)]
    answer = run(_post(runner, value, b'{"id": 1, "action": "login"}', headers))
    assert_error(answer, 415, "unsupported_media_type")
    assert read_records(topic, timeout=0.5) == []


async def _post(
    runner: RunnerProcess, value: str, body: bytes, headers: list[tuple[str, str]]
) -> HTTPAnswer:
    async with FakeApisix(runner.socket_path) as apisix:
        return await apisix.request(
            plugin(value),
            ClientRequest("POST", "/kafkaupstream", headers=tuple(headers), body=body),
        )


class _CountingServer:
    """An HTTP server on loopback that serves a schema and counts the requests it gets."""

    def __init__(self) -> None:
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                payload = b'{"type": "integer"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/user.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_references_outside_the_schema_are_refused_at_prepare_time_never_fetched(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, tmp_path: Path
) -> None:
    topic = new_topic(1)
    schema_file = tmp_path / "user.json"
    schema_file.write_text('{"type": "integer"}')
    with _CountingServer() as server:
        for ref in (server.url, schema_file.as_uri()):
            value = route(broker.bootstrap, topic=topic, schema={"$ref": ref})

            async def prepare_only(value: str = value) -> None:
                async with FakeApisix(runner.socket_path) as apisix:
                    await apisix.prepare(plugin(value))

            logged_before = Path(runner.log_path).read_text().count("field=schema")
            run(prepare_only())  # PrepareConf alone: the refusal is logged before any request
            log = Path(runner.log_path).read_text()
            assert log.count("event=route_config_invalid field=schema") == logged_before + 1, log
            parsed = assert_error(send(runner, value, b"1"), 500, "route_config_invalid")
            assert "schema:" in parsed["message"] and "nothing is fetched" in parsed["message"]
            assert "127.0.0.1" not in parsed["message"] and "user.json" not in parsed["message"]
        assert server.requests == 0


def test_a_backtracking_pattern_on_a_long_input_is_answered_at_once(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    # On a backtracking engine (Python's re) "^(a+)+$" against 30 "a"s and a "!" already takes
    # tens of seconds, doubling with every further "a"; the linear engine takes microseconds.
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(a|aa)+$": {"type": "integer"}},
    }
    value = route(
        broker.bootstrap,
        topic=topic,
        schema=schema,
        max_body_bytes=2_000_000,
        config={"message.max.bytes": 2_000_000},
    )
    for n in (100_000, 1_000_000):  # on the loop, and over 256 KiB on a thread
        long_name = json.dumps({"name": "a" * n + "!"}).encode()
        long_key = json.dumps({"a" * n + "!": "x", "a" * (n // 2): 1}).encode()
        matching = json.dumps({"name": "a" * n}).encode()
        started = time.monotonic()
        refused = send(runner, value, long_name)
        refused_key = send(runner, value, long_key)
        accepted = send(runner, value, matching)
        seconds = time.monotonic() - started
        print(f"n={n}: three answers in {seconds:.3f} s")
        assert assert_error(refused, 422, "schema_violation")["violations"] == [
            {"pointer": "/name", "keyword": "pattern"}
        ]
        assert accepted.status == 200, accepted.body
        assert refused_key.status == 200, refused_key.body  # "aaa...!" matches no pattern key
        # The bound: far below the runner's own budget for one request (APISIX waits 60 s).
        assert seconds < 20, seconds
    assert len(read_records(topic, expected=4)) == 4


def test_the_bench_row_with_validation_on_produces_every_accepted_record(
    broker: EmbeddedBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(1)
    conf = json.dumps(
        {"config": {"bootstrap.servers": broker.bootstrap}, "topic": topic, "schema": BENCH_SCHEMA}
    )
    settings = Settings(duration=1.0, warmup=0.5, connections=4)
    row = runner_row(
        "c-schema",
        "schema",
        ["--workers", "1"],
        "kafkaupstream",
        conf,
        settings,
        broker.pid,
        (broker.bootstrap, topic),
    )
    assert row.error == "", row.error
    assert row.answers.startswith("200: ") and "422" not in row.answers, row.answers
    assert row.notes and "(0 missing, 0 duplicates)" in row.notes[0], row.notes


def _batch_body(batch: str, records: list[bytes]) -> tuple[bytes, list[tuple[str, str]]]:
    """A batch body of ``records`` (JSON texts) in ``batch``'s format, and its content type."""
    if batch == "ndjson":
        return b"\n".join(records) + b"\n", [("Content-Type", "application/x-ndjson")]
    return b"[ " + b" ,\n ".join(records) + b" ]", [("Content-Type", "application/json")]


@pytest.mark.parametrize("batch", ["ndjson", "json-array"])
def test_every_record_of_a_batch_is_validated_and_lands_byte_for_byte(
    runner: RunnerProcess,
    broker: EmbeddedBroker,
    new_topic: NewTopic,
    read_records: ReadRecords,
    batch: str,
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, schema=USER, batch=batch, jsonkey="action")
    records = [b'{ "id" : 1 , "action" : "login" }', b'{"id": 2.0e0, "action": "logout"}']
    answer = run(_post(runner, value, *_batch_body(batch, records)))
    assert answer.status == 200, answer.body
    entries = json.loads(answer.body)["records"]
    landed = read_records(topic, expected=2)
    assert [(r.offset, r.key, r.value) for r in landed] == [
        (entries[0]["offset"], b"login", b'{"id":1,"action":"login"}'),
        (entries[1]["offset"], b"logout", b'{"id":2.0e0,"action":"logout"}'),
    ]


@pytest.mark.parametrize("batch", ["ndjson", "json-array"])
def test_a_record_that_breaks_the_schema_refuses_the_batch_naming_its_index(
    runner: RunnerProcess,
    broker: EmbeddedBroker,
    new_topic: NewTopic,
    read_records: ReadRecords,
    batch: str,
) -> None:
    topic = new_topic(1)
    value = route(broker.bootstrap, topic=topic, schema=USER, batch=batch)
    docs = [
        {"id": 1, "action": "login"},
        {"id": 2, "action": "logout"},
        {"id": 0, "action": "login"},
    ]
    body, headers = _batch_body(batch, [json.dumps(d).encode() for d in docs])
    parsed = assert_error(run(_post(runner, value, body, headers)), 422, "schema_violation")
    assert parsed["record"] == 2
    assert parsed["message"].startswith("record 2: ")
    assert parsed["violations"] == [{"pointer": "/id", "keyword": "minimum"}]
    assert read_records(topic, timeout=0.5) == []


def test_a_batch_route_with_a_schema_keeps_its_content_types(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic
) -> None:
    value = route(broker.bootstrap, topic=new_topic(1), schema=USER, batch="ndjson")
    body = b'{"id": 1, "action": "login"}\n'
    for content_type in ("application/x-ndjson", "application/jsonl", "application/json"):
        answer = run(_post(runner, value, body, [("Content-Type", content_type)]))
        assert answer.status == 200, (content_type, answer.body)
    refused = run(_post(runner, value, body, [("Content-Type", "text/plain")]))
    assert_error(refused, 415, "unsupported_media_type")


def test_strings_that_are_not_unicode_pass_validation_and_land_unchanged(
    runner: RunnerProcess, broker: EmbeddedBroker, new_topic: NewTopic, read_records: ReadRecords
) -> None:
    topic = new_topic(1)
    schema = {"properties": {"s": {"type": "string", "maxLength": 3}}}
    value = route(broker.bootstrap, topic=topic, schema=schema)
    answer = send(runner, value, b'{ "s" : "a\xff\\ud800" , "\xfe" : 1 }')
    assert answer.status == 200, answer.body
    assert record_at(read_records, answer).value == b'{"s":"a\xff\\ud800","\xfe":1}'
    refused = send(runner, value, b'{"s": "a\xff\xfe\xfd"}')  # four characters, as Go reads them
    assert assert_error(refused, 422, "schema_violation")["violations"] == [
        {"pointer": "/s", "keyword": "maxLength"}
    ]
