"""A fake APISIX: plays the nginx side of the ext-plugin RPC as APISIX 3.x does.

What it reproduces of APISIX's ext-plugin client: a keepalive pool per worker (32 idle, reused
LIFO like cosockets), PrepareConf on a *second* connection while the first is already open, the
per-worker token lrucache (8 entries, 3600 s) in front of a shared dict (0.9 x 3600 s) and one
global prepare lock, request ids ``(worker << 22) + counter``, up to 3 attempts when the runner
says CONF_TOKEN_NOT_FOUND (flushing the shared dict and that worker's lrucache), what survives a
runner replacement (:meth:`FakeApisix.reload`, :meth:`FakeApisix.runner_exit`), at most 100 request
headers in Lua hash order, ExtraInfo answered from the request (body, vars; a body can be held
back, as a slow upload holds it),
Stop turned into an HTTP answer (status 0 -> 200, first header sets, later ones append), and 503
for any other failure. It never reaches into the runner: only bytes on the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.headers import all_headers, first_header
from kafkaupstream.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    Method,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    ReqBody,
    RespBody,
    Rewrite,
    Role,
    Stop,
    TextEntry,
    Var,
)

log = logging.getLogger(__name__)

#: APISIX's defaults (its connection pool, token caches and retry budget).
POOL_SIZE = 32
LRU_ITEMS = 8
CONF_EXPIRE_S = 3600.0
SHARED_DICT_TTL_S = 0.9 * CONF_EXPIRE_S
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 60.0
MAX_HEADERS = 100

NGINX_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    b"<hr><center>openresty</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class PluginConf:
    """One ``ext-plugin-*`` instance on a route: its conf list and what makes APISIX's key."""

    conf: tuple[tuple[str, str], ...] | None
    conf_type: str = "route"
    conf_id: str = "1"
    plugin_name: str = "ext-plugin-pre-req"
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.conf_type}#{self.conf_id}#{self.plugin_name}#{self.version}"


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What the HTTP client sent to APISIX, as APISIX would describe it to the runner."""

    method: str = "POST"
    path: str = "/"
    args: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    src_ip: bytes = b"\x7f\x00\x00\x01"
    vars: Mapping[str, bytes] = field(default_factory=dict)
    #: A slow upload: nginx reads the client's body only when the runner asks for it, so the
    #: body's ExtraInfo answer waits until this event is set (None: answered at once).
    body_ready: asyncio.Event | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class HTTPAnswer:
    """What the client gets. ``action`` is "stop", "rewrite", "continue" or "error"."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    action: str = "stop"
    rewrite: Rewrite | None = None
    error: str = ""

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        return all_headers(self.headers, name)


class RPCFailure(Exception):
    """Any failure APISIX turns into 503 (connect, send, receive, RPC error, wrong type)."""

    def __init__(self, message: str, *, token_not_found: bool = False) -> None:
        super().__init__(message)
        self.token_not_found = token_not_found


class _RPCConnection:
    """One cosocket: a stream pair plus the sans-IO codec in the APISIX role."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = Connection(Role.APISIX)

    @classmethod
    async def open(cls, path: str) -> _RPCConnection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=1 << 20), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise RPCFailure(f"failed to connect to the unix socket unix:{path}: {exc}") from exc
        return cls(reader, writer)

    async def send(self, message: object) -> None:
        try:
            self.writer.write(self.codec.send(message))  # type: ignore[arg-type]
            await self.writer.drain()
        except (OSError, ProtocolError) as exc:
            raise RPCFailure(f"failed to send RPC: {exc}") from exc

    async def receive(self, timeout: float) -> object:
        while True:
            try:
                event = self.codec.next_event()
            except ProtocolError as exc:
                raise RPCFailure(f"failed to receive RPC: {exc}") from exc
            if isinstance(event, ConnectionClosed):
                raise RPCFailure("failed to receive RPC: closed")
            if event is not NEED_DATA:
                return event
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            except TimeoutError as exc:
                raise RPCFailure("failed to receive RPC: timeout") from exc
            except OSError as exc:
                raise RPCFailure(f"failed to receive RPC: {exc}") from exc
            self.codec.receive_data(data)

    def close(self) -> None:
        self.writer.close()


class _Worker:
    """One nginx worker: its keepalive pool, id counter and token lrucache."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.counter = 0
        self.idle: list[_RPCConnection] = []
        self.lru: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def next_id(self) -> int:
        request_id = (self.worker_id << 22) + self.counter
        self.counter = (self.counter + 1) % (1 << 22)
        return request_id


class FakeApisix:
    """Drives a runner over its unix socket the way APISIX's nginx workers do."""

    def __init__(
        self,
        socket_path: str,
        *,
        workers: int = 1,
        read_timeout_s: float = READ_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.read_timeout_s = read_timeout_s
        self._workers = [_Worker(i) for i in range(workers)]
        self._next_worker = 0
        self._shared: dict[str, tuple[int, float]] = {}
        self._prepare_lock = asyncio.Lock()
        self._now = clock
        #: Observable counters for tests: how many PrepareConf RPCs and retries happened.
        self.prepare_count = 0
        self.retry_count = 0

    # --- public API ---------------------------------------------------------------------------

    async def request(
        self,
        plugin: PluginConf,
        client: ClientRequest,
        *,
        worker: int | None = None,
    ) -> HTTPAnswer:
        """Run one HTTPReqCall for ``client`` through ``plugin`` and return the client's answer."""
        if client.method.upper() not in Method.__members__:
            # APISIX's Lua builder raises on a method outside the enum: a 500, no RPC at all.
            return HTTPAnswer(500, action="error", error=f"method {client.method!r} not encodable")
        w = self._pick_worker(worker)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._http_req_call(w, plugin, client)
            except RPCFailure as exc:
                if exc.token_not_found and attempt < MAX_ATTEMPTS:
                    log.warning("refresh cache and try again")
                    self.retry_count += 1
                    self._flush_tokens(w)
                    continue
                log.error("%s", exc)
                return HTTPAnswer(
                    503, (("Content-Type", "text/html"),), NGINX_503, "error", None, str(exc)
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def prepare(self, plugin: PluginConf, *, worker: int | None = None) -> int:
        """Obtain a token as APISIX would (caches, shared dict, lock, PrepareConf)."""
        return await self._token(self._pick_worker(worker), plugin)

    def reload(self, socket_path: str | None = None) -> None:
        """``apisix reload`` (nginx HUP): new workers, same shared dict, no flush.

        The new workers start with empty lrucaches and pools, but the shared dict keeps every
        token the previous runner handed out (no ``runner_exit`` event is posted on this path),
        so the next runner, on ``socket_path`` (default: the same path), sees stale tokens.
        """
        if socket_path is not None:
            self.socket_path = socket_path
        for w in self._workers:
            w.close_idle()
            w.lru.clear()

    def runner_exit(self, processed_by: Iterable[int]) -> None:
        """The agent's ``runner_exit`` event, as far as the workers in ``processed_by`` got.

        Each of them flushes the shared dict and its own lrucache; a worker that has not
        processed the event yet keeps the dead runner's tokens in its lrucache.
        """
        for worker in processed_by:
            self._flush_tokens(self._workers[worker])

    async def close(self) -> None:
        for w in self._workers:
            w.close_idle()

    async def __aenter__(self) -> FakeApisix:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connections --------------------------------------------------------------------------

    def _pick_worker(self, worker: int | None) -> _Worker:
        if worker is None:
            worker = self._next_worker
            self._next_worker = (self._next_worker + 1) % len(self._workers)
        return self._workers[worker]

    async def _connect(self, w: _Worker) -> _RPCConnection:
        while w.idle:
            conn = w.idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return await _RPCConnection.open(self.socket_path)

    def _release(self, w: _Worker, conn: _RPCConnection) -> None:
        if len(w.idle) < POOL_SIZE and not conn.writer.is_closing():
            w.idle.append(conn)
        else:
            conn.close()

    # --- tokens -------------------------------------------------------------------------------

    def _flush_tokens(self, w: _Worker) -> None:
        """``flush conf token in shared dict`` and ``flush conf token lrucache`` (this worker)."""
        self._shared.clear()
        w.lru.clear()

    async def _token(self, w: _Worker, plugin: PluginConf) -> int:
        now = self._now()
        cached = w.lru.get(plugin.key)
        if cached and cached[1] > now:
            w.lru.move_to_end(plugin.key)
            return cached[0]
        token = self._shared_get(plugin.key, now)
        if token is None:
            async with self._prepare_lock:
                token = self._shared_get(plugin.key, self._now())
                if token is None:
                    token = await self._prepare_conf(w, plugin)
                    self._shared[plugin.key] = (token, self._now() + SHARED_DICT_TTL_S)
        w.lru[plugin.key] = (token, now + CONF_EXPIRE_S)
        w.lru.move_to_end(plugin.key)
        while len(w.lru) > LRU_ITEMS:
            w.lru.popitem(last=False)
        return token

    def _shared_get(self, key: str, now: float) -> int | None:
        entry = self._shared.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    async def _prepare_conf(self, w: _Worker, plugin: PluginConf) -> int:
        self.prepare_count += 1
        conn = await self._connect(w)
        try:
            conf = None
            if plugin.conf is not None:
                conf = tuple(TextEntry(name, value) for name, value in plugin.conf)
            await conn.send(PrepareConfRequest(conf, plugin.key))
            reply = await conn.receive(self.read_timeout_s)
        except RPCFailure as exc:
            conn.close()
            raise RPCFailure(str(exc).replace("RPC", "RPC_PREPARE_CONF", 1)) from exc
        if isinstance(reply, ErrorResponse):
            conn.close()
            raise RPCFailure(f"failed to receive RPC_PREPARE_CONF: {_err_text(reply.code)}")
        if not isinstance(reply, PrepareConfResponse):
            conn.close()
            raise RPCFailure(f"failed to receive RPC_PREPARE_CONF: unexpected {reply!r}")
        self._release(w, conn)
        return reply.conf_token

    # --- the call -----------------------------------------------------------------------------

    async def _http_req_call(
        self, w: _Worker, plugin: PluginConf, client: ClientRequest
    ) -> HTTPAnswer:
        # APISIX connects socket A first, *then* resolves the token (maybe on socket B).
        conn = await self._connect(w)
        try:
            token = await self._token(w, plugin)
            call = _describe(client, w.next_id(), token)
            await conn.send(call)
            while True:
                reply = await conn.receive(self.read_timeout_s)
                if isinstance(reply, ExtraInfoRequest):
                    if isinstance(reply.info, ReqBody) and client.body_ready is not None:
                        await client.body_ready.wait()
                    await conn.send(ExtraInfoResponse(_extra_info(reply, client)))
                    continue
                break
        except BaseException:
            conn.close()
            raise
        if isinstance(reply, ErrorResponse):
            conn.close()
            raise RPCFailure(
                f"failed to receive RPC_HTTP_REQ_CALL: {_err_text(reply.code)}",
                token_not_found=reply.code == ErrorCode.CONF_TOKEN_NOT_FOUND,
            )
        if not isinstance(reply, HTTPReqCallResponse):
            conn.close()
            raise RPCFailure(f"failed to receive RPC_HTTP_REQ_CALL: unexpected {reply!r}")
        self._release(w, conn)
        return _apply(reply)


def _describe(client: ClientRequest, request_id: int, token: int) -> HTTPReqCallRequest:
    """What APISIX puts in an HTTPReqCall (headers: see :func:`lua_headers`)."""
    return HTTPReqCallRequest(
        id=request_id,
        conf_token=token,
        method=Method[client.method.upper()],
        path=client.path,
        src_ip=client.src_ip,
        args=tuple(TextEntry(n, v) for n, v in client.args),
        headers=lua_headers(client.headers),
    )


def lua_headers(headers: Sequence[tuple[str, str]]) -> tuple[TextEntry, ...]:
    """``pairs(ngx.req.get_headers())``: the first 100 header lines, names lower-cased.

    Names come in Lua hash order (here a fixed hash of the name, so not request order); the
    values of one repeated name stay together and keep their order.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers[:MAX_HEADERS]:
        grouped.setdefault(name.lower(), []).append(value)
    order = sorted(grouped, key=lambda name: zlib.crc32(name.encode("utf-8", "surrogateescape")))
    return tuple(TextEntry(name, value) for name in order for value in grouped[name])


def _extra_info(request: ExtraInfoRequest, client: ClientRequest) -> bytes | None:
    info = request.info
    if isinstance(info, Var):
        return client.vars.get(info.name)
    if isinstance(info, ReqBody):
        return client.body if client.body else None
    if isinstance(info, RespBody):
        log.error("failed to read response body: not exits")
        return None
    raise RPCFailure(f"failed to handle RPC_EXTRA_INFO: unsupported info type: {info!r}")


def _apply(reply: HTTPReqCallResponse) -> HTTPAnswer:
    action = reply.action
    if isinstance(action, Stop):
        return HTTPAnswer(
            status=action.status or 200,
            headers=_merge_headers(action.headers),
            body=action.body,
            action="stop",
        )
    if isinstance(action, Rewrite):
        return HTTPAnswer(status=0, action="rewrite", rewrite=action)
    return HTTPAnswer(status=0, action="continue")


def _merge_headers(entries: Sequence[TextEntry]) -> tuple[tuple[str, str], ...]:
    """First occurrence of a name sets it, later ones append, a value-less entry clears it."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in entries:
        name = entry.name.lower()
        if entry.value is None:
            out = [(n, v) for n, v in out if n.lower() != name]
            seen.discard(name)
            continue
        if name not in seen:
            out = [(n, v) for n, v in out if n.lower() != name]
            seen.add(name)
        out.append((entry.name, entry.value))
    return tuple(out)


def _err_text(code: int) -> str:
    return {0: "bad request", 1: "service unavailable", 2: "conf token not found"}.get(
        code, f"unknown err {code}"
    )
