"""Where replayed requests go: a gateway (or APISIX) over HTTP, or a runner over the RPC.

Over HTTP each request gets its own connection (``Connection: close``, as the gateway's upstream
client does), so a request that makes the server close cannot disturb the next one. Over the RPC
the gateway's pipeline runs without its HTTP server: routing, key-auth and the fake APISIX's
ext-plugin calls, exactly what the gateway would have done with the request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Protocol

from harness.gateway import Gateway
from harness.http11 import STREAM_LIMIT, HTTPError, Request, read_response, serialize_request
from harness.replay.format import RecordedAnswer
from harness.routes import GatewayConfig


class SendError(Exception):
    """No answer: the connection failed, the server broke the protocol, or it timed out."""


class Sender(Protocol):
    #: Where requests go, for the summary.
    description: str

    async def send(
        self, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> RecordedAnswer: ...

    async def close(self) -> None: ...


class HTTPSender:
    """One HTTP/1.1 connection per request to (host, port)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 60.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.description = f"http://{host}:{port}"

    async def send(
        self, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> RecordedAnswer:
        if not any(n.lower() == "host" for n, _ in headers):
            headers = (("Host", f"{self.host}:{self.port}"), *headers)
        try:
            return await asyncio.wait_for(
                self._exchange(method, target, headers, body), self.timeout_s
            )
        except TimeoutError:
            raise SendError(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, EOFError, HTTPError, asyncio.IncompleteReadError) as exc:
            raise SendError(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(
        self, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> RecordedAnswer:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=STREAM_LIMIT)
        try:
            writer.write(serialize_request(method, target, headers, body))
            await writer.drain()
            while True:  # an `Expect: 100-continue` recorded with the request gets its 100 first
                answer = await read_response(reader, head=method == "HEAD")
                if not 100 <= answer.status < 200:
                    return RecordedAnswer(answer.status, answer.headers, answer.body)
        finally:
            writer.close()

    async def close(self) -> None:
        return None


class PipelineSender:
    """The gateway's pipeline in process, talking to the runner on ``runner_socket``."""

    def __init__(
        self,
        routes: GatewayConfig | Iterable[str | os.PathLike[str]],
        runner_socket: str,
        *,
        timeout_s: float = 60.0,
    ) -> None:
        self._gateway = Gateway(routes, runner_socket, rpc_read_timeout_s=timeout_s)
        self.description = f"rpc unix:{self._gateway.runner_socket}"

    async def send(
        self, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> RecordedAnswer:
        request = Request(method, target, "HTTP/1.1", headers, body)
        try:
            answer = await self._gateway.handle(request)
        except Exception as exc:  # the gateway answers 500 here; a replay wants the cause
            raise SendError(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
        return RecordedAnswer(answer.status, answer.headers, answer.body)

    async def close(self) -> None:
        await self._gateway.close()
