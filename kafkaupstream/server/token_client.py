"""A worker's end of the parent's token service (design: ``token_service.py``).

Requests carry an id so that several connections' lookups can be in flight at once. Uses served
from the local cache are batched and sent once per flush interval. When the channel closes the
parent is gone: pending and later requests fail with :class:`StoreUnavailable` and ``on_lost``
runs (the worker shuts down; with prctl's parent-death signal it is usually killed first).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from kafkaupstream.logs import log_event
from kafkaupstream.server.confs import ChangeListener, ConfList, StoreUnavailable
from kafkaupstream.server.token_wire import (
    Message,
    MessageBuffer,
    WireError,
    confs_to_wire,
    encode,
    lease_from_wire,
)
from kafkaupstream.server.tokens import Lease

log = logging.getLogger(__name__)

#: The parent answers in microseconds; this only bounds a wedged parent.
DEFAULT_TIMEOUT_S = 5.0
#: Uses are reported at most this often; a tenth of a second keeps the accepted race small.
MAX_FLUSH_EVERY_S = 0.1
#: How often a worker tells its parent its event loop still runs (see ``supervisor.py``).
HEARTBEAT_EVERY_S = 1.0


def flush_interval(ttl_s: float) -> float:
    """How long a use may wait before the registry hears of it: small against the TTL."""
    return min(MAX_FLUSH_EVERY_S, ttl_s / 50)


class RemoteTokenStore(asyncio.Protocol):
    """:class:`~kafkaupstream.server.confs.TokenStore` over a socketpair to the parent."""

    def __init__(
        self,
        sock: socket.socket,
        ttl_s: float,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self._sock = sock
        self._timeout_s = timeout_s
        self._flush_every_s = flush_interval(ttl_s)
        #: Called once the channel is gone (the worker sets it to its shutdown).
        self.on_lost = on_lost
        self._listeners: list[ChangeListener] = []
        self._buffer = MessageBuffer()
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 1
        self._uses: dict[int, float] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._loop.create_unix_connection(lambda: self, sock=self._sock)

    # --- TokenStore ---------------------------------------------------------------------------

    async def register(self, key: str, confs: ConfList) -> Lease[ConfList]:
        reply = await self._request({"op": "register", "key": key, "confs": confs_to_wire(confs)})
        lease = lease_from_wire(reply.get("lease"))
        if lease is None:
            raise StoreUnavailable("the token service answered a register without a token")
        return lease

    async def lookup(self, token: int) -> Lease[ConfList] | None:
        reply = await self._request({"op": "lookup", "token": token})
        return lease_from_wire(reply.get("lease"))

    def touch(self, token: int, used_at: float) -> None:
        self._uses[token] = used_at
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self._flush_every_s, self.flush)

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    # --- lifecycle ----------------------------------------------------------------------------

    def announce_ready(self, pid: int) -> None:
        """Tell the parent this worker accepts connections (it then counts as started), then
        send a heartbeat every second: one the parent misses for long means a frozen loop."""
        self._write({"op": "ready", "pid": pid})
        self._beat()

    def _beat(self) -> None:
        self._write({"op": "beat"})
        if self._loop is not None and self._transport is not None:
            self._heartbeat = self._loop.call_later(HEARTBEAT_EVERY_S, self._beat)

    def flush(self) -> None:
        """Send the batched uses now."""
        self._flush_handle = None
        if self._uses:
            uses = [[token, used_at] for token, used_at in self._uses.items()]
            self._uses.clear()
            self._write({"op": "touch", "uses": uses})

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._buffer.feed(data)
        except WireError as exc:
            log_event(log, logging.ERROR, "token_service_garbled", cause=str(exc))
            assert self._transport is not None
            self._transport.abort()
            return
        for message in messages:
            self._dispatch(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(StoreUnavailable("the parent process closed the channel"))
        self._pending.clear()
        if self.on_lost is not None:
            self.on_lost()

    # --- internals ----------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        if message.get("op") == "changed":
            for listener in self._listeners:
                listener(int(message["token"]))
            return
        future = self._pending.pop(message.get("id", -1), None)
        if future is not None and not future.done():
            future.set_result(message)

    async def _request(self, message: Message) -> Message:
        if self._transport is None or self._loop is None:
            raise StoreUnavailable("no channel to the parent process")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[request_id] = future
        self._write({**message, "id": request_id})
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            raise StoreUnavailable(f"no answer from the parent in {self._timeout_s} s") from None
        finally:
            self._pending.pop(request_id, None)

    def _write(self, message: Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(message))
