"""Is a replayed answer the recorded one? Status, body (JSON as JSON), a few headers.

What differs by nature from run to run is ignored: by default ``offset`` (a 200's offset depends
on what the topic held before) and a batch's ``records[*].offset``. An ignored JSON path must
still be present; only its value is not compared. Partitions are compared: they follow from the
precedence rules (header, configured partition, key hash); ``--ignore partition`` when the
recording has unkeyed records on topics with several partitions, which librdkafka spreads at
random.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from harness.headers import all_headers
from harness.replay.format import Headers, RecordedAnswer

DEFAULT_IGNORE = ("offset", "records[*].offset")
COMPARED_HEADERS = ("Content-Type", "Retry-After")
WILDCARD = "*"
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")
_IGNORED = "<ignored>"
_ABSENT = object()
MAX_SHOWN = 300


class RuleError(ValueError):
    """An ``--ignore`` field that is not a JSON path, ``status``, ``body`` or ``header:NAME``."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field that differs: ``field`` is ``status``, ``body``, ``body.PATH``, ``header NAME``."""

    field: str
    expected: str
    got: str


JSONPath = tuple[str | int, ...]


def parse_path(text: str) -> JSONPath:
    """``a.b[0].c`` or ``items[*].id`` into segments; ``*`` matches any key or index."""
    segments: list[str | int] = []
    pos = 0
    for match in _SEGMENT.finditer(text):
        gap = text[pos : match.start()]
        if gap not in ("", ".") or (gap == "." and pos == 0):
            raise RuleError(f"--ignore {text!r}: not a JSON path (like offset or a.b[0])")
        key, index = match.groups()
        segments.append(key if key is not None else (WILDCARD if index == "*" else int(index)))
        pos = match.end()
    if not segments or pos != len(text):
        raise RuleError(f"--ignore {text!r}: not a JSON path (like offset or a.b[0])")
    return tuple(segments)


@dataclass(frozen=True, slots=True)
class Rules:
    paths: tuple[JSONPath, ...] = tuple(parse_path(p) for p in DEFAULT_IGNORE)
    headers: tuple[str, ...] = COMPARED_HEADERS
    status: bool = True
    body: bool = True
    #: What is ignored, as given (defaults included), for the summary.
    ignored: tuple[str, ...] = DEFAULT_IGNORE

    @classmethod
    def build(
        cls, ignore: Sequence[str] = (), *, strict: bool = False, headers: Sequence[str] = ()
    ) -> Rules:
        """Defaults plus ``ignore`` (``strict``: no defaults); ``headers`` are compared too."""
        fields = [*([] if strict else DEFAULT_IGNORE), *ignore]
        compared = [*COMPARED_HEADERS, *headers]
        paths = []
        for field in fields:
            if field.lower().startswith("header:"):
                name = field.split(":", 1)[1].lower()
                compared = [h for h in compared if h.lower() != name]
            elif field not in ("status", "body"):
                paths.append(parse_path(field))
        return cls(
            paths=tuple(paths),
            headers=tuple(dict.fromkeys(compared)),
            status="status" not in fields,
            body="body" not in fields,
            ignored=tuple(dict.fromkeys(fields)),
        )


def compare(expected: RecordedAnswer, got: RecordedAnswer, rules: Rules) -> list[Mismatch]:
    out = []
    if rules.status and expected.status != got.status:
        out.append(Mismatch("status", str(expected.status), str(got.status)))
    for name in rules.headers:
        want, have = _values(expected.headers, name), _values(got.headers, name)
        if want is not None and want != have:
            out.append(Mismatch(f"header {name}", _show_header(want), _show_header(have)))
    if rules.body and expected.body is not None and got.body is not None:
        out.extend(compare_bodies(expected.body, got.body, rules.paths))
    return out


def _values(headers: Headers, name: str) -> tuple[str, ...] | None:
    """The values of ``name``; None when one was redacted (then it cannot be compared)."""
    values = tuple(all_headers(headers, name))
    return None if any(v is None for v in values) else tuple(v for v in values if v is not None)


def _show_header(values: tuple[str, ...] | None) -> str:
    return "(absent)" if not values else ", ".join(values)


def compare_bodies(expected: bytes, got: bytes, paths: Sequence[JSONPath] = ()) -> list[Mismatch]:
    """JSON bodies value by value (with ``paths`` ignored), anything else byte for byte."""
    want, have = _json(expected), _json(got)
    if want is _ABSENT or have is _ABSENT:
        if expected == got:
            return []
        return [Mismatch("body", show_bytes(expected), show_bytes(got))]
    for path in paths:
        want, have = _mask(want, path), _mask(have, path)
    return [Mismatch("body" + where, _show(a), _show(b)) for where, a, b in _diff(want, have, "")]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _ABSENT


def _mask(value: Any, path: JSONPath) -> Any:
    """``value`` with what ``path`` reaches replaced by a placeholder (presence still counts)."""
    if not path:
        return _IGNORED
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and isinstance(head, str):
        return {k: _mask(v, rest) if head in (WILDCARD, k) else v for k, v in value.items()}
    if isinstance(value, list) and (head == WILDCARD or isinstance(head, int)):
        return [_mask(v, rest) if head in (WILDCARD, i) else v for i, v in enumerate(value)]
    return value


def _diff(a: Any, b: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            yield from _diff(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{where}[{i}]")
    elif a != b or isinstance(a, bool) != isinstance(b, bool):
        yield where, a, b


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return _clip(json.dumps(value, ensure_ascii=False))


def show_bytes(data: bytes | None) -> str:
    """Bytes for a person: text as text, the rest as a ``b'...'`` repr, both clipped."""
    if data is None:
        return "(null)"
    if not data:
        return "(empty)"
    try:
        return _clip(data.decode("utf-8"))
    except UnicodeDecodeError:
        return _clip(repr(data))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
