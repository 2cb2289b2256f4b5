"""Micro-benchmark of the jsonkey step of a request: prints figures, asserts nothing about time.

    .venv/bin/python -m harness.bench.jsonkey_bench
    KAFKAUPSTREAM_NO_EXTENSIONS=1 .venv/bin/python -m harness.bench.jsonkey_bench   # pure Python

Times ``build_record`` on a 1 KiB pretty-printed JSON body in process (no sockets, no Kafka) for
a route without jsonkey, with the dotted path ``user.id`` and with an expression that is not a
plain path (``user.id || id``); the difference to the first row is what the key costs a request
(most of it the body's second parse). Then the evaluation alone on the parsed body: ``jmespath``'s
``ParsedResult.search`` (a new interpreter per call, what a request paid before ``JsonKey``)
against ``JsonKey.search``.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from functools import partial

import jmespath

from kafkaupstream import core
from kafkaupstream.plugin.config import RouteConfig, parse_route_config
from kafkaupstream.plugin.jsonbody import parse
from kafkaupstream.plugin.jsonkey import JsonKey
from kafkaupstream.plugin.record import Routing, build_record, route_request
from kafkaupstream.protocol import TextEntry


def _body(target: int = 1024) -> bytes:
    """A pretty-printed JSON object of about ``target`` bytes with ``user.id`` in it."""
    document: dict[str, object] = {"user": {"id": "u-42", "name": "Ada", "roles": ["a", "b"]}}
    i = 0
    while len(json.dumps(document, indent=2)) < target:
        document[f"field{i}"] = {"n": i, "text": f"value {i}", "flag": i % 2 == 0}
        i += 1
    return json.dumps(document, indent=2).encode()


def _route(**fields: object) -> RouteConfig:
    return parse_route_config(
        json.dumps({"config": {"bootstrap.servers": "127.0.0.1:9092"}, "topic": "t", **fields})
    )


def _per_call(fn: Callable[[], object], budget: float = 0.5) -> float:
    number = max(1, int(budget / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=7)) / number


def main() -> None:
    body = _body()
    headers = (TextEntry("content-type", "application/json"),)
    routes = {
        "no jsonkey": _route(),
        "jsonkey user.id": _route(jsonkey="user.id"),
        "jsonkey user.id || id": _route(jsonkey="user.id || id"),
    }
    print(f"build_record, {len(body)} B pretty-printed JSON body, {core.describe()}")
    for label, config in routes.items():
        routing: Routing = route_request(config, headers)
        seconds = _per_call(lambda c=config, r=routing: build_record(c, r, body))  # type: ignore[misc]
        print(f"  {label:<24}{seconds * 1e6:>8.2f} µs")
    document = parse(body)
    print("the evaluation alone, on the parsed body:    ParsedResult.search   JsonKey.search")
    for source in ("user.id", "user.id || id"):
        before = jmespath.compile(source)
        after = JsonKey(source)
        assert before.search(document) == after.search(document)  # the same key, or no figure
        old = _per_call(partial(before.search, document))
        new = _per_call(partial(after.search, document))
        print(f"  {source:<42}{old * 1e6:>12.2f} µs{new * 1e6:>14.2f} µs")


if __name__ == "__main__":
    main()
