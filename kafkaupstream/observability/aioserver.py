"""The metrics listener of a single-process runner (``--workers 1``), on its asyncio loop.

No fork ever follows, so answers are built on a thread (``asyncio.to_thread``) to keep the loop
serving APISIX while a scrape reads the metrics files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kafkaupstream.observability.http import (
    BIND_RETRY_S,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    Address,
    BadRequest,
    Responder,
    bad_request,
    bind,
    describe,
    encode_response,
    internal_error,
    parse_head,
)

log = logging.getLogger(__name__)


class AsyncHttpServer:
    def __init__(self, address: Address, respond: Responder) -> None:
        self._address = address
        self._respond = respond
        self._server: asyncio.AbstractServer | None = None
        self._binder: asyncio.Task[None] | None = None
        self._active = 0

    def start(self) -> None:
        """Bind now, or keep trying every second (the port may still be a previous runner's)."""
        self._binder = asyncio.get_running_loop().create_task(self._bind_until_bound())

    async def close(self) -> None:
        if self._binder is not None:
            self._binder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._binder
        if self._server is not None:
            self._server.close()

    async def _bind_until_bound(self) -> None:
        failure: str | None = None
        while True:
            try:
                sock = bind(self._address)
            except OSError as exc:
                if failure != str(exc):
                    failure = str(exc)
                    log.warning(
                        "event=metrics_listen_failed address=%s:%d cause=%r action=retry_every_%gs",
                        *self._address,
                        failure,
                        BIND_RETRY_S,
                    )
                await asyncio.sleep(BIND_RETRY_S)
                continue
            self._server = await asyncio.start_server(self._serve, sock=sock)
            log.info("event=metrics_listening address=%s", describe(sock))
            return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= MAX_CONNECTIONS:
            writer.close()
            return
        self._active += 1
        try:
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                data = await self._answer(reader)
                if data:
                    writer.write(data)
                    await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            self._active -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        buffer = b""
        try:
            while (head := parse_head(buffer)) is None:
                chunk = await reader.read(8192)
                if not chunk:
                    return b""
                buffer += chunk
        except BadRequest:
            return bad_request()
        method, target = head
        try:
            response = await asyncio.to_thread(self._respond, method, target)
        except Exception:
            log.exception("event=metrics_request_failed path=%r", target[:100])
            return internal_error()
        return encode_response(response, head_only=method == "HEAD")
