"""The metrics listener: just enough HTTP/1.x for ``/metrics``, ``/health`` and ``/ready``.

One request per connection, then close; heads over 8 KiB and connections idle for 5 s are dropped.
:class:`HttpServer` is non-blocking sockets on a selector the caller runs, with no thread and no
lock of its own, because the multi-worker parent that serves it forks workers at any time and
must stay fork-safe: it runs on the parent's own poll loop, between token-service messages. A
single-process runner (``--workers 1``) never forks, so it runs the same server on a selector of
its own in a daemon thread (:class:`HttpThread`), and a scrape never holds up its event loop.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from kafkaupstream.logs import log_event

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
IDLE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
#: How often a listener that could not bind tries again (the port of a runner being replaced).
BIND_RETRY_S = 1.0

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


#: What serves one request: (method, target) -> the answer.
Responder = Callable[[str, str], Response]


class BadRequest(ValueError):
    """Not an HTTP/1.x request head (or too long)."""


def parse_address(value: str) -> Address:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6); port 0 picks a free one. Raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"the port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"the port must be 0-65535, got {port}")
    return host, port


def bind(address: Address) -> socket.socket:
    """A non-blocking listening TCP socket on ``address``; raises OSError."""
    host, port = address
    family, kind, proto, _name, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(MAX_CONNECTIONS)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_head(buffer: bytes) -> tuple[str, str] | None:
    """(method, target) once ``buffer`` holds a whole head; None while it may still come."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest("request head too long")
        return None
    line = buffer[: buffer.find(b"\r\n")]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest("not an HTTP/1.x request line")
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request line is not ASCII") from None


def encode_response(response: Response, *, head_only: bool = False) -> bytes:
    reason = HTTPStatus(response.status).phrase
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + response.body


def bad_request() -> bytes:
    return encode_response(Response(400, "text/plain", b"bad request\n"))


def internal_error() -> bytes:
    return encode_response(Response(500, "text/plain", b"internal error; see the runner log\n"))


_RECV_SIZE = 8192


class _Connection:
    """One scrape: read the head, answer, close."""

    def __init__(self, server: HttpServer, sock: socket.socket, deadline: float) -> None:
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


class HttpServer:
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
            log_event(
                log, logging.ERROR, "metrics_request_failed", exc_info=True, path=target[:100]
            )
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
                log_event(log, logging.WARNING, "metrics_accept_failed", cause=str(exc))
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
                log_event(
                    log,
                    logging.WARNING,
                    "metrics_listen_failed",
                    address=f"{self._address[0]}:{self._address[1]}",
                    cause=str(exc),
                    action="retry",
                    retry_s=BIND_RETRY_S,
                )
            return
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        log_event(log, logging.INFO, "metrics_listening", address=describe(self._listener))


class HttpThread:
    """:class:`HttpServer` on a selector of its own in a daemon thread, for a process never forking.

    ``respond`` runs on this thread: it reads the metrics files while the event loop serves APISIX.
    """

    def __init__(self, address: Address, respond: Responder) -> None:
        self._selector = selectors.DefaultSelector()
        self._server = HttpServer(address, self._selector, respond)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop serving; the listener is closed by the thread before it ends."""
        self._stopping = True
        self._wake_w.send(b"\0")
        self._thread.join(timeout)
        self._wake_w.close()

    def _run(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                self._server.tick(time.monotonic())
                for key, events in self._selector.select(self._server.timeout(time.monotonic())):
                    if key.data is not None:
                        key.data(events)
        finally:
            self._server.close()
            self._selector.close()
            self._wake_r.close()
