"""Proxy a request to a route's upstream, as nginx's ``proxy_pass`` in APISIX does (minimally).

One connection per request (``Connection: close``), round-robin over nodes by weight, the
``X-Forwarded-*`` / ``X-Real-IP`` headers APISIX's template sets, hop-by-hop headers dropped.
A refused connection is 502 and a timeout 504, with nginx's HTML pages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from harness.headers import all_headers
from harness.http11 import (
    STREAM_LIMIT,
    Headers,
    HTTPError,
    Response,
    read_response,
    serialize_request,
)
from harness.routes import Upstream

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 6.0
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    target: str
    headers: Headers
    body: bytes
    client_host: str
    remote_addr: str
    server_port: int


class UpstreamFailure(Exception):
    """nginx could not get an answer: ``status`` is 502 or 504."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Balancer:
    """Weighted round-robin per upstream (keyed by the node list)."""

    def __init__(self) -> None:
        self._cycles: dict[tuple[tuple[str, int, int], ...], Iterator[tuple[str, int]]] = {}

    def pick(self, upstream: Upstream) -> tuple[str, int]:
        cycle = self._cycles.get(upstream.nodes)
        if cycle is None:
            expanded = [(h, p) for h, p, w in upstream.nodes for _ in range(max(w, 0))]
            if not expanded:
                raise UpstreamFailure(502, "no upstream node has a positive weight")
            cycle = self._cycles[upstream.nodes] = itertools.cycle(expanded)
        return next(cycle)


async def proxy(upstream: Upstream, node: tuple[str, int], request: UpstreamRequest) -> Response:
    """Send ``request`` to ``node`` and return its answer (hop-by-hop headers removed)."""
    host, port = node
    if upstream.pass_host == "node":
        host_header = f"{host}:{port}" if port != 80 else host
    elif upstream.pass_host == "rewrite" and upstream.upstream_host:
        host_header = upstream.upstream_host
    else:
        host_header = request.client_host
    headers = [(n, v) for n, v in request.headers if n.lower() not in _HOP_BY_HOP | {"host"}]
    headers.insert(0, ("Host", host_header))
    forwarded_for = ", ".join(
        [*all_headers(request.headers, "x-forwarded-for"), request.remote_addr]
    )
    headers = [h for h in headers if not h[0].lower().startswith(("x-forwarded-", "x-real-ip"))]
    headers += [
        ("X-Real-IP", request.remote_addr),
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", request.client_host.rsplit(":", 1)[0]),
        ("X-Forwarded-Port", str(request.server_port)),
    ]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=STREAM_LIMIT), CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        raise UpstreamFailure(502, f"connect() to {host}:{port} failed: {exc}") from exc
    try:
        writer.write(
            serialize_request(request.method, request.target, tuple(headers), request.body)
        )
        await writer.drain()
        answer = await asyncio.wait_for(
            read_response(reader, head=request.method == "HEAD"), upstream.timeout_s
        )
    except TimeoutError as exc:
        raise UpstreamFailure(504, f"upstream {host}:{port} timed out") from exc
    except (OSError, EOFError, HTTPError) as exc:
        raise UpstreamFailure(502, f"upstream {host}:{port} failed: {exc!r}") from exc
    finally:
        writer.close()
    kept = tuple((n, v) for n, v in answer.headers if n.lower() not in _HOP_BY_HOP)
    return Response(answer.status, kept, answer.body)
