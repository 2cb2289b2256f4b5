"""Micro-benchmark of kafkaupstream.plugin.jsonbody: prints figures, asserts nothing about time.

    .venv/bin/python -m harness.bench.jsonbody_bench

Also times the alternatives the compactor was chosen against (regex sub with a group template,
findall + join, a parse-and-re-serialise), so the choice can be re-checked on a new Python.
"""

from __future__ import annotations

import json
import re
import timeit
from collections.abc import Callable

from kafkaupstream.plugin.jsonbody import compact, parse

_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SUB = re.compile(rb"(" + _STRING + rb")|[ \t\n\r]+", re.DOTALL)
_FINDALL = re.compile(_STRING + rb'|[^" \t\n\r]+', re.DOTALL)


def _document(records: int) -> object:
    return [
        {
            "id": i,
            "name": f"user {i}",
            "email": f"user{i}@example.com",
            "tags": ["a b", "c", "d\\e", 'say "hi"'],
            "score": i * 1.5,
            "active": i % 2 == 0,
            "address": {"city": "Zürich", "zip": f"{8000 + i % 100}", "note": None},
        }
        for i in range(records)
    ]


def _sized(target: int, pretty: bool) -> bytes:
    """A document of about ``target`` bytes."""
    records = 1
    while True:
        text = _dump(_document(records), pretty)
        if len(text) >= target:
            return text
        records += max(1, records // 4)


def _dump(doc: object, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(doc, indent=2, ensure_ascii=False).encode()
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _per_call(fn: Callable[[], object], budget: float = 0.5) -> float:
    number = max(1, int(budget / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    bodies = {
        "1 KiB pretty": _sized(1024, pretty=True),
        "1 KiB compact": _sized(1024, pretty=False),
        "1 KiB no space": _sized(1024, pretty=False).replace(b" ", b"_"),
        "1 MiB pretty": _sized(1 << 20, pretty=True),
        "1 MiB compact": _sized(1 << 20, pretty=False),
        "depth 5000": b"[" * 5000 + b" 1 " + b"]" * 5000,
    }
    candidates: dict[str, Callable[[bytes], object]] = {
        "compact()": compact,
        "parse()": parse,
        "alt: sub(template)": lambda d: _SUB.sub(rb"\1", d),
        "alt: findall+join": lambda d: b"".join(_FINDALL.findall(d)),
        "alt: loads+dumps": lambda d: json.dumps(json.loads(d), separators=(",", ":")).encode(),
    }
    print(f"{'body':<16}{'bytes':>10}  " + "".join(f"{name:>20}" for name in candidates))
    for label, body in bodies.items():
        cells = []
        for name, fn in candidates.items():
            if name.startswith("alt") and label.startswith("depth"):
                cells.append(f"{'—':>20}")
                continue
            seconds = _per_call(lambda fn=fn, body=body: fn(body))  # type: ignore[misc]
            cells.append(f"{seconds * 1e6:>17.1f} µs")
        print(f"{label:<16}{len(body):>10}  " + "".join(cells))


if __name__ == "__main__":
    main()
