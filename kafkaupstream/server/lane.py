"""The per-request fast lane: one APISIX connection as a flat state machine, no task per request.

:class:`ApisixConnection` (``handler.py``) serves everything through the sans-IO ``Connection``,
a task per connection and the plugin's ``handle`` coroutine: general, and about a hundred Python
steps per request. This protocol serves the one exchange that carries the load, an HTTPReqCall
whose token this process holds for a route of the ``kafkaupstream`` plugin that uses only the
features implemented here, straight from ``data_received``: split the frame, decode the call,
route it on its headers, ask for the body, build the record, hand it to the producer, write the
Stop. Everything else (PrepareConf, unknown tokens, other plugins, routes with a feature this
lane does not know, malformed frames, shutdown) is handed, at the exchange boundary, to an
``ApisixConnection`` on the same transport, which hands the connection back once it is idle.

The lane calls the same functions as the plugin (``route_request``, ``build_record``,
``outcome_answer``, the codec), so answers and records are the same bytes; the tests run both
paths on the same inputs. Compiled by Cython (``lane.pxd`` declares the types), it is the
compiled core; ``KAFKAUPSTREAM_NO_EXTENSIONS=1`` serves every exchange through the handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import Any, cast

from kafkaupstream.api import Answer, PreparedConf
from kafkaupstream.logs import log_event
from kafkaupstream.plugin.answers import (
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    RequestError,
    outcome_answer,
)
from kafkaupstream.plugin.answers import route_config_invalid as config_invalid_answer
from kafkaupstream.plugin.config import RouteConfig
from kafkaupstream.plugin.kafka_plugin import _OFF_LOOP_BYTES, KafkaUpstreamPlugin
from kafkaupstream.plugin.record import Routing, build_record, route_request
from kafkaupstream.producers import (
    Backpressure,
    DeliveryOutcome,
    KafkaRecord,
    ProducerClosedError,
    ProducerConfigError,
)
from kafkaupstream.protocol import (
    Connection,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    FrameTooLarge,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    MessageTooLarge,
    ProtocolError,
    ReqBody,
    Role,
    decode_apisix_message,
    encode_message,
)
from kafkaupstream.protocol._stopframes import StopFrames
from kafkaupstream.server.handler import ApisixConnection, RunnerState, _count, _to_stop

# The same loggers as the paths this lane stands in for: one event, one logger, either way.
_SERVER_LOG = logging.getLogger("kafkaupstream.server.handler")
_PLUGIN_LOG = logging.getLogger("kafkaupstream.plugin.kafka_plugin")

_ASK_BODY_MESSAGE = ExtraInfoRequest(ReqBody())
_ASK_BODY = encode_message(_ASK_BODY_MESSAGE)
_HTTP_REQ_CALL = 2
_EXTRA_INFO = 3

# Where the exchange on this connection stands.
_IDLE = 0  # between exchanges: frames are read as they come
_BODY = 1  # the ExtraInfo ReqBody request is out; its answer is the next frame
_BUSY = 2  # building the record or waiting on the producer; frames wait in the buffer
_DELEGATED = 3  # an ApisixConnection serves the current exchange
_GONE = 4  # closed

# Which of the plugin's counters the exchange in progress holds.
_HOLDS_NOTHING = 0
_HOLDS_AWAITING_BODY = 1  # from the ReqBody request to the body's arrival
_HOLDS_IN_FLIGHT = 2  # from the body's arrival to the answer

#: The RouteConfig fields this lane implements. A route whose config sets any other field (a
#: feature added to the plugin later) to a value other than its default is served by the plugin.
_KNOWN_FIELDS = frozenset(
    {
        "producer_config",
        "topic",
        "partition",
        "key",
        "jsonkey",
        "headerprefix",
        "delivery",
        "timeout_ms",
        "allowed_topics",
        "forward_headers",
        "max_body_bytes",
        "max_record_bytes",
        "_forward_exact",
        "_forward_glob",
    }
)
_DELIVERIES = ("sync", "async")


def _other_fields() -> tuple[tuple[str, object], ...]:
    """(name, default) of every RouteConfig field the lane does not know."""
    found = []
    for item in dataclasses.fields(RouteConfig):
        if item.name in _KNOWN_FIELDS:
            continue
        if item.default is not dataclasses.MISSING:
            found.append((item.name, item.default))
        elif item.default_factory is not dataclasses.MISSING:
            found.append((item.name, item.default_factory()))
        else:  # a required field the lane knows nothing of: never eligible
            found.append((item.name, _NEVER))
    return tuple(found)


class _Never:
    """Equal to nothing: the default of a field without one."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


_NEVER = _Never()
_OTHER_FIELDS = _other_fields()


def eligible(conf: PreparedConf) -> bool:
    """Whether the lane serves this route exactly as the plugin would."""
    config = conf.state
    if type(conf.plugin) is not KafkaUpstreamPlugin or type(config) is not RouteConfig:
        return False
    if config.delivery not in _DELIVERIES:
        return False
    return all(getattr(config, name) == default for name, default in _OTHER_FIELDS)


class LaneConnection:
    """The asyncio protocol of one accepted connection (see the module docstring)."""

    def __init__(self, state: RunnerState) -> None:
        self._state = state
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._data: bytes | bytearray = b""
        #: Bytes the buffered frame needs in all before it is looked at again.
        self._need = 4
        self._phase = _IDLE
        self._eof = False
        self._paused = False
        self._draining = False
        self._delegate: ApisixConnection | None = None
        self._stops = StopFrames()
        # The exchange in progress.
        self._call: HTTPReqCallRequest | None = None
        self._call_frame = b""
        self._conf: PreparedConf | None = None
        self._routing: Routing | None = None
        #: The record built on a thread, the future the producer waits on, or its next step.
        self._pending: Any = None
        #: The producer's ``produce`` coroutine while it waits (sync routes).
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._holds = _HOLDS_NOTHING
        self.busy = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self._state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.data_received(data)
            return
        buffered = self._data
        if buffered:
            if type(buffered) is bytes:
                buffered = self._data = bytearray(buffered)
            buffered += data
            if len(buffered) < self._need:
                return
        else:
            self._data = data
        if self._phase <= _BODY:
            self._drain()

    def eof_received(self) -> bool:
        if self._delegate is not None:
            return self._delegate.eof_received()
        self._eof = True
        if self._phase == _IDLE:
            self._drain()
        elif self._phase == _BODY:
            self._body_lost()
        return True  # a half-close still gets its answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        self._state.connections.discard(self)
        self._eof = True
        if self._phase == _BODY:
            self._body_lost()
        elif self._phase == _IDLE:
            self._phase = _GONE
        self._paused = False

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
            return
        # The peer reads none of its answers: take no more requests until it does.
        self._paused = True
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()
            return
        self._paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            if self._phase <= _BODY:
                self._drain()

    # --- control from the server (what RunnerServer.shutdown uses) ---------------------------

    def close_if_idle(self) -> None:
        if not self.busy and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def task(self) -> asyncio.Future[None] | None:
        """Done when the exchange in progress is; cancelling it answers as the handler does."""
        if not self.busy or self._loop is None:
            return None
        if self._waiter is None:
            self._waiter = self._loop.create_future()
            self._waiter.add_done_callback(self._on_waiter_done)
        return self._waiter

    # --- frames -------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Serve every whole frame buffered, until an exchange has to wait."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._delegate is None:
                phase = self._phase
                # A peer that reads none of its answers gets no new exchange (the one under way
                # still reads its body, as the handler's does).
                if phase > _BODY or (phase == _IDLE and self._paused):
                    return
                data = self._data
                size = len(data)
                if size < 4:
                    self._need = 4
                    if phase == _IDLE and self._eof:
                        if size:
                            self._hand_over()  # the peer closed mid-frame
                        else:
                            self._closed_by_peer()
                    return
                length = (data[1] << 16) | (data[2] << 8) | data[3]
                end = 4 + length
                if length == 0 or (size < end and self._eof):
                    self._bad_frame()  # the handler says what is wrong with it
                    return
                if size < end:
                    self._need = end
                    return
                kind = data[0]
                if phase == _IDLE:
                    if kind != _HTTP_REQ_CALL:
                        self._hand_over()
                        return
                    frame = bytes(data[:end]) if size != end or type(data) is not bytes else data
                    self._data = data[end:] if size != end else b""
                    self._need = 4
                    if not self._call_received(frame):
                        self._data = frame + self._data
                        self._hand_over()
                        return
                else:
                    if kind != _EXTRA_INFO:
                        self._bad_frame()
                        return
                    payload = bytes(data[4:end])
                    try:
                        info = decode_apisix_message(_EXTRA_INFO, payload)
                    except ProtocolError:
                        self._bad_frame()
                        return
                    self._data = data[end:] if size != end else b""
                    self._need = 4
                    assert type(info) is ExtraInfoResponse
                    self._body_received(info.result or b"")
        finally:
            self._draining = False

    def _hand_over(self) -> None:
        """Let the handler serve this exchange (and what is buffered); it hands back when idle."""
        assert self._transport is not None
        delegate = ApisixConnection(self._state, release=self._released)
        self._delegate = delegate
        self._phase = _DELEGATED
        data = self._data
        self._data = b""
        self._need = 4
        self._state.connections.discard(self)
        delegate.connection_made(self._transport)
        if data:
            delegate.data_received(bytes(data))
        if self._eof:
            delegate.eof_received()

    def _released(self) -> None:
        """The handler finished its exchange with nothing more buffered: back to the lane."""
        delegate = self._delegate
        self._delegate = None
        self._phase = _IDLE
        self._state.connections.discard(delegate)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._state.connections.add(self)
        else:
            self._phase = _GONE

    def _closed_by_peer(self) -> None:
        self._phase = _GONE
        if self._transport is not None:
            self._transport.close()

    # --- the exchange -------------------------------------------------------------------------

    def _call_received(self, frame: bytes) -> bool:
        """An HTTPReqCall: serve it here and return True, or False for the handler to."""
        state = self._state
        if state.shutting_down:
            return False
        try:
            call = decode_apisix_message(_HTTP_REQ_CALL, frame[4:])
        except ProtocolError:
            return False
        assert type(call) is HTTPReqCallRequest
        prepared = state.confs.get(call.conf_token)
        if not prepared:
            return False
        conf = prepared[0]
        if not eligible(conf):
            return False
        config: RouteConfig = conf.state
        refused: Exception | None = None
        try:
            routing = route_request(config, call.headers)
        except Exception as exc:  # answered below, once the exchange is this lane's
            refused = exc
        else:
            if routing.topic != config.topic:
                return False  # the plugin first asks Kafka whether the header's topic exists
        self._phase = _BUSY
        self.busy = True
        self._call = call
        self._call_frame = frame
        self._conf = conf
        plugin: KafkaUpstreamPlugin = conf.plugin  # type: ignore[assignment]
        if refused is not None:
            if isinstance(refused, RequestError):
                log_event(
                    _PLUGIN_LOG,
                    logging.DEBUG,
                    "request_refused",
                    status=refused.status,
                    error=refused.code,
                )
                self._answer(refused.answer())
            else:
                self._plugin_failed(refused)
            return True
        refused_answer = plugin.admit()  # the plugin's caps, counted by the plugin
        if refused_answer is not None:
            self._answer(refused_answer)
            return True
        self._holds = _HOLDS_AWAITING_BODY
        self._routing = routing
        self._phase = _BODY
        self._write(_ASK_BODY)
        return True

    def _body_received(self, body: bytes) -> None:
        assert self._conf is not None
        self._phase = _BUSY
        plugin: KafkaUpstreamPlugin = self._conf.plugin  # type: ignore[assignment]
        self._holds = _HOLDS_NOTHING
        refused = plugin.body_arrived()
        if refused is not None:
            self._answer(refused)
            return
        self._holds = _HOLDS_IN_FLIGHT
        config: RouteConfig = self._conf.state
        routing = self._routing
        assert routing is not None
        if len(body) > _OFF_LOOP_BYTES:
            assert self._loop is not None
            pending = self._pending = self._loop.create_task(
                asyncio.to_thread(build_record, config, routing, body)
            )
            pending.add_done_callback(self._record_built)
            return
        try:
            record = build_record(config, routing, body)
        except RequestError as exc:
            self._refused(exc)
            return
        except Exception:
            self._release_plugin()
            self._plugin_failed()
            return
        self._produce(record)

    def _record_built(self, task: asyncio.Future[Any]) -> None:
        self._pending = None
        if task.cancelled():
            return  # shutdown: answered by _on_waiter_done
        exc = task.exception()
        if isinstance(exc, RequestError):
            self._refused(exc)
        elif exc is not None:
            self._release_plugin()
            self._plugin_failed(exc)
        else:
            self._produce(task.result())

    def _refused(self, exc: RequestError) -> None:
        log_event(_PLUGIN_LOG, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
        self._release_plugin()
        self._answer(exc.answer())

    def _produce(self, record: KafkaRecord) -> None:
        assert self._conf is not None
        config: RouteConfig = self._conf.state
        plugin: KafkaUpstreamPlugin = self._conf.plugin  # type: ignore[assignment]
        try:
            producer = plugin._producer(config)
        except Exception as exc:
            self._produce_failed(exc)
            return
        if isinstance(producer, Answer):  # no producer can serve it (the cap, a bad config)
            self._release_plugin()
            self._answer(producer)
            return
        self._coro = producer.produce(record, wait=config.sync, timeout=config.timeout_ms / 1000)
        self._advance()

    def _advance(self) -> None:
        """Run the producer's coroutine to its next wait or to its outcome, as a task would.

        An async route never waits (one ``send``, no task); a sync route waits on its delivery
        future, whose callback comes back here: no task per request either.
        """
        coro = self._coro
        assert coro is not None
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._coro = None
            self._delivered(stop.value)
            return
        except Exception as exc:
            self._coro = None
            self._produce_failed(exc)
            return
        assert self._loop is not None
        if yielded is None:  # a bare yield (asyncio.sleep(0)): continue on the next iteration
            self._pending = self._loop.call_soon(self._resume)
            return
        add_done_callback = getattr(yielded, "add_done_callback", None)
        if add_done_callback is None or not getattr(yielded, "_asyncio_future_blocking", False):
            self._coro = None
            coro.close()
            self._produce_failed(RuntimeError(f"the producer awaited {yielded!r}"))
            return
        yielded._asyncio_future_blocking = False
        self._pending = yielded
        add_done_callback(self._resume)

    def _resume(self, _done: object = None) -> None:
        self._pending = None
        self._advance()

    def _produce_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ProducerConfigError):
            self._producer_refused(exc)
        elif isinstance(exc, ProducerClosedError):
            self._release_plugin()
            self._answer(SHUTTING_DOWN)
        else:
            self._release_plugin()
            self._plugin_failed(exc)

    def _producer_refused(self, exc: ProducerConfigError) -> None:
        log_event(_PLUGIN_LOG, logging.ERROR, "producer_refused", cause=str(exc))
        self._release_plugin()
        self._answer(config_invalid_answer("config", "librdkafka refused it (see the runner log)"))

    def _delivered(self, outcome: DeliveryOutcome) -> None:
        assert self._conf is not None
        config: RouteConfig = self._conf.state
        plugin: KafkaUpstreamPlugin = self._conf.plugin  # type: ignore[assignment]
        self._release_plugin()
        if type(outcome) is Backpressure:
            plugin.refused_queue_full += 1
        try:
            answer = outcome_answer(outcome, config.timeout_ms)
        except Exception:
            self._plugin_failed()
            return
        self._answer(answer)

    def _release_plugin(self) -> None:
        """Give back the plugin counter the exchange holds (none, awaiting body or in flight)."""
        assert self._conf is not None
        plugin: KafkaUpstreamPlugin = self._conf.plugin  # type: ignore[assignment]
        holds = self._holds
        self._holds = _HOLDS_NOTHING
        if holds == _HOLDS_IN_FLIGHT:
            plugin.finished()
        elif holds == _HOLDS_AWAITING_BODY:
            plugin.abandon()

    def _plugin_failed(self, exc: BaseException | None = None) -> None:
        assert self._call is not None
        log_event(
            _SERVER_LOG,
            logging.ERROR,
            "plugin_failed",
            exc_info=exc if exc is not None else True,
            request_id=self._call.id,
        )
        self._answer(INTERNAL_ERROR)

    def _answer(self, answer: Answer) -> None:
        """Write the Stop, count it, and end the exchange."""
        assert self._call is not None and self._conf is not None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            try:
                data = self._stops.encode_answer(
                    self._call.id, answer.status, answer.headers, answer.body
                )
            except FrameTooLarge as exc:
                log_event(
                    _SERVER_LOG,
                    logging.ERROR,
                    "reply_too_large",
                    cause=str(exc),
                    action="service_unavailable",
                )
                data = encode_message(ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE))
            transport.write(data)
        recorder = self._state.recorder
        if recorder is not None:
            _count(recorder, self._conf.route, answer)
        self._end_exchange()

    def _end_exchange(self) -> None:
        self._call = None
        self._call_frame = b""
        self._conf = None
        self._routing = None
        self._phase = _IDLE
        self.busy = False
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        transport = self._transport
        if self._state.shutting_down or transport is None or transport.is_closing():
            self._phase = _GONE
            if transport is not None:
                transport.close()
            return
        if not self._draining:
            self._drain()

    # --- the exchange cut short ---------------------------------------------------------------

    def _bad_frame(self) -> None:
        """A frame that breaks the protocol: the handler's error for it, as the handler acts."""
        if self._phase == _IDLE:
            self._hand_over()
            return
        error = self._oracle()
        if error is None:  # cannot happen: the lane and the codec disagree; close all the same
            error = ProtocolError("the lane could not read this frame")
        event = "prepare_conf_refused" if isinstance(error, MessageTooLarge) else "malformed_frame"
        log_event(
            _SERVER_LOG, logging.WARNING, event, cause=str(error), action="rpc_error_and_close"
        )
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_message(ErrorResponse(error.error_code)))
        self._abort_exchange(f"bad frame while waiting for ExtraInfo: {error}")

    def _body_lost(self) -> None:
        """EOF (or a lost connection) while the ExtraInfo answer was awaited."""
        if self._data:
            self._bad_frame()
        else:
            self._abort_exchange(
                "APISIX closed the connection while the runner waited for ExtraInfo"
            )

    def _abort_exchange(self, cause: str) -> None:
        self._release_plugin()
        log_event(_SERVER_LOG, logging.WARNING, "exchange_aborted", cause=cause)
        self._data = b""
        self._call = None
        self._conf = None
        self._phase = _GONE
        self.busy = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._transport is not None:
            self._transport.close()

    def _oracle(self) -> ProtocolError | None:
        """The error the sans-IO Connection raises for the buffered bytes, in this exchange."""
        conn = Connection(Role.RUNNER, max_prepare_conf_bytes=self._state.conf_limits.payload_bytes)
        conn.receive_data(self._call_frame)
        conn.next_event()
        conn.send(_ASK_BODY_MESSAGE)
        if self._data:
            conn.receive_data(bytes(self._data))
        if self._eof:
            conn.receive_data(b"")
        try:
            conn.next_event()
        except ProtocolError as exc:
            return exc
        return None

    def _on_waiter_done(self, waiter: asyncio.Future[None]) -> None:
        """Shutdown ran out of time for this exchange and cancelled it."""
        if not waiter.cancelled() or not self.busy:
            return
        self._waiter = None
        pending = self._pending
        self._pending = None
        coro = self._coro
        self._coro = None
        if coro is not None:  # waiting on the producer: cancel it there, as a task would
            if hasattr(pending, "remove_done_callback"):  # the future it waits on
                pending.remove_done_callback(self._resume)
            elif pending is not None:  # its next step, scheduled (uvloop's handles too)
                pending.cancel()
            try:
                coro.throw(asyncio.CancelledError())
            except BaseException:  # the cancellation coming back, or what its cleanup raised
                pass
            else:  # it caught the cancellation and waits again: it is not ours to wait for
                coro.close()
        elif pending is not None:  # building the record on a thread
            pending.remove_done_callback(self._record_built)
            pending.cancel()
        if self._phase == _BODY:  # an ExtraInfo is outstanding: closing is the answer
            self._abort_silently()
            return
        self._release_plugin()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            assert self._call is not None
            transport.write(
                self._stops.encode(HTTPReqCallResponse(self._call.id, _to_stop(SHUTTING_DOWN)))
            )
        recorder = self._state.recorder
        if recorder is not None and self._conf is not None:
            _count(recorder, self._conf.route, SHUTTING_DOWN)
        self._abort_silently(release=False)

    def _abort_silently(self, release: bool = True) -> None:
        if release:
            self._release_plugin()
        self._call = None
        self._conf = None
        self._phase = _GONE
        self.busy = False
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
