"""A sans-IO ext-plugin connection: bytes in, messages out, and the conversation rules.

Modelled on h11: the caller feeds received bytes to :meth:`Connection.receive_data`, pulls events
with :meth:`Connection.next_event`, and turns messages into bytes with :meth:`Connection.send`.
The same class plays the runner (receiving APISIX's requests) and a fake APISIX.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from kafkaupstream.protocol._stopframes import StopFrames
from kafkaupstream.protocol.codec import (
    decode_apisix_message,
    decode_runner_message,
    encode_message,
    message_type,
)
from kafkaupstream.protocol.errors import (
    MalformedFrame,
    MessageTooLarge,
    ProtocolError,
    UnexpectedMessage,
)
from kafkaupstream.protocol.frames import FrameBuffer
from kafkaupstream.protocol.messages import (
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    Message,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
)


class Role(enum.Enum):
    """Which end of the socket a Connection plays."""

    RUNNER = "runner"
    APISIX = "APISIX"

    # Members are singletons: identity hashing is exact, and C code, unlike Enum's __hash__
    # (the transition table hashes a role and a state for every message).
    __hash__ = object.__hash__

    @property
    def peer(self) -> Role:
        return Role.APISIX if self is Role.RUNNER else Role.RUNNER


class State(enum.Enum):
    """Where the exchange on this connection stands (the same on both ends)."""

    IDLE = "IDLE"  # between exchanges: only APISIX may send, and only a request
    IN_PREPARE_CONF = "IN_PREPARE_CONF"  # the runner owes a PrepareConf answer
    IN_CALL = "IN_CALL"  # the runner owes an HTTPReqCall/HTTPRespCall answer or asks ExtraInfo
    AWAIT_INFO = "AWAIT_INFO"  # APISIX owes the answer to the runner's ExtraInfo request
    ERROR = "ERROR"  # a received frame broke the protocol; the byte stream is unusable

    __hash__ = object.__hash__  # see Role


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by next_event() when a whole frame has not arrived yet.
NEED_DATA: Final = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly, between frames."""


Event: TypeAlias = Message | ConnectionClosed | Literal[_NeedData.NEED_DATA]

# (state, sender, message class) -> next state. Which call is in progress (ReqCall or RespCall) is
# kept beside the state, and _ANSWERS checks that the final answer matches it.
_TRANSITIONS: Final[Mapping[tuple[State, Role, type], State]] = MappingProxyType(
    {
        (State.IDLE, Role.APISIX, PrepareConfRequest): State.IN_PREPARE_CONF,
        (State.IDLE, Role.APISIX, HTTPReqCallRequest): State.IN_CALL,
        (State.IDLE, Role.APISIX, HTTPRespCallRequest): State.IN_CALL,
        (State.IN_PREPARE_CONF, Role.RUNNER, PrepareConfResponse): State.IDLE,
        (State.IN_PREPARE_CONF, Role.RUNNER, ErrorResponse): State.IDLE,
        (State.IN_CALL, Role.RUNNER, ExtraInfoRequest): State.AWAIT_INFO,
        (State.IN_CALL, Role.RUNNER, ErrorResponse): State.IDLE,
        (State.IN_CALL, Role.RUNNER, HTTPReqCallResponse): State.IDLE,
        (State.IN_CALL, Role.RUNNER, HTTPRespCallResponse): State.IDLE,
        (State.AWAIT_INFO, Role.APISIX, ExtraInfoResponse): State.IN_CALL,
    }
)

# Each final answer and the only call it may end (ErrorResponse may end either).
_ANSWERS: Final[Mapping[type, type]] = MappingProxyType(
    {
        HTTPReqCallResponse: HTTPReqCallRequest,
        HTTPRespCallResponse: HTTPRespCallRequest,
    }
)
_CALLS: Final = frozenset(_ANSWERS.values())
_PREPARE_CONF: Final = int(MessageType.PREPARE_CONF)


class Connection:
    """One ext-plugin connection seen from ``our_role``; holds no socket."""

    def __init__(self, our_role: Role, *, max_prepare_conf_bytes: int | None = None) -> None:
        """``max_prepare_conf_bytes`` refuses a received PrepareConf payload over that size."""
        self.our_role: Final = our_role
        self._max_prepare_conf_bytes = max_prepare_conf_bytes
        self.their_role: Final = our_role.peer
        self._decode = decode_apisix_message if our_role is Role.RUNNER else decode_runner_message
        self._buffer = FrameBuffer()
        self._state = State.IDLE
        self._call: type | None = None
        self._eof = False
        self._error: ProtocolError | None = None
        # The runner answers most calls with a Stop of a few shapes: encode those from templates.
        self._stops = StopFrames()

    @property
    def state(self) -> State:
        return self._state

    @property
    def call(self) -> type | None:
        """The request class of the HTTP call in progress (IN_CALL/AWAIT_INFO), else None."""
        return self._call

    @property
    def between_exchanges(self) -> bool:
        """IDLE, nothing received past the last message, no EOF: the stream can change hands."""
        return self._state is State.IDLE and not self._eof and not len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed it."""
        if not data:
            self._eof = True
        elif self._eof:
            raise RuntimeError("received data after the peer closed the connection")
        else:
            self._buffer.feed(data)

    def next_event(self) -> Event:
        """The next received message, NEED_DATA, or ConnectionClosed.

        Raises MalformedFrame or UnexpectedMessage; after that the connection stays broken and
        every later call raises again (the caller should answer with the error's code and close).
        """
        if self._error is not None:
            raise type(self._error)(f"connection already broken: {self._error}")
        try:
            frame = self._buffer.next_frame()
            if frame is None:
                if not self._eof:
                    return NEED_DATA
                if len(self._buffer):
                    raise MalformedFrame(
                        f"peer closed mid-frame with {len(self._buffer)} bytes of it received"
                    )
                return ConnectionClosed()
            if (
                self._max_prepare_conf_bytes is not None
                and frame.type == _PREPARE_CONF
                and len(frame.payload) > self._max_prepare_conf_bytes
            ):
                raise MessageTooLarge(
                    f"a PrepareConf of {len(frame.payload)} bytes"
                    f" (at most {self._max_prepare_conf_bytes})"
                )
            message = self._decode(frame.type, frame.payload)
            self._enter(self._next_state(self.their_role, message), message)
        except ProtocolError as exc:
            self._error = exc
            self._state = State.ERROR
            raise
        return message

    def send(self, message: Message) -> bytes:
        """The frame to write for ``message``.

        Raises UnexpectedMessage if we may not send it now and FrameTooLarge/InvalidMessage if it
        cannot be encoded; the state is then unchanged, so the caller can send an ErrorResponse.
        """
        if self._state is State.ERROR:
            # After a broken frame the runner may still tell APISIX why before closing.
            if self.our_role is Role.RUNNER and type(message) is ErrorResponse:
                return encode_message(message)
            raise UnexpectedMessage(f"cannot send {type(message).__name__}: {self._error}")
        new_state = self._next_state(self.our_role, message)
        if type(message) is HTTPReqCallResponse:
            data = self._stops.encode(message)
        else:
            data = encode_message(message)
        self._enter(new_state, message)
        return data

    def _next_state(self, sender: Role, message: Message) -> State:
        kind = type(message)
        new_state = _TRANSITIONS.get((self._state, sender, kind))
        answers = _ANSWERS.get(kind)
        if new_state is None or (answers is not None and answers is not self._call):
            during = f" of an {self._call.__name__}" if self._call is not None else ""
            raise UnexpectedMessage(
                f"{sender.value} may not send {kind.__name__} (type {int(message_type(message))})"
                f" in state {self._state.name}{during}"
            )
        return new_state

    def _enter(self, new_state: State, message: Message) -> None:
        self._state = new_state
        if new_state is State.IDLE:
            self._call = None
        elif type(message) in _CALLS:
            self._call = type(message)
