"""Stop answers from templates: the runner's most frequent frame, built in a few copies.

A Stop's body is the first thing the writer lays down, and a byte vector always ends 4-aligned, so
everything in front of it (root offset, root table, vtables, Stop table, headers) is the same bytes
for every non-empty body, and the call id sits at a fixed place in them. A template per (status,
headers, whether the id is 0) therefore turns each answer into: header + prefix with the id
patched in + body length + body + padding, exactly the frame :func:`encode_message` builds.
"""

from __future__ import annotations

import struct
from typing import Final

from kafkaupstream.protocol._writers import encode_message
from kafkaupstream.protocol.frames import MAX_PAYLOAD, encode_header
from kafkaupstream.protocol.messages import (
    Entries,
    HTTPReqCallResponse,
    MessageType,
    Stop,
    TextEntry,
)

_U32 = struct.Struct("<I")
_PADDING: Final = tuple(bytes(-n & 3) for n in range(4))
# A stand-in body of 4 bytes: no padding, so the frame ends with its length and these bytes.
_PLACEHOLDER: Final = b"\xa5" * 4
_TAIL: Final = 8

_Key = tuple[int, Entries, bool]
# (prefix before the id, prefix after the id); the first part is everything when the id is 0.
_Template = tuple[bytes, bytes]


class StopFrames:
    """Encodes ``HTTPReqCallResponse(id, Stop(...))`` from a bounded set of templates."""

    __slots__ = ("_by_pairs", "_capacity", "_templates")

    def __init__(self, capacity: int = 32) -> None:
        self._templates: dict[_Key, _Template] = {}
        #: The same templates by plain (name, value) header pairs, for :meth:`encode_answer`.
        self._by_pairs: dict[tuple[int, tuple[tuple[str, str], ...], bool], _Template] = {}
        self._capacity = capacity

    def encode_answer(
        self, call_id: int, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> bytes:
        """:meth:`encode` of ``HTTPReqCallResponse(call_id, Stop(status, headers, body))``.

        For the compiled lane: once a shape is learnt, no message, entry or dataclass hash is
        made per answer; the template is found by the plain header pairs.
        """
        key = (status, headers, call_id != 0)
        template = self._by_pairs.get(key)
        if template is None or not body or not 0 <= call_id <= 0xFFFFFFFF:
            entries = tuple([TextEntry(name, value) for name, value in headers])
            data = self.encode(HTTPReqCallResponse(call_id, Stop(status, entries, body)))
            learnt = self._templates.get((status, entries, call_id != 0))
            if learnt is not None:
                if len(self._by_pairs) >= self._capacity:
                    self._by_pairs.clear()
                self._by_pairs[key] = learnt
            return data
        if len(body) > MAX_PAYLOAD:
            return self.encode(
                HTTPReqCallResponse(
                    call_id, Stop(status, tuple([TextEntry(n, v) for n, v in headers]), body)
                )
            )  # raises the codec's error
        return _assemble(template, call_id, body)

    def encode(self, msg: HTTPReqCallResponse) -> bytes:
        """The frame for ``msg``: from a template for a Stop with a body, else the codec's."""
        stop = msg.action
        call_id = msg.id
        if type(stop) is not Stop or not stop.body or type(call_id) is not int:
            return encode_message(msg)
        if not 0 <= call_id <= 0xFFFFFFFF or len(stop.body) > MAX_PAYLOAD:
            return encode_message(msg)  # raises the codec's error
        key = (stop.status, stop.headers, call_id != 0)
        try:
            template = self._templates.get(key)
        except TypeError:  # unhashable junk in the headers: the codec says what is wrong
            return encode_message(msg)
        if template is None:
            template = self._learn(key, msg)
        return _assemble(template, call_id, stop.body)

    def _learn(self, key: _Key, msg: HTTPReqCallResponse) -> _Template:
        """Encode the message once with a stand-in body and cut the template out of it."""
        assert msg.action is not None
        sample = HTTPReqCallResponse(msg.id, Stop(key[0], key[1], _PLACEHOLDER))
        payload = encode_message(sample)[4:-_TAIL]
        if msg.id:
            at = _id_position(payload)
            template = (payload[:at], payload[at + 4 :])
        else:
            template = (payload, b"")
        if len(self._templates) >= self._capacity:
            # Answers with ever-new headers (echoed values) must not grow the cache: start over.
            self._templates.clear()
        self._templates[key] = template
        return template


def _assemble(template: _Template, call_id: int, body: bytes) -> bytes:
    """The frame: header, the template with the id patched in, the body vector, padding."""
    length = len(body)
    head, tail = template
    payload_size = len(head) + len(tail) + 4 + length + (-length & 3)
    if call_id:
        payload_size += 4
        return b"".join(
            (
                encode_header(MessageType.HTTP_REQ_CALL, payload_size),
                head,
                _U32.pack(call_id),
                tail,
                _U32.pack(length),
                body,
                _PADDING[length & 3],
            )
        )
    return b"".join(
        (
            encode_header(MessageType.HTTP_REQ_CALL, payload_size),
            head,
            _U32.pack(length),
            body,
            _PADDING[length & 3],
        )
    )


def _id_position(payload: bytes) -> int:
    """Where the root table's field 0 (the call id) lies in ``payload``."""
    root = _U32.unpack_from(payload, 0)[0]
    vtable = root - struct.unpack_from("<i", payload, root)[0]
    return root + struct.unpack_from("<H", payload, vtable + 4)[0]
