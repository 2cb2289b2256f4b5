"""``--verify-broker`` on batch answers: every listed record against its line or element."""

from __future__ import annotations

import json

from harness.consume import ConsumedRecord
from harness.replay.broker_check import (
    Location,
    check_records,
    expected_batch,
    is_batch,
    locations_of,
)
from harness.replay.compare import Rules, compare
from harness.replay.format import (
    Exchange,
    KafkaRecord,
    RecordedAnswer,
    RecordedRequest,
    exchange_from_json,
    exchange_to_json,
)

JSON = (("Content-Type", "application/json"),)


def request(body: bytes) -> RecordedRequest:
    return RecordedRequest("POST", "/b", None, (("Content-Type", "application/x-ndjson"),), body)


def answer(status: int, body: object) -> RecordedAnswer:
    return RecordedAnswer(status, JSON, json.dumps(body).encode())


def consumed(where: Location, value: bytes, key: bytes | None = None) -> ConsumedRecord:
    return ConsumedRecord(where.topic, where.partition, where.offset, key, value, (), None)


PARTIAL = answer(
    207,
    {
        "topic": "t",
        "delivered": 2,
        "failed": 1,
        "records": [
            {"partition": 0, "offset": 4},
            {"error": "body_too_large", "message": "m"},
            {"partition": 1, "offset": 0},
        ],
    },
)


def test_a_batch_answer_names_a_location_per_record_and_none_for_a_failed_one() -> None:
    assert is_batch(PARTIAL)
    assert locations_of(PARTIAL) == [Location("t", 0, 4), None, Location("t", 1, 0)]
    single = answer(200, {"topic": "t", "partition": 2, "offset": 9})
    assert not is_batch(single)
    assert locations_of(single) == [Location("t", 2, 9)]


def test_the_split_with_as_many_records_as_the_answer_lists_is_expected() -> None:
    body = b'[ {"a" : 1} , 2 ]\n'
    assert expected_batch(request(body), 1) == [b'[{"a":1},2]']  # one NDJSON line
    assert expected_batch(request(body), 2) == [b'{"a":1}', b"2"]  # a JSON array
    assert expected_batch(request(body), 3) is None


def test_each_delivered_record_is_checked_against_its_own_line_and_key() -> None:
    req = request(b'{"id" : "a"}\n{"id": "b", "pad": "x"}\n{ "id" : "c" }\n')
    first, third = Location("t", 0, 4), Location("t", 1, 0)
    right = [(first, consumed(first, b'{"id":"a"}', b"a")), (None, None)]
    right.append((third, consumed(third, b'{"id":"c"}', b"c")))
    recorded = (KafkaRecord(b"a"), None, KafkaRecord(b"c"))
    assert check_records(req, recorded, right, batch=True) == []
    swapped = [right[0], right[1], (third, consumed(third, b'{"id":"c"}', b"a"))]
    problems = check_records(req, recorded, swapped, batch=True)
    assert [p.field for p in problems] == ["broker key at t[1]@0"]
    missing = [right[0], right[1], (third, None)]
    assert [p.field for p in check_records(req, None, missing, batch=True)] == ["broker record"]


def test_batch_offsets_are_ignored_by_default_and_batch_records_round_trip() -> None:
    moved = json.loads(PARTIAL.body or b"")
    moved["records"][0]["offset"] = 40
    assert compare(PARTIAL, answer(207, moved), Rules.build()) == []
    assert compare(PARTIAL, answer(207, moved), Rules.build(strict=True)) != []
    exchange = Exchange(
        request(b"1\n2\n3\n"), PARTIAL, 0.0, 1.0, records=(KafkaRecord(b"k"), None, None)
    )
    again = exchange_from_json(json.loads(json.dumps(exchange_to_json(exchange))), "line 2")
    assert again.records == exchange.records
    assert again.expected_records == (KafkaRecord(b"k"), None, None)
