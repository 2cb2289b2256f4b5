"""Which recorded values are secrets, and how they are taken out of (and put back into) requests.

A recording is meant to be shared (attached to an issue, kept in ``tests/data``), so credentials
are removed by default: the headers below and any whose name contains ``token``, ``secret`` or
``password`` get a null value, and query parameters with such names (key-auth's ``?apikey=``)
an empty one, listed in ``redacted_query``. Replay puts back what ``--secret NAME=VALUE`` gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import quote

from harness.replay.format import Exchange, Headers, RecordedAnswer, RecordedRequest

SECRET_NAMES = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "apikey", "x-api-key"}
)
SECRET_PARTS = ("token", "secret", "password")


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(part in lowered for part in SECRET_PARTS)


def redact_headers(headers: Headers) -> Headers:
    return tuple((n, None if is_secret(n) else v) for n, v in headers)


def redact_query(query: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The query with secret parameters' values emptied (other bytes untouched), and their names."""
    if not query:
        return query, ()
    parts, names = [], []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and is_secret(name):
            names.append(name)
            part = f"{name}="
        parts.append(part)
    return "&".join(parts), tuple(dict.fromkeys(names))


def redact(exchange: Exchange) -> Exchange:
    req, ans = exchange.request, exchange.answer
    query, names = redact_query(req.query)
    request = dataclasses.replace(
        req,
        headers=redact_headers(req.headers),
        query=query,
        redacted_query=tuple(dict.fromkeys((*req.redacted_query, *names))),
    )
    answer = RecordedAnswer(ans.status, redact_headers(ans.headers), ans.body)
    return dataclasses.replace(exchange, request=request, answer=answer)


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    """A request ready to send: secrets put back where given, other redacted headers left out."""

    target: str
    headers: tuple[tuple[str, str], ...]
    #: Redacted values no ``--secret`` supplied.
    missing: tuple[str, ...]


def restore(request: RecordedRequest, secrets: Mapping[str, str]) -> Restored:
    by_name = {n.lower(): v for n, v in secrets.items()}
    headers: list[tuple[str, str]] = []
    missing: list[str] = []
    for name, value in request.headers:
        if value is None:
            value = by_name.get(name.lower())
            if value is None:
                missing.append(name)
                continue
        headers.append((name, value))
    query = request.query
    if request.redacted_query and query:
        parts = []
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            if eq and not value and name in request.redacted_query:
                secret = by_name.get(name.lower())
                if secret is None:
                    missing.append(f"?{name}")
                else:
                    part = f"{name}={quote(secret, safe='')}"
            parts.append(part)
        query = "&".join(parts)
    target = request.path if query is None else f"{request.path}?{query}"
    return Restored(target, tuple(headers), tuple(missing))
