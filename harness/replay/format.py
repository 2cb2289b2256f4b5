"""The recording format: JSON Lines, a header line first, then one exchange per line.

Version 1. The first line says what the file is::

    {"format": "kafkaupstream-replay", "version": 1, "created": "2025-01-31T12:00:00Z",
     "source": "gateway", "redacted": true}

``source`` is what wrote it (``gateway``, ``proxy``, ...); ``redacted`` is false when secrets were
kept (``--keep-secrets``). Every other line is one exchange, in the order the answers were sent::

    {"request": {"method": "POST", "path": "/kafkaupstream", "query": "a=1",
                 "headers": [["Host", "gw:9080"], ["Content-Type", "application/json"],
                             ["Authorization", null]],
                 "body": {"encoding": "utf-8", "text": "{\\"a\\": 1}"},
                 "redacted_query": ["apikey"]},
     "answer": {"status": 200, "headers": [["Content-Type", "application/json"]],
                "body": {"encoding": "base64", "text": "eyJ0b3BpYyI6..."}},
     "timing": {"start": 1738324800.123456, "duration_ms": 3.21},
     "note": "what this exchange shows (optional)",
     "record": {"key": {"encoding": "utf-8", "text": "user-42"},
                "headers": [["x-request-id", {"encoding": "utf-8", "text": "r-1"}]]}}

- ``query`` is the raw query string without ``?``, or null when the target had no ``?``.
- ``headers`` keep the order, the duplicates and the case of names as sent. A null value is a
  secret that was redacted (an HTTP field value is never null): replay leaves the header out
  unless ``--secret NAME=VALUE`` supplies it. ``redacted_query`` lists query parameters whose
  values were emptied for the same reason (optional).
- A body is UTF-8 text when it decodes as such, else base64; ``encoding`` says which. A null
  answer body means it was not recorded (a HAR file without content): it is not compared.
- ``timing.start`` is when the request was fully read (seconds since the epoch), ``duration_ms``
  how long the answer took.
- ``record`` (optional) is the Kafka record a 200 produced: its key (null: no key) and headers.
  ``replay --verify-broker`` checks them besides the value, which follows from the request body.
- ``records`` (optional) is the same for a batch's 200 or 207: one entry per record of the
  request, in its order, null for a record that was not delivered.

Unknown fields are ignored, so later minor additions keep old readers working; a file with a
higher ``version`` is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.headers import first_header

FORMAT = "kafkaupstream-replay"
VERSION = 1

#: Field value None: redacted.
Headers = tuple[tuple[str, str | None], ...]


class RecordingError(ValueError):
    """A file that is no recording this harness can read; the message names the line."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: str | None
    headers: Headers
    body: bytes
    redacted_query: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    status: int
    headers: Headers
    #: None: not recorded, so not compared.
    body: bytes | None

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What a 200 produced besides its value: the key and the record headers."""

    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Exchange:
    request: RecordedRequest
    answer: RecordedAnswer
    #: When the request was fully read, seconds since the epoch.
    started: float
    duration_ms: float
    note: str = ""
    record: KafkaRecord | None = None
    #: A batch's records (None where one was not delivered), instead of ``record``.
    records: tuple[KafkaRecord | None, ...] | None = None

    @property
    def expected_records(self) -> tuple[KafkaRecord | None, ...] | None:
        """The recorded records by index, for a single record's answer or a batch's."""
        if self.records is not None:
            return self.records
        return None if self.record is None else (self.record,)


@dataclass(frozen=True, slots=True)
class Recording:
    exchanges: tuple[Exchange, ...]
    #: "jsonl v1", "har 1.2", ...: for the summary.
    kind: str
    #: Entries that could not be replayed (a HAR entry without a response).
    skipped: int = 0


# --- encoding -----------------------------------------------------------------------------------


def encode_body(data: bytes) -> dict[str, str]:
    try:
        return {"encoding": "utf-8", "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "text": base64.b64encode(data).decode("ascii")}


def decode_body(obj: object, where: str) -> bytes:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("text"), str):
        raise RecordingError(f"{where}: a body is {{'encoding': ..., 'text': ...}}")
    text, encoding = obj["text"], obj.get("encoding", "utf-8")
    if encoding == "utf-8":
        return str(text).encode("utf-8", "surrogateescape")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RecordingError(f"{where}: invalid base64 ({exc})") from None
    raise RecordingError(f"{where}: unknown body encoding {encoding!r} (utf-8 or base64)")


def header_line(source: str, *, redacted: bool, now: float | None = None) -> dict[str, Any]:
    created = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "redacted": redacted,
    }


def exchange_to_json(exchange: Exchange) -> dict[str, Any]:
    req, ans = exchange.request, exchange.answer
    request: dict[str, Any] = {
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": [list(h) for h in req.headers],
        "body": encode_body(req.body),
    }
    if req.redacted_query:
        request["redacted_query"] = list(req.redacted_query)
    out: dict[str, Any] = {
        "request": request,
        "answer": {
            "status": ans.status,
            "headers": [list(h) for h in ans.headers],
            "body": None if ans.body is None else encode_body(ans.body),
        },
        "timing": {
            "start": round(exchange.started, 6),
            "duration_ms": round(exchange.duration_ms, 3),
        },
    }
    if exchange.note:
        out["note"] = exchange.note
    if exchange.record is not None:
        out["record"] = _record_to_json(exchange.record)
    if exchange.records is not None:
        out["records"] = [None if r is None else _record_to_json(r) for r in exchange.records]
    return out


def _record_to_json(rec: KafkaRecord) -> dict[str, Any]:
    return {
        "key": None if rec.key is None else encode_body(rec.key),
        "headers": [[n, None if v is None else encode_body(v)] for n, v in rec.headers],
    }


def dumps_line(obj: Mapping[str, Any]) -> str:
    """One JSON line, readable UTF-8 where it can be (header bytes that are not UTF-8 are kept as
    surrogate escapes, which only the ASCII form can carry)."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj)
    return line + "\n"


# --- decoding -----------------------------------------------------------------------------------


def _headers(obj: object, where: str) -> Headers:
    if not isinstance(obj, list):
        raise RecordingError(f"{where}: headers are a list of [name, value] pairs")
    out = []
    for pair in obj:
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
        if not ok or not (pair[1] is None or isinstance(pair[1], str)):
            raise RecordingError(f"{where}: header {pair!r} is not [name, value or null]")
        out.append((pair[0], pair[1]))
    return tuple(out)


def _record(obj: object, where: str) -> KafkaRecord | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise RecordingError(f"{where}: 'record' must be an object")
    key = obj.get("key")
    headers = obj.get("headers") or []
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 for h in headers
    ):
        raise RecordingError(f"{where}: record headers are [name, body or null] pairs")
    return KafkaRecord(
        None if key is None else decode_body(key, f"{where} record key"),
        tuple(
            (str(n), None if v is None else decode_body(v, f"{where} record header"))
            for n, v in headers
        ),
    )


def _records(obj: object, where: str) -> tuple[KafkaRecord | None, ...] | None:
    if obj is None:
        return None
    if not isinstance(obj, list):
        raise RecordingError(f"{where}: 'records' must be a list of records or nulls")
    return tuple(_record(item, f"{where} records[{i}]") for i, item in enumerate(obj))


def exchange_from_json(obj: object, where: str) -> Exchange:
    if not isinstance(obj, Mapping):
        raise RecordingError(f"{where}: an exchange is a JSON object")
    try:
        req, ans, timing = obj["request"], obj["answer"], obj.get("timing") or {}
        query = req.get("query")
        request = RecordedRequest(
            method=str(req["method"]),
            path=str(req["path"]),
            query=None if query is None else str(query),
            headers=_headers(req.get("headers", []), where),
            body=decode_body(req["body"], f"{where} request") if req.get("body") else b"",
            redacted_query=tuple(str(n) for n in req.get("redacted_query") or ()),
        )
        answer = RecordedAnswer(
            status=int(ans["status"]),
            headers=_headers(ans.get("headers", []), where),
            body=None if ans.get("body") is None else decode_body(ans["body"], f"{where} answer"),
        )
        return Exchange(
            request,
            answer,
            started=float(timing.get("start", 0.0)),
            duration_ms=float(timing.get("duration_ms", 0.0)),
            note=str(obj.get("note") or ""),
            record=_record(obj.get("record"), where),
            records=_records(obj.get("records"), where),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{where}: not an exchange ({type(exc).__name__}: {exc})") from None


def is_header_line(obj: object) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def read_jsonl(lines: Iterable[str], name: str) -> Recording:
    """The exchanges of a recording; :class:`RecordingError` names the first bad line."""
    numbered: Iterator[tuple[int, str]] = (
        (i, line) for i, line in enumerate(lines, 1) if line.strip()
    )
    first = next(numbered, None)
    if first is None:
        raise RecordingError(f"{name}: empty file")
    header = _json(first[1], f"{name}:{first[0]}")
    if not is_header_line(header):
        raise RecordingError(f"{name}:{first[0]}: no {FORMAT!r} header line")
    version = header.get("version")
    if version != VERSION:
        raise RecordingError(
            f"{name}: format version {version!r}; this harness reads version {VERSION}"
        )
    exchanges = tuple(
        exchange_from_json(_json(line, f"{name}:{i}"), f"{name}:{i}") for i, line in numbered
    )
    return Recording(exchanges, f"jsonl v{VERSION}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordingError(f"{where}: invalid JSON ({exc})") from None
