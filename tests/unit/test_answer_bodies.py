"""Answer bodies: the delivery answers are formatted by hand for speed and must stay
json.dumps's bytes; the error code reads back from every error answer (the metrics' label)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.api import Answer
from kafkaupstream.plugin.answers import (
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    error_answer,
    error_code,
    outcome_answer,
    spool_answer,
)
from kafkaupstream.producers import Delivered, Queued
from kafkaupstream.spool import Spooled, SpoolFull, SpoolUnavailable

topics = st.text()  # any text: legal topic names are a tiny subset


@given(topics, st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1))
def test_delivered_body_is_what_json_dumps_writes(topic: str, partition: int, offset: int):
    answer = outcome_answer(Delivered(topic, partition, offset), 5000)
    expected = json.dumps({"topic": topic, "partition": partition, "offset": offset})
    assert (answer.status, answer.body) == (200, expected.encode())
    assert answer.headers == (("Content-Type", "application/json"),)


@given(topics)
def test_queued_body_is_what_json_dumps_writes(topic: str):
    answer = outcome_answer(Queued(topic), 5000)
    assert (answer.status, answer.body) == (
        202,
        json.dumps({"topic": topic, "status": "queued"}).encode(),
    )
    assert json.loads(answer.body) == {"topic": topic, "status": "queued"}


codes = st.from_regex(r"[a-z][a-z_]{0,40}", fullmatch=True)


@given(st.integers(400, 599), codes, st.text())
def test_error_code_reads_back_the_code_of_every_error_answer(status: int, code: str, text: str):
    answer = error_answer(status, code, text)
    assert error_code(answer) == code == json.loads(answer.body)["error"]


def test_error_code_is_empty_for_successes_and_bodies_that_are_not_ours():
    assert error_code(outcome_answer(Queued("t"), 5000)) == ""
    assert error_code(Answer(200, b'{"error": "looks_like_one"}')) == ""
    assert error_code(Answer(500, b"plain text")) == ""
    assert error_code(Answer(500, b'{"error": "Not A Code"}')) == ""
    assert error_code(INTERNAL_ERROR) == "internal_error"
    assert (SHUTTING_DOWN.status, error_code(SHUTTING_DOWN)) == (503, "shutting_down")
    assert ("Retry-After", "1") in SHUTTING_DOWN.headers


@given(topics)
def test_spooled_body_is_what_json_dumps_writes(topic: str):
    answer = spool_answer(Spooled(topic))
    assert (answer.status, answer.body) == (
        202,
        json.dumps({"topic": topic, "status": "spooled"}).encode(),
    )


def test_spool_refusals_are_503_with_retry_after_and_their_codes():
    full = spool_answer(SpoolFull(0.2))
    unavailable = spool_answer(SpoolUnavailable("disk I/O error"))
    assert (full.status, error_code(full)) == (503, "backpressure")
    assert (unavailable.status, error_code(unavailable)) == (503, "spool_unavailable")
    assert ("Retry-After", "1") in full.headers and ("Retry-After", "1") in unavailable.headers
    assert b"disk" not in unavailable.body  # the cause is logged, not told to clients
