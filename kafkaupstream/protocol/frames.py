"""The frame layer: a type byte, a 3-byte big-endian payload length, then the payload."""

from __future__ import annotations

import struct
from typing import NamedTuple

from kafkaupstream.protocol.errors import FrameTooLarge, InvalidMessage, MalformedFrame

#: The largest payload a 3-byte length can announce (2**24 - 1).
MAX_PAYLOAD = 16_777_215
HEADER_SIZE = 4

# Compacting moves the unread tail to the front; doing it only once the consumed prefix is both
# large and at least half the buffer keeps the total copying linear in the bytes received.
_COMPACT_THRESHOLD = 64 * 1024
_HEADER = struct.Struct(">I")


class Frame(NamedTuple):
    """One received frame, header stripped."""

    type: int
    payload: bytes


def encode_header(frame_type: int, length: int) -> bytes:
    """The 4-byte header for a payload of ``length`` bytes (1..MAX_PAYLOAD)."""
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"payload of {length} bytes exceeds the frame limit of {MAX_PAYLOAD} bytes"
        )
    if length <= 0:
        raise MalformedFrame("refusing to send an empty payload: APISIX cannot read one")
    if not 0 <= frame_type <= 0xFF:
        raise InvalidMessage(f"frame type {frame_type} does not fit in one byte")
    return _HEADER.pack((frame_type << 24) | length)


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """A whole frame: header plus payload. Raises FrameTooLarge / MalformedFrame (empty)."""
    return encode_header(frame_type, len(payload)) + payload


class FrameBuffer:
    """Accumulates received bytes in any chunking and hands out complete frames.

    A chunk that arrives while nothing is buffered (the common case: one read, one or more whole
    frames) is kept as it is and frames are sliced out of it, one copy each. Only a frame split
    across reads goes into a bytearray read from an offset, so a 16 MiB payload that arrives in
    small chunks costs amortised O(1) per chunk and is copied out exactly once, when complete.
    """

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data: bytes | bytearray = b""
        self._start = 0

    def __len__(self) -> int:
        """The number of buffered bytes not yet handed out as frames."""
        return len(self._data) - self._start

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._start >= len(self._data):
            self._data = data if type(data) is bytes else bytes(data)
            self._start = 0
            return
        buffer = self._data
        if isinstance(buffer, bytes):  # a frame continues in this chunk: start accumulating
            with memoryview(buffer) as view:
                buffer = self._data = bytearray(view[self._start :])
            self._start = 0
        buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises MalformedFrame for a header announcing an empty payload; the stream cannot be
        resynchronised after that, so the caller must drop the connection.
        """
        data = self._data
        start = self._start
        size = len(data)
        if size - start < HEADER_SIZE:
            return None
        length = _HEADER.unpack_from(data, start)[0] & MAX_PAYLOAD
        if not length:
            raise MalformedFrame(f"frame of type {data[start]} announces an empty payload")
        end = start + HEADER_SIZE + length
        if size < end:
            return None
        if isinstance(data, bytes):
            self._start = end
            return Frame(data[start], data[start + HEADER_SIZE : end])
        with memoryview(data) as view:
            payload = bytes(view[start + HEADER_SIZE : end])
        frame = Frame(data[start], payload)
        if end == size:
            data.clear()
            self._start = 0
        elif end >= _COMPACT_THRESHOLD and end * 2 >= size:
            del data[:end]
            self._start = 0
        else:
            self._start = end
        return frame
