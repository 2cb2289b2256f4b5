"""HAR 1.2 files read into exchanges: URLs, headers, base64 bodies, entries without answers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from harness.replay.har import read_har
from harness.replay.loader import load_recording

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "replay" / "capture.har"


def har(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": {"name": "test"}, "entries": list(entries)}}


def entry(request: dict[str, Any], response: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "startedDateTime": "2025-01-31T10:15:02.118Z",
        "time": 12.5,
        "request": {"method": "POST", "headers": [], **request},
        "response": response or {"status": 200, "headers": [], "content": {"size": 0}},
    }


def test_http2_pseudo_headers_and_hop_by_hop_headers_are_left_out() -> None:
    headers = [
        {"name": ":authority", "value": "api.test"},
        {"name": ":path", "value": "/p"},
        {"name": "connection", "value": "keep-alive"},
        {"name": "te", "value": "trailers"},
        {"name": "Topic", "value": "t"},
        {"name": "x-dup", "value": "1"},
        {"name": "x-dup", "value": "2"},
    ]
    recording = read_har(har(entry({"url": "http://api.test:8080/p", "headers": headers})), "h")
    assert recording.exchanges[0].request.headers == (
        ("Host", "api.test:8080"),
        ("Topic", "t"),
        ("x-dup", "1"),
        ("x-dup", "2"),
    )


def test_the_url_becomes_the_path_and_the_raw_query() -> None:
    found = read_har(har(entry({"url": "https://api.test/a/b?x=1&y=%20"})), "h")
    request = found.exchanges[0].request
    assert (request.path, request.query, request.target) == ("/a/b", "x=1&y=%20", "/a/b?x=1&y=%20")
    assert read_har(har(entry({"url": "http://api.test"})), "h").exchanges[0].request.target == "/"


def test_base64_request_and_response_bodies_are_decoded() -> None:
    raw = b"\x89PNG\r\n"
    found = read_har(
        har(
            entry(
                {
                    "url": "http://a/p",
                    "postData": {"text": base64.b64encode(raw).decode(), "encoding": "base64"},
                },
                {
                    "status": 201,
                    "headers": [{"name": "Content-Type", "value": "application/json"}],
                    "content": {"size": 2, "text": "e30=", "encoding": "base64"},
                },
            )
        ),
        "h",
    )
    exchange = found.exchanges[0]
    assert exchange.request.body == raw
    assert (exchange.answer.status, exchange.answer.body) == (201, b"{}")
    assert exchange.duration_ms == 12.5
    assert exchange.started == 1738318502.118


def test_entries_the_browser_never_got_an_answer_for_are_skipped_and_counted() -> None:
    blocked = entry({"url": "http://a/favicon.ico"}, {"status": 0, "headers": [], "content": {}})
    found = read_har(har(blocked, entry({"url": "http://a/p"})), "h")
    assert (len(found.exchanges), found.skipped) == (1, 1)


def test_a_body_the_har_did_not_keep_is_not_compared() -> None:
    evicted = {
        "status": 202,
        "headers": [],
        "content": {"size": 45, "mimeType": "application/json"},
    }
    empty = {"status": 204, "headers": [], "content": {"size": 0}}
    found = read_har(
        har(entry({"url": "http://a/p"}, evicted), entry({"url": "http://a/p"}, empty)), "h"
    )
    assert [e.answer.body for e in found.exchanges] == [None, b""]


def test_the_chrome_style_fixture_is_detected_and_read() -> None:
    recording = load_recording(FIXTURE)
    assert recording.kind == "har 1.2"
    assert (len(recording.exchanges), recording.skipped) == (6, 1)
    h2 = recording.exchanges[1].request
    assert h2.header("host") == "replay.test"
    assert not any(name.startswith(":") for name, _ in h2.headers)
    assert recording.exchanges[2].request.body.startswith(b"\x89PNG")
