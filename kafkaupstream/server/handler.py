"""One APISIX connection: bytes in through the sans-IO codec, one exchange at a time, answers out.

APISIX opens many connections (one per concurrent request, plus one per nested PrepareConf) and
keeps them pooled, so each connection is an ``asyncio.Protocol`` with its own task; a slow exchange
on one never blocks another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from kafkaupstream.api import Answer, HTTPRequest, Plugin, PreparedConf
from kafkaupstream.logs import log_event
from kafkaupstream.plugin.answers import INTERNAL_ERROR, SHUTTING_DOWN, error_code
from kafkaupstream.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    FrameTooLarge,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    MessageTooLarge,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    ReqBody,
    Role,
    Stop,
    TextEntry,
    Var,
    encode_message,
)
from kafkaupstream.server.confs import PrepareConfLimits, PreparedConfs, StoreUnavailable

if TYPE_CHECKING:
    from kafkaupstream.observability.recorder import Recorder

log = logging.getLogger(__name__)

_ASK_BODY = ExtraInfoRequest(ReqBody())


class Served(Protocol):
    """What shutdown needs of a connection: this module's, or the compiled lane's (lane.py)."""

    busy: bool

    @property
    def task(self) -> asyncio.Future[None] | None: ...

    def close_if_idle(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True)
class RunnerState:
    """What every connection of one process shares: plugins, prepared confs, the shutdown flag.

    ``recorder`` (with ``--metrics-listen``) counts every answer by route, status and error.
    """

    plugins: dict[str, Plugin]
    confs: PreparedConfs
    conf_limits: PrepareConfLimits = field(default_factory=PrepareConfLimits)
    recorder: Recorder | None = None
    connections: set[Served] = field(default_factory=set)
    shutting_down: bool = False


class PeerGone(Exception):
    """APISIX closed the connection (or sent garbage) while a plugin awaited ExtraInfo."""


class ApisixConnection(asyncio.Protocol):
    """Serves the RPC on one accepted unix-socket connection.

    ``release``: the connection is served for the compiled lane (``lane.py``), which owns the
    transport; it is called, instead of closing, once an exchange is over with nothing buffered.
    """

    def __init__(self, state: RunnerState, release: Callable[[], None] | None = None) -> None:
        self._state = state
        self._release = release
        self._conn = Connection(Role.RUNNER, max_prepare_conf_bytes=state.conf_limits.payload_bytes)
        self._transport: asyncio.Transport | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.busy = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._state.connections.add(self)
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._wake()
        return True  # a half-close still gets its answers; _serve closes when it is done

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        if not self._conn_closed_seen():
            self._conn.receive_data(b"")
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        # The peer reads none of its answers: take no more requests from it until it does, so
        # neither the write buffer nor the receive buffer grows without bound.
        assert self._transport is not None
        self._drained = asyncio.get_running_loop().create_future()
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # --- control from the server --------------------------------------------------------------

    def close_if_idle(self) -> None:
        """Shutdown: drop connections that are not in the middle of an exchange."""
        if not self.busy and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # --- the exchange loop --------------------------------------------------------------------

    def _conn_closed_seen(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _next_event(self) -> object:
        while True:
            event = self._conn.next_event()
            if event is not NEED_DATA:
                return event
            # The transport's loop: get_running_loop() costs a getpid() system call.
            self._wakeup = self._loop.create_future()
            await self._wakeup
            self._wakeup = None

    def _send(self, message: object) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        try:
            data = self._conn.send(message)  # type: ignore[arg-type]
        except FrameTooLarge as exc:
            log_event(
                log, logging.ERROR, "reply_too_large", cause=str(exc), action="service_unavailable"
            )
            data = self._conn.send(ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE))
        self._transport.write(data)

    async def _serve(self) -> None:
        released = False
        try:
            while True:
                if self._drained is not None:
                    await self._drained
                try:
                    event = await self._next_event()
                except ProtocolError as exc:
                    self._fail(exc)
                    return
                if isinstance(event, ConnectionClosed):
                    return
                self.busy = True
                try:
                    if self._state.shutting_down:
                        self._send(ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE))
                        return
                    await self._dispatch(event)
                finally:
                    self.busy = False
                if self._state.shutting_down:
                    return
                if self._release is not None and self._conn.between_exchanges:
                    released = True
                    self._release()
                    return
        except PeerGone as exc:
            log_event(log, logging.WARNING, "exchange_aborted", cause=str(exc))
        finally:
            if self._transport is not None and not released:
                self._transport.close()

    def _fail(self, exc: ProtocolError) -> None:
        event = "prepare_conf_refused" if isinstance(exc, MessageTooLarge) else "malformed_frame"
        log_event(log, logging.WARNING, event, cause=str(exc), action="rpc_error_and_close")
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_message(ErrorResponse(exc.error_code)))

    async def _dispatch(self, event: object) -> None:
        try:
            if isinstance(event, HTTPReqCallRequest):  # the hot path: a token known here
                prepared = self._state.confs.get(event.conf_token)
                if prepared is None:
                    prepared = await self._prepared(event.conf_token)
                if prepared is not None:
                    await self._http_req_call(event, prepared)
            elif isinstance(event, PrepareConfRequest):
                await self._prepare_conf(event)
            elif isinstance(event, HTTPRespCallRequest):
                if await self._prepared(event.conf_token) is not None:
                    self._send(HTTPRespCallResponse(event.id))
            else:  # the codec's state machine makes this unreachable; answer rather than hang
                self._send(ErrorResponse(ErrorCode.BAD_REQUEST))
        except StoreUnavailable as exc:
            log_event(log, logging.ERROR, "token_store_unavailable", cause=str(exc))
            self._send(ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE))

    async def _prepare_conf(self, request: PrepareConfRequest) -> None:
        entries = request.conf or ()
        limit = self._state.conf_limits.entries
        if len(entries) > limit:
            log_event(
                log,
                logging.WARNING,
                "prepare_conf_refused",
                key=request.key,
                cause=f"{len(entries)} entries (at most {limit})",
                action="rpc_error",
            )
            self._send(ErrorResponse(ErrorCode.BAD_REQUEST))
            return
        confs = tuple((entry.name, entry.value or "") for entry in entries)
        self._send(PrepareConfResponse(await self._state.confs.register(request.key, confs)))

    async def _prepared(self, token: int) -> tuple[PreparedConf, ...] | None:
        """The token's prepared confs (no await on a local hit), or answer CONF_TOKEN_NOT_FOUND."""
        confs = self._state.confs
        prepared = confs.get(token)
        if prepared is None:
            prepared = await confs.resolve(token)
        if prepared is None:
            log_event(log, logging.INFO, "conf_token_not_found", token=token)
            self._send(ErrorResponse(ErrorCode.CONF_TOKEN_NOT_FOUND))
        return prepared

    async def _http_req_call(
        self, call: HTTPReqCallRequest, prepared: tuple[PreparedConf, ...]
    ) -> None:
        request = HTTPRequest(
            id=call.id,
            method=call.method,
            path=call.path,
            src_ip=call.src_ip,
            args=call.args,
            headers=call.headers,
            fetch_body=self._fetch_body,
            fetch_var=self._fetch_var,
        )
        answer: Answer | None = None
        route = ""
        try:
            for conf in prepared:
                route = conf.route
                answer = await conf.plugin.handle(conf.state, request)
                if answer is not None:
                    break
        except PeerGone:
            raise
        except asyncio.CancelledError:
            # Shutdown ran out of time for this exchange: answer it rather than leave it hanging.
            # (Impossible only while an ExtraInfo is outstanding; then closing is the answer.)
            with contextlib.suppress(ProtocolError):
                self._send(HTTPReqCallResponse(call.id, _to_stop(SHUTTING_DOWN)))
                if self._state.recorder is not None:
                    _count(self._state.recorder, route, SHUTTING_DOWN)
            raise
        except Exception:
            log_event(log, logging.ERROR, "plugin_failed", exc_info=True, request_id=call.id)
            answer = INTERNAL_ERROR
        if answer is None:
            self._send(HTTPReqCallResponse(call.id, None))
            return
        self._send(HTTPReqCallResponse(call.id, _to_stop(answer)))
        if self._state.recorder is not None:
            _count(self._state.recorder, route, answer)

    async def _extra_info(self, request: ExtraInfoRequest) -> bytes | None:
        self._send(request)
        try:
            event = await self._next_event()
        except ProtocolError as exc:
            self._fail(exc)
            raise PeerGone(f"bad frame while waiting for ExtraInfo: {exc}") from exc
        if isinstance(event, ExtraInfoResponse):
            return event.result
        raise PeerGone("APISIX closed the connection while the runner waited for ExtraInfo")

    def _fetch_body(self) -> Awaitable[bytes | None]:
        # Not itself a coroutine: one coroutine frame fewer on every request's body fetch.
        return self._extra_info(_ASK_BODY)

    async def _fetch_var(self, name: str) -> bytes | None:
        return await self._extra_info(ExtraInfoRequest(Var(name)))


def _count(recorder: Recorder, route: str, answer: Answer) -> None:
    """One answer in the metrics: its route, its status and (for an error) its code."""
    status = answer.status
    recorder.request(route, status, "" if status < 300 else error_code(answer))


def _to_stop(answer: Answer) -> Stop:
    return Stop(
        answer.status,
        tuple([TextEntry(name, value) for name, value in answer.headers]),
        answer.body,
    )
