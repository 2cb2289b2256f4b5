"""A minimal keep-alive HTTP/1.1 client on asyncio streams: one POST at a time per connection."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from harness.load.bodies import BodyTemplate
from harness.load.rpc import RPCFailure

_MAX_HEAD = 64 * 1024


class HTTPClient:
    """POSTs the run's bodies to one URL; reconnects when the server closes or a request fails."""

    def __init__(
        self, url: str, bodies: BodyTemplate, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must be http://host[:port]/path, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            f"Content-Type: {bodies.content_type}",
            f"Content-Length: {bodies.size}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._pieces = (head + bodies.pieces[0], *bodies.pieces[1:])
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, n: int) -> int:
        """Send request ``n`` and read the whole answer; its status. Raises RPCFailure."""
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            self._writer.write((b"%010d" % n).join(self._pieces))
            status, keep_alive = await _read_response(self._reader)
        except RPCFailure:
            self.close()
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise RPCFailure("http_io", f"{type(exc).__name__}: {exc}") from exc
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the connection stays open, after consuming the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise RPCFailure("http_malformed", "response head too large")
    status_line, _, fields = head.partition(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise RPCFailure("http_malformed", f"status line {status_line[:60]!r}")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for line in fields.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive
    if chunked:
        await _skip_chunked(reader)
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        keep_alive = False
    return status, keep_alive


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)
