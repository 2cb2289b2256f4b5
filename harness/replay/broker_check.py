"""``--verify-broker``: is every replayed 200's record in Kafka, and is it what the request sent?

For each 200 the record at the answer's (topic, partition, offset) is read back with a consumer
``assign()``-ed at the lowest wanted offset of each partition (no group join, which takes Tansu
~20 s). Its value must be the request body, compacted when the request was JSON, exactly as the
plugin compacts it; when the recording holds the record the 200 produced, key and headers too.

A batch's answer (200 or 207) lists a position per delivered record: each record there must be
the request's record of that index (a line of NDJSON, an element of a JSON array, compacted).
The answer does not say which of the two formats the route reads, so a body is split both ways
and the split with as many records as the answer lists is the one expected.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from harness.consume import ConsumedRecord, _check, _consumer
from harness.replay.compare import Mismatch, show_bytes
from harness.replay.format import KafkaRecord, RecordedAnswer, RecordedRequest
from kafkaupstream.plugin.jsonarray import InvalidElement, NotAnArray, array_elements
from kafkaupstream.plugin.jsonbody import InvalidJSON, compact, is_json_content_type

#: Answers whose records are looked for: a single record's 200, a batch's 200 or 207.
VERIFIED_STATUSES = frozenset({200, 207})


@dataclass(frozen=True, slots=True, order=True)
class Location:
    topic: str
    partition: int
    offset: int


def _location(topic: object, entry: object) -> Location | None:
    if not isinstance(entry, dict) or not isinstance(topic, str):
        return None
    partition, offset = entry.get("partition"), entry.get("offset")
    ok = all(isinstance(n, int) and not isinstance(n, bool) for n in (partition, offset))
    return Location(topic, partition, offset) if ok else None  # type: ignore[arg-type]


def locations_of(answer: RecordedAnswer) -> list[Location | None] | None:
    """Where an answer says its records are: one entry per record of the request (None for a
    batch's record that was not delivered), or None when the body does not say."""
    try:
        where = json.loads(answer.body or b"")
    except ValueError:
        return None
    if not isinstance(where, dict):
        return None
    if isinstance(where.get("records"), list):  # a batch
        return [_location(where.get("topic"), entry) for entry in where["records"]]
    location = _location(where.get("topic"), where)
    return None if location is None else [location]


def fetch(
    bootstrap: str, locations: Iterable[Location], *, timeout: float = 10.0
) -> dict[Location, ConsumedRecord]:
    """The records at ``locations`` (those found before ``timeout``)."""
    wanted = set(locations)
    if not wanted:
        return {}
    starts: dict[tuple[str, int], int] = {}
    for loc in wanted:
        key = (loc.topic, loc.partition)
        starts[key] = min(starts.get(key, loc.offset), loc.offset)
    found: dict[Location, ConsumedRecord] = {}
    deadline = time.monotonic() + timeout
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in sorted(starts.items())])
        while len(found) < len(wanted) and (remaining := deadline - time.monotonic()) > 0:
            for message in consumer.consume(num_messages=1000, timeout=min(remaining, 0.2)):
                if _check(message):
                    record = ConsumedRecord.from_message(message)
                    loc = Location(record.topic, record.partition, record.offset)
                    if loc in wanted:
                        found[loc] = record
    finally:
        consumer.close()
    return found


def expected_value(request: RecordedRequest) -> bytes:
    """The value the plugin produces for ``request``: its body, compacted if it is JSON."""
    if is_json_content_type(request.header("content-type")):
        try:
            return compact(request.body)
        except InvalidJSON:
            return request.body
    return request.body


def expected_batch(request: RecordedRequest, count: int) -> list[bytes] | None:
    """The values of a batch request's ``count`` records, compacted; None if no split has that
    many (NDJSON first: a one-line array body is one NDJSON record)."""
    lines = [line for line in request.body.split(b"\n") if line.strip(b" \t\r")]
    try:
        splits = [[compact(line) for line in lines]]
    except InvalidJSON:
        splits = []
    with contextlib.suppress(InvalidElement, NotAnArray):
        splits.append(array_elements(request.body))
    return next((values for values in splits if len(values) == count), None)


def check_record(
    request: RecordedRequest,
    expected: KafkaRecord | None,
    record: ConsumedRecord | None,
    where: Location,
    value: bytes | None = None,
) -> list[Mismatch]:
    """One record against what the request sent (``value``: a batch record's, else the body's)."""
    at = f"{where.topic}[{where.partition}]@{where.offset}"
    if record is None:
        return [Mismatch("broker record", f"a record at {at}", "nothing there")]
    out = []
    if value is None:
        value = expected_value(request)
    if record.value != value:
        out.append(Mismatch(f"broker value at {at}", show_bytes(value), show_bytes(record.value)))
    if expected is not None:
        if record.key != expected.key:
            out.append(
                Mismatch(f"broker key at {at}", show_bytes(expected.key), show_bytes(record.key))
            )
        if record.headers != expected.headers:
            out.append(
                Mismatch(f"broker headers at {at}", _show(expected.headers), _show(record.headers))
            )
    return out


Found = list[tuple[Location | None, ConsumedRecord | None]]


def check_records(
    request: RecordedRequest,
    expected: Sequence[KafkaRecord | None] | None,
    found: Found,
    *,
    batch: bool,
) -> list[Mismatch]:
    """Every record an answer names, against the request (``expected``: the recorded records'
    keys and headers, by index; None, or a None among them: not recorded)."""
    values = expected_batch(request, len(found)) if batch else [expected_value(request)]
    if values is None:
        return [Mismatch("batch", f"{len(found)} records in the request", "another count")]
    out = []
    for index, (where, record) in enumerate(found):
        if where is not None:
            known = expected[index] if expected is not None and index < len(expected) else None
            out.extend(check_record(request, known, record, where, values[index]))
    return out


def _show(headers: Iterable[tuple[str, bytes | None]]) -> str:
    return "{" + ", ".join(f"{n}={show_bytes(v)}" for n, v in headers) + "}"


def as_expected(record: ConsumedRecord) -> KafkaRecord:
    """What a recording keeps of a record (its value follows from the request)."""
    return KafkaRecord(record.key, record.headers)


def records_for(
    bootstrap: str, answers: Mapping[int, RecordedAnswer], *, timeout: float = 10.0
) -> dict[int, Found]:
    """For each 200 or 207 in ``answers`` (by index): where it says its records are, and them."""
    locations = {
        i: locs
        for i, answer in answers.items()
        if answer.status in VERIFIED_STATUSES and (locs := locations_of(answer)) is not None
    }
    wanted = [loc for locs in locations.values() for loc in locs if loc is not None]
    found = fetch(bootstrap, wanted, timeout=timeout)
    return {
        i: [(loc, None if loc is None else found.get(loc)) for loc in locs]
        for i, locs in locations.items()
    }


def is_batch(answer: RecordedAnswer) -> bool:
    """Whether the answer is a batch's (its body lists records)."""
    try:
        return isinstance(json.loads(answer.body or b"").get("records"), list)
    except (ValueError, AttributeError):
        return False
