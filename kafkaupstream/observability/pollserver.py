"""The metrics listener inside the multi-worker parent's poll loop.

The parent forks workers at start and again whenever one dies, so it must hold no thread and no
lock another thread could own at a fork: the listener and its connections are non-blocking
sockets on the parent's own selector, served between its token-service messages. A scrape
blocks the loop while the answer is built (reading a few small files, a few milliseconds).
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable

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
_RECV_SIZE = 8192


class _Connection:
    """One scrape: read the head, answer, close."""

    def __init__(self, server: PollHttpServer, sock: socket.socket, deadline: float) -> None:
        self.server = server
        self.sock = sock
        self.deadline = deadline
        self._in = b""
        self._out = b""

    def __call__(self, events: int) -> None:
        if events & selectors.EVENT_READ and not self._out:
            self._read()
        if self._out:
            self._write()

    def _read(self) -> None:
        try:
            data = self.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.server.drop(self)
            return
        self._in += data
        try:
            head = parse_head(self._in)
        except BadRequest:
            self._answer(bad_request())
            return
        if head is not None:
            method, target = head
            self._answer(self.server.answer(method, target))

    def _answer(self, data: bytes) -> None:
        self._out = data
        self.server.watch_writes(self)

    def _write(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self.server.drop(self)
            return
        self._out = self._out[sent:]
        if not self._out:
            self.server.drop(self)


class PollHttpServer:
    """Registers its sockets on ``selector`` with a callable as data: call it with the events."""

    def __init__(
        self,
        address: Address,
        selector: selectors.BaseSelector,
        respond: Responder,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._selector = selector
        self._respond = respond
        self._clock = clock
        self._listener: socket.socket | None = None
        self._next_bind = 0.0
        self._bind_error: str | None = None
        self._connections: set[_Connection] = set()

    def sockets(self) -> list[socket.socket]:
        """Every socket of ours (a forked worker closes them)."""
        listener = [self._listener] if self._listener is not None else []
        return listener + [c.sock for c in self._connections]

    def timeout(self, now: float) -> float | None:
        """Seconds until :meth:`tick` has something to do; None: nothing pending."""
        due = [c.deadline for c in self._connections]
        if self._listener is None:
            due.append(self._next_bind)
        return max(0.0, min(due) - now) if due else None

    def tick(self, now: float) -> None:
        """Bind if not bound yet (the port may still be a previous runner's); drop idle scrapes."""
        if self._listener is None and now >= self._next_bind:
            self._try_bind(now)
        for connection in [c for c in self._connections if c.deadline <= now]:
            self.drop(connection)

    def close(self) -> None:
        for connection in list(self._connections):
            self.drop(connection)
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    # --- called by the selector callbacks ------------------------------------------------------

    def answer(self, method: str, target: str) -> bytes:
        try:
            response = self._respond(method, target)
        except Exception:
            log.exception("event=metrics_request_failed path=%r", target[:100])
            return internal_error()
        return encode_response(response, head_only=method == "HEAD")

    def watch_writes(self, connection: _Connection) -> None:
        self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)

    def drop(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self._selector.unregister(connection.sock)
            connection.sock.close()

    def _accept(self, _events: int) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next event
                log.warning("event=metrics_accept_failed cause=%r", str(exc))
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            connection = _Connection(self, sock, self._clock() + IDLE_TIMEOUT_S)
            self._connections.add(connection)
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _try_bind(self, now: float) -> None:
        try:
            self._listener = bind(self._address)
        except OSError as exc:
            self._next_bind = now + BIND_RETRY_S
            if self._bind_error != str(exc):  # once per cause, not once a second
                self._bind_error = str(exc)
                log.warning(
                    "event=metrics_listen_failed address=%s:%d cause=%r action=retry_every_%gs",
                    *self._address,
                    str(exc),
                    BIND_RETRY_S,
                )
            return
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        log.info("event=metrics_listening address=%s", describe(self._listener))
