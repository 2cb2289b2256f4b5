"""``--verify-broker``: is every replayed 200's record in Kafka, and is it what the request sent?

For each 200 the record at the answer's (topic, partition, offset) is read back with a consumer
``assign()``-ed at the lowest wanted offset of each partition (no group join, which takes Tansu
~20 s). Its value must be the request body, compacted when the request was JSON, exactly as the
plugin compacts it; when the recording holds the record the 200 produced, key and headers too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from harness.consume import ConsumedRecord, _check, _consumer
from harness.replay.compare import Mismatch, show_bytes
from harness.replay.format import KafkaRecord, RecordedAnswer, RecordedRequest
from kafkaupstream.plugin.jsonbody import InvalidJSON, compact, is_json_content_type


@dataclass(frozen=True, slots=True, order=True)
class Location:
    topic: str
    partition: int
    offset: int


def location_of(answer: RecordedAnswer) -> Location | None:
    """Where a 200 says its record is; None when the body does not say."""
    try:
        where = json.loads(answer.body or b"")
        location = Location(where["topic"], where["partition"], where["offset"])
    except (ValueError, TypeError, KeyError):
        return None
    ok = isinstance(location.topic, str) and all(
        isinstance(n, int) and not isinstance(n, bool)
        for n in (location.partition, location.offset)
    )
    return location if ok else None


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


def check_record(
    request: RecordedRequest,
    expected: KafkaRecord | None,
    record: ConsumedRecord | None,
    where: Location,
) -> list[Mismatch]:
    at = f"{where.topic}[{where.partition}]@{where.offset}"
    if record is None:
        return [Mismatch("broker record", f"a record at {at}", "nothing there")]
    out = []
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


def _show(headers: Iterable[tuple[str, bytes | None]]) -> str:
    return "{" + ", ".join(f"{n}={show_bytes(v)}" for n, v in headers) + "}"


def as_expected(record: ConsumedRecord) -> KafkaRecord:
    """What a recording keeps of a record (its value follows from the request)."""
    return KafkaRecord(record.key, record.headers)


def records_for(
    bootstrap: str, answers: Mapping[int, RecordedAnswer], *, timeout: float = 10.0
) -> dict[int, tuple[Location, ConsumedRecord | None]]:
    """For each 200 in ``answers`` (by index): where it says its record is, and the record."""
    locations = {
        i: loc
        for i, answer in answers.items()
        if answer.status == 200 and (loc := location_of(answer)) is not None
    }
    found = fetch(bootstrap, locations.values(), timeout=timeout)
    return {i: (loc, found.get(loc)) for i, loc in locations.items()}
