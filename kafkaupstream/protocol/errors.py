"""The protocol layer's exceptions.

Every error carries the ``A6.Err`` code a runner should answer with, so the server can turn any
:class:`ProtocolError` into an ``RPC_ERROR`` frame without a lookup table of its own.
"""

from __future__ import annotations

from kafkaupstream.protocol.messages import ErrorCode


class ProtocolError(Exception):
    """Base class: the bytes or the conversation broke the ext-plugin protocol."""

    error_code: ErrorCode = ErrorCode.BAD_REQUEST


class MalformedFrame(ProtocolError):
    """A frame that cannot be read: empty or truncated payload, unknown type, bad offsets."""


class UnexpectedMessage(ProtocolError):
    """A well-formed message that is not legal in the connection's current state."""


class FrameTooLarge(ProtocolError):
    """A payload over 16,777,215 bytes: the 3-byte length field cannot announce it.

    APISIX answers its own oversize replies with an error, so a runner answers SERVICE_UNAVAILABLE
    rather than sending a frame whose length bits would be truncated.
    """

    error_code = ErrorCode.SERVICE_UNAVAILABLE


class MessageTooLarge(ProtocolError):
    """A received message larger than this end accepts (the runner's PrepareConf byte limit).

    Refused from the frame header, before the payload is decoded.
    """


class InvalidMessage(ProtocolError, ValueError):
    """A message to send holds a value its wire type cannot carry (e.g. an id of 2**32)."""
