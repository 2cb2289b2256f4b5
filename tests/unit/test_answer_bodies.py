"""The delivery answers are formatted by hand for speed: they must stay json.dumps's bytes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin.answers import outcome_answer
from kafkaupstream.producers import Delivered, Queued

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
