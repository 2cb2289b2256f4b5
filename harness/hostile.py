"""A hostile APISIX: raw bytes on the runner's socket, what they must get back, /proc figures.

:func:`expected_replies` is the oracle: it runs a byte stream through the sans-IO codec in the
runner's role, answering each request the way the runner's state machine does, and says which
reply frames the real runner owes (one per request, then an ``RPC_ERROR`` if the bytes break the
protocol). :func:`exchange_raw` sends the same bytes to a real runner, half-closes, and collects
every frame until the runner closes (or a deadline passes, which is a hang).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kafkaupstream.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    Message,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    Role,
)

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a runner owes for a stream: the requests it must answer, then maybe an error."""

    requests: tuple[Message, ...]
    error: ErrorCode | None
    #: The error's text, for assertion messages.
    reason: str = ""
    error_type: type[ProtocolError] | None = None

    def allowed_reply_types(self) -> list[frozenset[int]]:
        """Per request, the frame types its answer may have (0: RPC_ERROR, e.g. unknown token)."""
        return [_REPLY_TYPES[type(request)] for request in self.requests]


_REPLY_TYPES: dict[type, frozenset[int]] = {
    PrepareConfRequest: frozenset({MessageType.PREPARE_CONF}),
    HTTPReqCallRequest: frozenset({MessageType.RPC_ERROR, MessageType.HTTP_REQ_CALL}),
    HTTPRespCallRequest: frozenset({MessageType.RPC_ERROR, MessageType.HTTP_RESP_CALL}),
}


def _answer(request: Message) -> Message:
    if isinstance(request, PrepareConfRequest):
        return PrepareConfResponse(1)
    if isinstance(request, HTTPReqCallRequest):
        return HTTPReqCallResponse(request.id)
    assert isinstance(request, HTTPRespCallRequest)
    return HTTPRespCallResponse(request.id)


def expected_replies(stream: bytes, *, eof: bool = True) -> Expectation:
    """Run ``stream`` (then EOF) through a runner-side Connection that answers every request."""
    return converse([stream], eof=eof)


def converse(
    chunks: Iterable[bytes], *, eof: bool = True, conn: Connection | None = None
) -> Expectation:
    """:func:`expected_replies` with the bytes arriving in ``chunks``, events pulled after each.

    Pass ``conn`` (a runner-side Connection) to inspect its state afterwards.
    """
    conn = Connection(Role.RUNNER) if conn is None else conn
    requests: list[Message] = []
    feeds = [chunk for chunk in chunks if chunk]
    if eof:
        feeds.append(b"")  # receive_data(b"") is the peer's EOF
    for chunk in feeds:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                return Expectation(tuple(requests), exc.error_code, str(exc), type(exc))
            if isinstance(event, ConnectionClosed):
                return Expectation(tuple(requests), None)
            if event is NEED_DATA:
                break
            requests.append(event)
            conn.send(_answer(event))
    return Expectation(tuple(requests), None)


@dataclass(slots=True)
class RawResult:
    """Every frame a runner sent on one connection, and how the connection ended."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    #: "eof", "reset" (ECONNRESET: the runner closed with our bytes unread) or "timeout".
    ending: str = ""
    #: Bytes after the last whole frame (a truncated frame from the runner: always a bug).
    trailing: bytes = b""


def exchange_raw(path: str, stream: bytes, *, timeout: float = 5.0) -> RawResult:
    """Send ``stream``, half-close, read until the runner closes; ``timeout`` bounds it all."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    result = RawResult()
    with connect_unix(path, timeout) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the runner refused the stream and closed before taking all of it
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.ending = "timeout"
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                result.ending = "timeout"
                break
            except ConnectionResetError:
                result.ending = "reset"
                break
            if not chunk:
                result.ending = "eof"
                break
            received += chunk
    pos = 0
    while len(received) - pos >= 4:
        word = _HEADER.unpack_from(received, pos)[0]
        end = pos + 4 + (word & 0xFFFFFF)
        if end > len(received):
            break
        result.frames.append((word >> 24, bytes(received[pos + 4 : end])))
        pos = end
    result.trailing = bytes(received[pos:])
    return result


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` holds (Linux /proc)."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def connect_unix(path: str, timeout: float = 5.0) -> socket.socket:
    """A connected socket with ``timeout``; waits while the listen backlog is full.

    A unix socket with a timeout is non-blocking underneath, and its connect() fails with
    EAGAIN (not EINPROGRESS) when the backlog is full: retried here until the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
            continue
        except BaseException:
            sock.close()
            raise
        return sock


def good_exchange(path: str, *, timeout: float = 5.0) -> float:
    """A PrepareConf and an HTTPReqCall on one fresh connection, as APISIX would send them.

    Returns the seconds it took; raises AssertionError unless both got their proper answer.
    """
    started = time.monotonic()
    codec = Connection(Role.APISIX)
    with connect_unix(path, timeout) as sock:
        sock.sendall(codec.send(PrepareConfRequest((), "route#health#x#1")))
        reply = _receive(sock, codec)
        assert isinstance(reply, PrepareConfResponse), reply
        sock.sendall(codec.send(HTTPReqCallRequest(id=9, conf_token=reply.conf_token)))
        answer = _receive(sock, codec)
        assert answer == HTTPReqCallResponse(9), answer
    return time.monotonic() - started


def _receive(sock: socket.socket, codec: Connection) -> object:
    while (event := codec.next_event()) is NEED_DATA:
        codec.receive_data(sock.recv(65536))
    return event
