"""Just enough HTTP/1.x for a metrics listener: one request per connection, then close.

Sans-IO: :func:`parse_head` reads a request head from bytes, :func:`encode_response` makes the
answer's bytes; the parent's poll loop (``pollserver.py``) and the single process's asyncio loop
(``aioserver.py``) move them. Heads over 8 KiB and connections idle for 5 s are dropped.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

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
