"""A small HTTP/1.1 reader and writer over asyncio streams, strict where nginx is strict.

Requests keep headers in order, with duplicates and the case the client sent. Bodies arrive with
``Content-Length`` or chunked; ``Expect: 100-continue`` is answered before the body is read. Every
refusal is an :class:`HTTPError` carrying the status nginx would answer with.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from harness.headers import all_headers, first_header

Headers = tuple[tuple[str, str], ...]

#: APISIX refuses ExtraInfo answers over one frame (16,777,215 bytes): bodies above 16 MiB are 413.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: nginx's ``large_client_header_buffers 4 8k``: one line may not exceed 8 KiB.
MAX_LINE_BYTES = 8 * 1024
MAX_HEADER_SECTION_BYTES = 64 * 1024
STREAM_LIMIT = MAX_HEADER_SECTION_BYTES

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_METHOD = re.compile(rb"^[A-Z_-]+$")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_NO_BODY_STATUSES = frozenset({204, 304})

#: nginx's own reason phrases where they differ from the RFC's (they appear in the status line
#: and in the built-in error pages).
_NGINX_REASONS = {
    302: "Moved Temporarily",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    503: "Service Temporarily Unavailable",
}


class HTTPError(Exception):
    """A request nginx would refuse: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {reason(status)}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the client sent it (header names keep their case, duplicates kept)."""

    method: str
    target: str
    version: str
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        return all_headers(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for v in self.header_values("connection") for t in v.split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True, slots=True)
class Response:
    """An answer to write (``Content-Length`` and ``Connection`` are added by :func:`serialize`)."""

    status: int
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        return all_headers(self.headers, name)


def reason(status: int) -> str:
    if status in _NGINX_REASONS:
        return _NGINX_REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


#: Statuses nginx has a built-in page for; any other status with no body gets no body.
_NGINX_PAGES = frozenset(
    {
        301,
        302,
        303,
        307,
        308,
        400,
        401,
        402,
        403,
        404,
        405,
        406,
        408,
        409,
        410,
        411,
        412,
        413,
        414,
        415,
        416,
        421,
        429,
        500,
        501,
        502,
        503,
        504,
        505,
        507,
    }
)


def error_page(status: int) -> bytes:
    """nginx's built-in HTML page for ``status`` as APISIX (OpenResty) sends it, or b""."""
    if status not in _NGINX_PAGES:
        return b""
    title = f"{status} {reason(status)}".strip()
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n"
        "<hr><center>openresty</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


# --- reading ------------------------------------------------------------------------------------


async def _read_line(reader: asyncio.StreamReader, too_long: HTTPError) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise too_long from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError from exc
        raise HTTPError(400, "connection closed in the middle of a line") from exc
    if len(line) > MAX_LINE_BYTES:
        raise too_long
    return line.rstrip(b"\r\n") if line.endswith(b"\r\n") else line[:-1]


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, Headers]:
    """The start line and the header fields; EOFError on a clean close before the first byte."""
    start = await _read_line(reader, HTTPError(414, "request line too long"))
    while not start:  # RFC 9112 2.2: ignore empty lines before the request line
        start = await _read_line(reader, HTTPError(414, "request line too long"))
    headers: list[tuple[str, str]] = []
    size = len(start)
    too_big = HTTPError(400, "Request Header Or Cookie Too Large")
    while True:
        try:
            line = await _read_line(reader, too_big)
        except EOFError as exc:
            raise HTTPError(400, "connection closed inside the header section") from exc
        if not line:
            return start, tuple(headers)
        size += len(line)
        if size > MAX_HEADER_SECTION_BYTES:
            raise too_big
        headers.append(_parse_field(line))


def _parse_field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HTTPError(400, "obsolete line folding")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.match(name):
        raise HTTPError(400, f"invalid header line {line[:60]!r}")
    # The codec's convention (UTF-8 + surrogateescape): the runner gets exactly the bytes sent.
    return _text(name), _text(value.strip(b" \t"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HTTPError(400, f"malformed request line {line[:60]!r}")
    method, target, version = parts
    if not _METHOD.match(method):
        raise HTTPError(400, f"invalid method {method[:20]!r}")
    match = _VERSION.match(version)
    if not match:
        raise HTTPError(400, f"invalid protocol {version[:20]!r}")
    if match.group(1) != b"1":
        raise HTTPError(505, f"unsupported protocol {version.decode('latin-1')}")
    if any(b < 0x21 or b == 0x7F for b in target):
        raise HTTPError(400, "control characters in the request target")
    return method.decode(), _text(target), version.decode()


def body_framing(headers: Headers, version: str) -> tuple[bool, int | None]:
    """(chunked, content_length) as nginx decides them, refusing what it refuses."""
    te = all_headers(headers, "transfer-encoding")
    cl = all_headers(headers, "content-length")
    if te:
        if cl:
            raise HTTPError(400, 'client sent "Content-Length" and "Transfer-Encoding"')
        if version == "HTTP/1.0":
            raise HTTPError(400, 'client sent "Transfer-Encoding" with HTTP/1.0')
        if len(te) > 1 or te[0].strip().lower() != "chunked":
            raise HTTPError(501, f"unsupported transfer-encoding {', '.join(te)!r}")
        return True, None
    if not cl:
        return False, None
    if len(cl) > 1:
        raise HTTPError(400, 'client sent duplicate header line "Content-Length"')
    if not cl[0].isdigit() or not cl[0].isascii():
        raise HTTPError(400, f"invalid Content-Length {cl[0][:30]!r}")
    return False, int(cl[0])


async def read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = bytearray()
    bad_size = HTTPError(400, "chunk size line too long")
    while True:
        try:
            line = await _read_line(reader, bad_size)
        except EOFError as exc:
            raise HTTPError(400, "connection closed inside a chunked body") from exc
        size_text = line.split(b";", 1)[0].strip()
        try:
            if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise ValueError
            size = int(size_text, 16)
        except ValueError as exc:
            raise HTTPError(400, f"invalid chunk size {size_text[:20]!r}") from exc
        if size == 0:
            break
        if len(body) + size > max_bytes:
            raise HTTPError(413, f"chunked body over {max_bytes} bytes")
        body += await _read_exactly(reader, size)
        if await _read_exactly(reader, 2) != b"\r\n":
            raise HTTPError(400, "chunk data not followed by CRLF")
    while True:  # trailer fields: read and dropped, as nginx does
        try:
            if not await _read_line(reader, bad_size):
                return bytes(body)
        except EOFError as exc:
            raise HTTPError(400, "connection closed inside the chunked trailer") from exc


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise HTTPError(400, f"body ended after {len(exc.partial)} of {size} bytes") from exc


async def read_request(
    reader: asyncio.StreamReader,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    send_continue: Callable[[], Awaitable[None]] | None = None,
) -> Request:
    """Read one whole request; EOFError when the peer closed cleanly between requests."""
    start, headers = await read_head(reader)
    method, target, version = parse_request_line(start)
    hosts = all_headers(headers, "host")
    if version == "HTTP/1.1" and not hosts:
        raise HTTPError(400, 'client sent HTTP/1.1 request without "Host" header')
    if len(hosts) > 1:
        raise HTTPError(400, "client sent duplicate host header")
    chunked, length = body_framing(headers, version)
    if length is not None and length > max_body_bytes:
        raise HTTPError(413, f"Content-Length {length} over {max_body_bytes} bytes")
    expects = any(n.lower() == "expect" and v.strip().lower() == "100-continue" for n, v in headers)
    if expects and version == "HTTP/1.1" and (chunked or length) and send_continue:
        await send_continue()
    if chunked:
        body = await read_chunked(reader, max_body_bytes)
    elif length:
        body = await _read_exactly(reader, length)
    else:
        body = b""
    return Request(method, target, version, headers, body)


async def read_response(
    reader: asyncio.StreamReader, *, head: bool, max_body_bytes: int = 1 << 30
) -> Response:
    """Read an upstream's answer (the connection is ``Connection: close``, so EOF ends a body)."""
    start, headers = await read_head(reader)
    parts = start.split(b" ", 2)
    if len(parts) < 2 or not _VERSION.match(parts[0]) or not parts[1].isdigit():
        raise HTTPError(502, f"upstream sent an invalid status line {start[:60]!r}")
    status = int(parts[1])
    if head or status in _NO_BODY_STATUSES or 100 <= status < 200:
        return Response(status, headers)
    chunked, length = body_framing(headers, "HTTP/1.1")
    if chunked:
        body = await read_chunked(reader, max_body_bytes)
    elif length is not None:
        body = await _read_exactly(reader, length)
    else:
        body = await reader.read(max_body_bytes)
    return Response(status, headers, body)


# --- writing ------------------------------------------------------------------------------------

#: Framing is ours to decide: these never pass from an answer's headers to the wire.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def http_date(now: float | None = None) -> str:
    return formatdate(time.time() if now is None else now, usegmt=True)


def serialize(
    response: Response,
    *,
    keep_alive: bool,
    head: bool = False,
    trailing: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Status line, ``Date``, the answer's headers in order, then ``trailing`` (e.g. ``Server``).

    The status line always says HTTP/1.1 (as nginx does, whatever the client spoke); an empty
    reason phrase keeps its separating space (RFC 9112 4).
    """
    status = response.status
    lines = [f"HTTP/1.1 {status} {reason(status)}", f"Date: {http_date()}"]
    lines.extend(f"{n}: {v}" for n, v in response.headers if _passes(n, v))
    if status not in _NO_BODY_STATUSES and status >= 200:
        lines.append(f"Content-Length: {len(response.body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines.extend(f"{n}: {v}" for n, v in trailing)
    head_bytes = _encode_head(lines)
    if head or status in _NO_BODY_STATUSES:
        return head_bytes
    return head_bytes + response.body


def serialize_request(method: str, target: str, headers: Headers, body: bytes) -> bytes:
    """A request to an upstream, always ``Connection: close`` with a ``Content-Length`` body."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{n}: {v}" for n, v in headers if _passes(n, v))
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return _encode_head(lines) + body


def _passes(name: str, value: str) -> bool:
    """Framing headers are ours; CR or LF in a field would let a value inject header lines."""
    if name.lower() in _FRAMING:
        return False
    return not any(c in "\r\n" for c in name + value)


def _encode_head(lines: Sequence[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
