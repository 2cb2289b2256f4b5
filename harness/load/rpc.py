"""A lean APISIX side of the ext-plugin RPC, for load: one sequential exchange per connection.

Frames are pre-encoded with the project's codec and reused: the HTTPReqCall frame once per
connection and conf token (its ``id`` stays fixed per connection: APISIX never checks the echoed
id and the runner treats it as opaque), the ExtraInfo body answer from a template where only the
request number's digits change. Answers are read by frame type plus the one or two scalars the
load generator needs (Stop status, ExtraInfo kind, error code); the full decoder is used only for
the rare messages (PrepareConf answers, Var requests).
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from harness.load.bodies import BodyTemplate
from kafkaupstream.protocol import (
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    MessageType,
    Method,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    TextEntry,
    Var,
    decode_runner_message,
    encode_message,
)
from kafkaupstream.protocol._schema import ACTION_STOP, INFO_REQ_BODY

#: APISIX's retry budget for CONF_TOKEN_NOT_FOUND.
MAX_ATTEMPTS = 3
#: What APISIX answers the client when the RPC fails (no allow_degradation).
RPC_FAILED_STATUS = 503
#: Status recorded for a call the runner let through (no action, or a Rewrite): the upstream's turn.
PASS_THROUGH_STATUS = 0

# Plain ints for the per-frame comparisons, from the codec's own definitions.
_TYPE_ERROR = int(MessageType.RPC_ERROR)
_TYPE_REQ_CALL = int(MessageType.HTTP_REQ_CALL)
_TYPE_EXTRA_INFO = int(MessageType.EXTRA_INFO)
_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from


class RPCFailure(Exception):
    """An exchange failed the way APISIX would turn into a 503; ``label`` names the cause."""

    def __init__(self, label: str, detail: str = "") -> None:
        super().__init__(f"{label}: {detail}" if detail else label)
        self.label = label


class _TokenNotFound(Exception):
    pass


# --- minimal FlatBuffers reads (bounds errors surface as struct.error / IndexError) -----------


def _field(buf: bytes, table: int, index: int) -> int:
    """Absolute position of field ``index`` of the table at ``table``, or 0 when absent."""
    vtable = table - _i32(buf, table)[0]
    slot = 4 + 2 * index
    if slot >= _u16(buf, vtable)[0]:
        return 0
    offset: int = _u16(buf, vtable + slot)[0]
    return table + offset if offset else 0


def _root(buf: bytes) -> int:
    root: int = _u32(buf, 0)[0]
    return root


def stop_status(payload: bytes) -> int:
    """The HTTP status of an HTTPReqCall answer: Stop's status (0 means 200), else pass-through."""
    root = _root(payload)
    at = _field(payload, root, 1)
    if not at or payload[at] != ACTION_STOP:
        return PASS_THROUGH_STATUS
    at = _field(payload, root, 2)
    stop = at + _u32(payload, at)[0]
    at = _field(payload, stop, 0)
    status: int = _u16(payload, at)[0] if at else 0
    return status or 200


def extra_info_kind(payload: bytes) -> int:
    """The union discriminator of an ExtraInfo request (``_schema.INFO_*``)."""
    at = _field(payload, _root(payload), 0)
    return payload[at] if at else 0


def error_code(payload: bytes) -> int:
    at = _field(payload, _root(payload), 0)
    return payload[at] if at else ErrorCode.BAD_REQUEST


# --- the connection -----------------------------------------------------------------------------


class _FrameProtocol(asyncio.Protocol):
    """Collects frames from the socket for one reader, answering ExtraInfo ReqBody itself.

    The body answer is written from the data callback, so a request costs the awaiting
    coroutine one wake-up (for the final answer), not two.
    """

    def __init__(self, body_pieces: tuple[bytes, ...] = ()) -> None:
        self.transport: asyncio.Transport | None = None
        #: The number of the request in flight: its digits go into the body answer.
        self.request_number = 0
        self._body_pieces = body_pieces
        self._buf = bytearray()
        self._ready: deque[tuple[int, bytes]] = deque()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            end = 4 + ((buf[1] << 16) | (buf[2] << 8) | buf[3])
            if len(buf) < end:
                break
            frame_type, payload = buf[0], bytes(buf[4:end])
            del buf[:end]
            if frame_type == _TYPE_EXTRA_INFO and self._body_pieces and _asks_body(payload):
                assert self.transport is not None
                self.transport.write((b"%010d" % self.request_number).join(self._body_pieces))
                continue
            self._ready.append((frame_type, payload))
        waiter = self._waiter
        if self._ready and waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(self._ready.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = RPCFailure("closed", str(exc or "peer closed the connection"))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._closed)

    async def read(self) -> tuple[int, bytes]:
        if self._ready:
            return self._ready.popleft()
        if self._closed is not None:
            raise self._closed
        self._waiter = asyncio.get_running_loop().create_future()
        return await self._waiter


def _asks_body(payload: bytes) -> bool:
    """An ExtraInfo ReqBody request (anything unreadable is left to the coroutine to report)."""
    try:
        return extra_info_kind(payload) == INFO_REQ_BODY
    except (struct.error, IndexError):
        return False


async def _open(path: str, body_pieces: tuple[bytes, ...] = ()) -> _FrameProtocol:
    loop = asyncio.get_running_loop()
    try:
        _transport, proto = await loop.create_unix_connection(
            lambda: _FrameProtocol(body_pieces), path
        )
    except OSError as exc:
        raise RPCFailure("connect", f"cannot connect to unix:{path}: {exc}") from exc
    return proto


# --- conf tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteConf:
    """A route's ``ext-plugin-pre-req``: one plugin entry and APISIX's idempotent key."""

    plugin: str
    value: str
    key: str = "route#1#ext-plugin-pre-req#1"


class ConfTokens:
    """The conf token shared by every connection; PrepareConf runs on its own connection, serialised
    by one lock as APISIX's global ``prepare_conf`` lock does."""

    def __init__(self, path: str, route: RouteConf) -> None:
        self.path = path
        self.route = route
        self.token: int | None = None
        self.prepares = 0
        self._lock = asyncio.Lock()

    async def refresh(self, stale: int | None) -> int:
        """A fresh token unless another connection already replaced ``stale``."""
        async with self._lock:
            if self.token is None or self.token == stale:
                self.token = await self._prepare()
            return self.token

    async def _prepare(self) -> int:
        proto = await _open(self.path)
        assert proto.transport is not None
        try:
            request = PrepareConfRequest(
                (TextEntry(self.route.plugin, self.route.value),), self.route.key
            )
            proto.transport.write(encode_message(request))
            frame_type, payload = await proto.read()
            try:
                answer = decode_runner_message(frame_type, payload)
            except ProtocolError as exc:
                raise RPCFailure("malformed", f"PrepareConf answer: {exc}") from exc
        finally:
            proto.transport.close()
        self.prepares += 1
        if isinstance(answer, PrepareConfResponse):
            return answer.conf_token
        if isinstance(answer, ErrorResponse):
            raise RPCFailure("prepare_error", f"PrepareConf answered {answer.code.name}")
        raise RPCFailure("unexpected", f"PrepareConf answered {answer!r}")


# --- the client -----------------------------------------------------------------------------------


VarLookup = Callable[[str], bytes | None]


class RPCClient:
    """One APISIX cosocket's worth of load: sequential HTTPReqCalls, reconnecting after failures."""

    def __init__(
        self,
        tokens: ConfTokens,
        bodies: BodyTemplate,
        *,
        call_id: int,
        path: str = "/",
        headers: tuple[tuple[str, str], ...] = (),
        variables: VarLookup = lambda name: None,
    ) -> None:
        self._tokens = tokens
        self._call_id = call_id
        self._path = path
        self._headers = (
            *(TextEntry(n.lower(), v) for n, v in headers),
            TextEntry("content-type", bodies.content_type),
            TextEntry("content-length", str(bodies.size)),
        )
        self._variables = variables
        self._proto: _FrameProtocol | None = None
        self._token: int | None = None
        self._call_frame = b""
        self._body_pieces = _body_frame_parts(bodies)

    async def request(self, n: int) -> int:
        """Send request ``n``; its HTTP status (503 for an RPC failure, 0 for pass-through).

        Raises RPCFailure after closing the connection so the caller can count the cause.
        """
        for _attempt in range(MAX_ATTEMPTS):
            try:
                if self._token is None or self._token != self._tokens.token:
                    self._token = await self._tokens.refresh(None)
                    self._call_frame = self._encode_call(self._token)
                return await self._exchange(n)
            except _TokenNotFound:
                await self._tokens.refresh(self._token)
            except RPCFailure:
                self.close()
                raise
        raise RPCFailure("conf_token_not_found", f"still unknown after {MAX_ATTEMPTS} attempts")

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None

    async def _exchange(self, n: int) -> int:
        proto = self._proto
        if proto is None:
            proto = self._proto = await _open(self._tokens.path, self._body_pieces)
        transport = proto.transport
        assert transport is not None
        proto.request_number = n
        transport.write(self._call_frame)
        while True:
            # ExtraInfo ReqBody requests never get here: the protocol answers them.
            frame_type, payload = await proto.read()
            try:
                if frame_type == _TYPE_REQ_CALL:
                    return stop_status(payload)
                if frame_type == _TYPE_EXTRA_INFO:
                    transport.write(self._answer_info(frame_type, payload))
                    continue
                if frame_type == _TYPE_ERROR:
                    code = error_code(payload)
                    if code == ErrorCode.CONF_TOKEN_NOT_FOUND:
                        # APISIX closes the connection after any RPC error, then retries.
                        self.close()
                        raise _TokenNotFound
                    raise RPCFailure("rpc_error", _code_name(code))
            except (struct.error, IndexError) as exc:
                raise RPCFailure("malformed", f"frame type {frame_type}: {exc}") from exc
            raise RPCFailure("unexpected", f"unexpected type {frame_type}")

    def _answer_info(self, frame_type: int, payload: bytes) -> bytes:
        try:
            message = decode_runner_message(frame_type, payload)
        except ProtocolError as exc:
            raise RPCFailure("malformed", f"ExtraInfo request: {exc}") from exc
        assert isinstance(message, ExtraInfoRequest)
        if isinstance(message.info, Var):
            return encode_message(ExtraInfoResponse(self._variables(message.info.name)))
        # RespBody during an HTTPReqCall: APISIX has no response yet and answers nil.
        return encode_message(ExtraInfoResponse(None))

    def _encode_call(self, token: int) -> bytes:
        return encode_message(
            HTTPReqCallRequest(
                id=self._call_id,
                conf_token=token,
                method=Method.POST,
                path=self._path,
                src_ip=b"\x7f\x00\x00\x01",
                headers=self._headers,
            )
        )


def _body_frame_parts(bodies: BodyTemplate) -> tuple[bytes, ...]:
    """The ExtraInfo answer frame split at the digits of the request number."""
    sample = bodies.body(0)
    frame = encode_message(ExtraInfoResponse(sample))
    at = frame.find(sample)
    if at < 0:
        raise RuntimeError("the codec did not lay the body out contiguously; cannot template it")
    pieces = list(bodies.pieces)
    pieces[0] = frame[:at] + pieces[0]
    pieces[-1] += frame[at + len(sample) :]
    if (b"%010d" % 1234).join(pieces) != encode_message(ExtraInfoResponse(bodies.body(1234))):
        raise RuntimeError("templated ExtraInfo frame differs from the codec's; cannot template it")
    return tuple(pieces)


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return f"unknown_err_{code}"
