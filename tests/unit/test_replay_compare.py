"""Comparing a replayed answer with the recorded one, and the replay loop around it."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness.replay.compare import Mismatch, RuleError, Rules, compare, parse_path
from harness.replay.format import Exchange, RecordedAnswer, RecordedRequest
from harness.replay.replayer import ReplayOptions, due_offsets, replay
from harness.replay.report import format_text, summarize
from harness.replay.senders import SendError

JSON = (("Content-Type", "application/json"),)


def answer(status: int = 200, body: object = None, *headers: tuple[str, str]) -> RecordedAnswer:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return RecordedAnswer(status, (*JSON, *headers), data)


def where(partition: int, offset: int, topic: str = "t") -> RecordedAnswer:
    return answer(200, {"topic": topic, "partition": partition, "offset": offset})


def test_offsets_are_ignored_by_default_and_partitions_are_not() -> None:
    assert compare(where(1, 5), where(1, 99), Rules()) == []
    assert compare(where(1, 5), where(2, 5), Rules()) == [Mismatch("body.partition", "1", "2")]


def test_strict_compares_the_offset_too() -> None:
    assert compare(where(1, 5), where(1, 6), Rules.build(strict=True)) == [
        Mismatch("body.offset", "5", "6")
    ]


def test_an_ignored_field_must_still_be_there() -> None:
    got = answer(200, {"topic": "t", "partition": 1})
    assert compare(where(1, 5), got, Rules()) == [
        Mismatch("body.offset", '"<ignored>"', "(absent)")
    ]


def test_json_bodies_are_compared_as_json_not_as_bytes() -> None:
    spaced = answer(200, b'{ "a" : 1, "b" : [1, 2] }')
    assert compare(spaced, answer(200, {"b": [1, 2], "a": 1}), Rules()) == []
    assert compare(spaced, answer(200, {"a": 1, "b": [1, 3]}), Rules()) == [
        Mismatch("body.b[1]", "2", "3")
    ]
    assert compare(answer(200, {"a": 1}), answer(200, {"a": True}), Rules()) != []


def test_other_bodies_are_compared_byte_for_byte() -> None:
    page = RecordedAnswer(503, (("Content-Type", "text/html"),), b"<html>503</html>\r\n")
    assert compare(page, page, Rules()) == []
    other = RecordedAnswer(503, (("Content-Type", "text/html"),), b"<html>503</html>\n")
    assert [m.field for m in compare(page, other, Rules())] == ["body"]


def test_status_content_type_and_retry_after_are_compared() -> None:
    recorded = answer(503, {"error": "backpressure"}, ("Retry-After", "1"))
    got = RecordedAnswer(502, (("Content-Type", "text/html"),), b'{"error": "backpressure"}')
    assert compare(recorded, got, Rules()) == [
        Mismatch("status", "503", "502"),
        Mismatch("header Content-Type", "application/json", "text/html"),
        Mismatch("header Retry-After", "1", "(absent)"),
    ]
    rules = Rules.build(["status", "header:content-type", "header:Retry-After"])
    assert compare(recorded, got, rules) == []


def test_an_extra_compared_header_and_a_header_only_the_replay_has() -> None:
    rules = Rules.build(headers=["X-Trace"])
    assert compare(answer(200, {}), answer(200, {}, ("X-Trace", "a")), rules) == [
        Mismatch("header X-Trace", "(absent)", "a")
    ]


def test_paths_take_indexes_and_wildcards() -> None:
    recorded = answer(200, {"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]})
    got = answer(200, {"items": [{"id": 7, "n": "a"}, {"id": 8, "n": "b"}]})
    assert compare(recorded, got, Rules.build(["items[*].id"])) == []
    assert [m.field for m in compare(recorded, got, Rules.build(["items[0].id"]))] == [
        "body.items[1].id"
    ]
    assert parse_path("a.b[0].*") == ("a", "b", 0, "*")


@pytest.mark.parametrize("bad", ["", ".a", "a..b", "a[x]"])
def test_a_field_that_is_no_path_is_refused(bad: str) -> None:
    with pytest.raises(RuleError):
        Rules.build([bad])


def test_a_body_that_was_not_recorded_is_not_compared() -> None:
    assert compare(RecordedAnswer(202, JSON, None), answer(202, {"x": 1}), Rules()) == []


def test_pacing_recorded_and_fixed_rate() -> None:
    def ex(started: float) -> Exchange:
        return Exchange(RecordedRequest("POST", "/", None, (), b""), answer(), started, 1.0)

    exchanges = [ex(100.0), ex(100.5), ex(100.2), ex(102.0)]
    assert due_offsets(exchanges, "fast", None) == [0.0, 0.0, 0.0, 0.0]
    assert due_offsets(exchanges, "recorded", None) == pytest.approx([0.0, 0.5, 0.2, 2.0])
    assert due_offsets(exchanges, "fast", 4.0) == [0.0, 0.25, 0.5, 0.75]


class FakeSender:
    """Answers 403 for the path /changed, fails for /down, else what was recorded for /."""

    description = "fake"

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    async def send(
        self, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> RecordedAnswer:
        self.sent.append((target, headers))
        if target == "/down":
            raise SendError("ConnectionRefusedError: [Errno 111]")
        if target == "/changed":
            return answer(403, {"error": "topic_not_allowed"})
        return where(0, 42)

    async def close(self) -> None:
        return None


def test_a_replay_reports_each_difference_with_the_request_that_caused_it() -> None:
    def ex(path: str) -> Exchange:
        headers = (("Authorization", None),)
        return Exchange(
            RecordedRequest("POST", path, None, headers, b"{}"), where(0, 1), 0.0, 1.0, note=path
        )

    items = list(enumerate([ex("/"), ex("/changed"), ex("/down")], 1))
    sender = FakeSender()
    outcomes = asyncio.run(replay(items, sender, ReplayOptions(concurrency=2)))
    assert [o.number for o in outcomes] == [1, 2, 3]
    assert [bool(o.mismatches) for o in outcomes] == [False, True, True]
    assert all(headers == () for _, headers in sender.sent), "a redacted header was sent"
    summary = summarize(
        outcomes,
        recording="r.jsonl",
        kind="jsonl v1",
        target="fake",
        rules=Rules(),
        seconds=0.5,
        skipped=0,
        broker=None,
        show=10,
    )
    assert (summary.matched, summary.differing) == (1, 2)
    assert summary.missing_secret_names == ["Authorization"]
    text = format_text(summary)
    assert "  #2 POST /changed  (/changed)\n      status: expected 200, got 403" in text
    assert "#3 POST /down" in text and "no answer: ConnectionRefusedError" in text
    assert "#1 " not in text
