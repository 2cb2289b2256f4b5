"""The recording file: lines, version, bodies, headers as sent, and secrets kept out of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.replay.format import (
    Exchange,
    KafkaRecord,
    RecordedAnswer,
    RecordedRequest,
    RecordingError,
    exchange_from_json,
    exchange_to_json,
    read_jsonl,
)
from harness.replay.loader import load_recording
from harness.replay.recorder import RecordingWriter
from harness.replay.redact import is_secret, restore

JSON = ("Content-Type", "application/json")


def exchange(
    *headers: tuple[str, str | None], body: bytes = b'{"a": 1}', query: str | None = None
) -> Exchange:
    return Exchange(
        RecordedRequest("POST", "/p", query, (JSON, *headers), body),
        RecordedAnswer(200, (JSON, ("Set-Cookie", "s=1")), b'{"topic": "t"}'),
        started=1738324800.25,
        duration_ms=3.5,
    )


def write(path: Path, *exchanges: Exchange, keep_secrets: bool = False) -> list[dict[str, object]]:
    with RecordingWriter(path, source="test", keep_secrets=keep_secrets) as writer:
        for ex in exchanges:
            writer.write(ex)
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def test_an_exchange_survives_a_line_with_header_order_duplicates_and_case() -> None:
    original = Exchange(
        RecordedRequest(
            "POST",
            "/p",
            "",
            (("X-B", "1"), ("x-a", "2"), ("X-B", "3")),
            b"\x00\xff binary",
        ),
        RecordedAnswer(503, (("Retry-After", "1"),), None),
        started=12.5,
        duration_ms=1.25,
        note="why",
        record=KafkaRecord(None, (("x-request-id", b"r-1"), ("empty", None))),
    )
    line = json.loads(json.dumps(exchange_to_json(original)))
    assert exchange_from_json(line, "line 2") == original
    assert line["request"]["query"] == ""
    assert line["request"]["body"]["encoding"] == "base64"
    assert line["answer"]["body"] is None


def test_text_bodies_stay_readable_and_others_are_base64_with_the_encoding_named(
    tmp_path: Path,
) -> None:
    _, text, binary = write(
        tmp_path / "r.jsonl", exchange(body="caf\u00e9".encode()), exchange(body=b"\xc3")
    )
    assert text["request"]["body"] == {"encoding": "utf-8", "text": "caf\u00e9"}
    assert binary["request"]["body"] == {"encoding": "base64", "text": "ww=="}
    assert "caf\u00e9" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


def test_the_first_line_names_the_format_and_its_version(tmp_path: Path) -> None:
    header, _ = write(tmp_path / "r.jsonl", exchange())
    assert header["format"] == "kafkaupstream-replay"
    assert header["version"] == 1
    assert header["redacted"] is True
    assert load_recording(tmp_path / "r.jsonl").exchanges[0].request.body == b'{"a": 1}'


def test_a_newer_format_version_is_refused() -> None:
    lines = ['{"format": "kafkaupstream-replay", "version": 2}']
    with pytest.raises(RecordingError, match="version 2; this harness reads version 1"):
        read_jsonl(lines, "r.jsonl")


def test_a_bad_line_is_named_by_its_number() -> None:
    lines = ['{"format": "kafkaupstream-replay", "version": 1}', "", '{"request": 1}']
    with pytest.raises(RecordingError, match=r"r.jsonl:3"):
        read_jsonl(lines, "r.jsonl")


def test_credentials_are_redacted_by_default(tmp_path: Path) -> None:
    _, line = write(
        tmp_path / "r.jsonl",
        exchange(
            ("Authorization", "Bearer x"),
            ("Proxy-Authorization", "Basic y"),
            ("Cookie", "s=1"),
            ("apikey", "k"),
            ("X-API-Key", "k"),
            ("X-Auth-Token", "t"),
            ("X-Client-Secret", "s"),
            ("db-password", "p"),
            ("X-Request-Id", "r-1"),
        ),
    )
    headers = dict(map(tuple, line["request"]["headers"]))
    assert [n for n, v in headers.items() if v is None] == [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "apikey",
        "X-API-Key",
        "X-Auth-Token",
        "X-Client-Secret",
        "db-password",
    ]
    assert headers["X-Request-Id"] == "r-1"
    assert ["Set-Cookie", None] in line["answer"]["headers"]
    assert "Bearer" not in (tmp_path / "r.jsonl").read_text()


def test_keep_secrets_records_credentials_as_sent(tmp_path: Path) -> None:
    header, line = write(
        tmp_path / "r.jsonl", exchange(("Authorization", "Bearer x")), keep_secrets=True
    )
    assert header["redacted"] is False
    assert ["Authorization", "Bearer x"] in line["request"]["headers"]


def test_a_secret_query_parameter_is_emptied_listed_and_put_back_by_a_secret(
    tmp_path: Path,
) -> None:
    _, line = write(tmp_path / "r.jsonl", exchange(query="apikey=s3cret&trace=a%20b"))
    assert line["request"]["query"] == "apikey=&trace=a%20b"
    assert line["request"]["redacted_query"] == ["apikey"]
    request = load_recording(tmp_path / "r.jsonl").exchanges[0].request
    assert restore(request, {}).missing == ("?apikey",)
    assert restore(request, {"APIKEY": "a/b"}).target == "/p?apikey=a%2Fb&trace=a%20b"


def test_replay_leaves_out_redacted_headers_unless_a_secret_fills_them_in() -> None:
    request = RecordedRequest("POST", "/p", None, (JSON, ("Authorization", None)), b"")
    assert restore(request, {}).headers == (JSON,)
    assert restore(request, {}).missing == ("Authorization",)
    filled = restore(request, {"authorization": "Bearer y"})
    assert filled.headers == (JSON, ("Authorization", "Bearer y"))
    assert filled.missing == ()


@pytest.mark.parametrize(
    ("name", "secret"),
    [("Cookie", True), ("x-session-token", True), ("X-Request-Id", False), ("key", False)],
)
def test_what_counts_as_a_secret(name: str, secret: bool) -> None:
    assert is_secret(name) is secret


def test_a_file_that_is_neither_format_is_refused_saying_what_was_expected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(RecordingError, match="neither a kafkaupstream recording"):
        load_recording(path)


def test_line_separators_inside_bodies_do_not_split_a_record(tmp_path: Path) -> None:
    body = "a\u2028b\u0085c\u2029d".encode()
    write(tmp_path / "r.jsonl", exchange(body=body), exchange())
    recording = load_recording(tmp_path / "r.jsonl")
    assert [e.request.body for e in recording.exchanges] == [body, b'{"a": 1}']
