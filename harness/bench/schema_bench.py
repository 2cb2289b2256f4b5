"""Which JSON Schema library validates bodies: per-request cost, and a backtracking check.

    .venv/bin/python -m harness.bench.schema_bench

Times, for 1 KiB JSON bodies against a realistic event schema (nested objects, enums, patterns,
arrays, ``additionalProperties``), what a schema route adds to a request: parsing the body once
(``jsonbody.parse``, needed by every library) plus validating it with jsonschema-rs (the runner's
choice, ``kafkaupstream.plugin.schema``), fastjsonschema and jsonschema, on a valid and on an
invalid body (the refusal reports its errors). Then times ``^(a+)+$`` against ``"a" * n + "!"``:
a backtracking engine doubles its time with each ``n``. Prints figures, asserts nothing.
fastjsonschema and jsonschema are only imported here; install them to compare
(``.venv/bin/pip install fastjsonschema jsonschema``).
"""

from __future__ import annotations

import copy
import json
import timeit
from collections.abc import Callable
from typing import Any

from kafkaupstream.plugin.jsonbody import parse
from kafkaupstream.plugin.schema import compile_schema, violations

#: A draft-07 schema (the newest draft all three libraries validate) shaped like a real event.
SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["event_id", "type", "occurred_at", "user", "items"],
    "additionalProperties": False,
    "properties": {
        "event_id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{12}$"},
        "type": {"enum": ["order.created", "order.paid", "order.shipped", "order.cancelled"]},
        "occurred_at": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T"},
        "source": {"type": "string", "maxLength": 64},
        "user": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "email": {"type": "string", "pattern": "^[^@ ]+@[^@ ]+$", "maxLength": 254},
                "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["sku", "quantity", "price"],
                "additionalProperties": False,
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z0-9-]{3,32}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "price": {"type": "number", "exclusiveMinimum": 0},
                    "note": {"type": ["string", "null"], "maxLength": 200},
                },
            },
        },
        "total": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD", "CHF", "GBP"]},
        "coupon": {"type": ["string", "null"]},
    },
}


def _valid_body(size: int = 1024) -> bytes:
    """A valid body of about ``size`` bytes (items are added until it is that long)."""
    doc: dict[str, Any] = {
        "event_id": "1b4e28ba-2fa1-883f0016d3cc",
        "type": "order.paid",
        "occurred_at": "2026-12-04T19:00:00Z",
        "source": "checkout-service",
        "user": {"id": 42, "email": "ada@example.com", "country": "CH", "tags": ["vip", "beta"]},
        "items": [],
        "total": 0,
        "currency": "CHF",
        "coupon": None,
    }
    while len(json.dumps(doc)) < size:
        n = len(doc["items"])
        doc["items"].append(
            {"sku": f"SKU-{n:05d}", "quantity": n + 1, "price": 9.5, "note": "gift wrap"}
        )
        doc["total"] += 9.5 * (n + 1)
    return json.dumps(doc).encode()


def _invalid_body(valid: bytes) -> bytes:
    doc = json.loads(valid)
    bad = copy.deepcopy(doc)
    bad["user"]["id"] = 0
    bad["items"][1]["quantity"] = "two"
    bad["extra"] = True
    return json.dumps(bad).encode()


def _per_call(fn: Callable[[], object], budget: float = 0.5) -> float:
    number = max(1, int(budget / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def _candidates(schema: dict[str, Any]) -> dict[str, Callable[[Any], object]]:
    """Library name -> validate(instance): None when valid, else its first error's place."""
    compiled = compile_schema(schema)
    out: dict[str, Callable[[Any], object]] = {
        "jsonschema-rs": lambda doc: next(iter(violations(compiled, doc)), None),
    }
    try:
        import fastjsonschema
    except ImportError:
        print("fastjsonschema is not installed: skipped")
    else:
        check = fastjsonschema.compile(schema)

        def fast(doc: Any) -> object:
            try:
                check(doc)
            except fastjsonschema.JsonSchemaValueException as exc:  # stops at the first error
                return exc.path
            return None

        out["fastjsonschema"] = fast
    try:
        import jsonschema
    except ImportError:
        print("jsonschema is not installed: skipped")
    else:
        validator = jsonschema.validators.validator_for(schema)(schema)
        out["jsonschema"] = lambda doc: next(
            (e.json_path for e in validator.iter_errors(doc)), None
        )
    return out


def _backtracking(check: Callable[[Any], object]) -> str:
    cells = []
    for n in (16, 20, 22, 24):
        seconds = _per_call(lambda n=n: check("a" * n + "!"), budget=0.05)  # type: ignore[misc]
        cells.append(f"n={n}: {seconds * 1e6:.1f} µs")
    return ", ".join(cells)


def main() -> None:
    valid = _valid_body()
    invalid = _invalid_body(valid)
    parse_us = _per_call(lambda: parse(valid)) * 1e6
    print(f"body {len(valid)} B valid, {len(invalid)} B invalid; parse() alone {parse_us:.1f} µs")
    print(f"{'library':<16}{'valid':>12}{'invalid':>12}{'parse+valid':>14}")
    docs = {"valid": parse(valid), "invalid": parse(invalid)}
    libraries = _candidates(SCHEMA)
    for name, check in libraries.items():
        if check(docs["valid"]) is not None or check(docs["invalid"]) is None:
            raise SystemExit(f"{name} does not validate the sample bodies as intended")
    for name, check in libraries.items():
        ok = _per_call(lambda check=check: check(docs["valid"])) * 1e6  # type: ignore[misc]
        bad = _per_call(lambda check=check: check(docs["invalid"])) * 1e6  # type: ignore[misc]
        print(f"{name:<16}{ok:>9.1f} µs{bad:>9.1f} µs{parse_us + ok:>11.1f} µs")
    print("pattern ^(a+)+$ on 'a' * n + '!':")
    for name, check in _candidates({"type": "string", "pattern": "^(a+)+$"}).items():
        print(f"  {name:<15} {_backtracking(check)}")


if __name__ == "__main__":
    main()
