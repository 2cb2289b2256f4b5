"""FlatBuffers payloads of the ext-plugin messages (proto v0.6.1), in both directions.

Encoding uses the ``flatbuffers`` runtime ``Builder`` and adds fields in schema order with children
created first, which is the call order behind the Python-built reference frames and APISIX's Lua
builder, so our bytes match theirs wherever the two runtimes agree.

Decoding is a hand-written reader instead of the runtime's ``Table``: every offset it follows is
bounds-checked, so arbitrary bytes give a :class:`MalformedFrame` and never another exception, and
nothing is copied except the strings and byte vectors it returns (one copy each).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from flatbuffers import Builder

from kafkaupstream.protocol.errors import (
    FrameTooLarge,
    InvalidMessage,
    MalformedFrame,
    ProtocolError,
)
from kafkaupstream.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, encode_header
from kafkaupstream.protocol.messages import (
    ApisixMessage,
    Entries,
    ErrorCode,
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
    ReqBody,
    RespBody,
    Rewrite,
    RunnerMessage,
    Stop,
    TextEntry,
    Var,
)

# Union discriminators (A6.HTTPReqCall.Action and A6.ExtraInfo.Info).
ACTION_STOP = 1
ACTION_REWRITE = 2
INFO_VAR = 1
INFO_REQ_BODY = 2
INFO_RESP_BODY = 3

# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
# Readers for the first n vtable slots, and the all-absent answer, indexed by n.
_SLOTS = tuple(struct.Struct(f"<{n}H").unpack_from for n in range(8))
_ABSENT = tuple((0,) * n for n in range(8))

# What a read of hostile bytes can raise: struct.error is a fixed-size read past the end (the
# checks below only cover what struct cannot see: negative vtables and over-long vectors). The
# rest should be unreachable and are caught so that decoding can only ever fail as MalformedFrame.
_READ_ERRORS = (struct.error, IndexError, OverflowError, ValueError, RecursionError)


def _fields(buf: bytes, table: int, count: int) -> tuple[int, ...]:
    """The vtable offsets of a table's first ``count`` fields, 0 where a field is absent.

    A vtable shorter than the schema (trimmed by the writer, or an older schema) means the rest
    are absent.
    """
    vtable = table - _i32(buf, table)[0]
    if vtable < 0:
        raise MalformedFrame(f"the table at byte {table} has a vtable before the buffer start")
    present = (_u16(buf, vtable)[0] - 4) >> 1
    if present >= count:
        return _SLOTS[count](buf, vtable + 4)
    if present <= 0:
        return _ABSENT[count]
    return _SLOTS[present](buf, vtable + 4) + _ABSENT[count - present]


def _deref(buf: bytes, at: int) -> int:
    """The position a uoffset stored at ``at`` points to (uoffsets only point forward)."""
    return at + _u32(buf, at)[0]


def _span(buf: bytes, vector: int, width: int) -> tuple[int, int]:
    """(first element, element count) of the vector at ``vector``, checked to fit the buffer."""
    length = _u32(buf, vector)[0]
    start = vector + 4
    if start + length * width > len(buf):
        raise MalformedFrame(
            f"a vector of {length} elements at byte {vector} runs past the payload"
        )
    return start, length


def _bytes_at(buf: bytes, vector: int) -> bytes:
    start, length = _span(buf, vector, 1)
    return buf[start : start + length]


def _string_at(buf: bytes, vector: int) -> str:
    """The length prefix ends a string: APISIX writes garbage where the NUL would be."""
    start, length = _span(buf, vector, 1)
    return buf[start : start + length].decode("utf-8", "surrogateescape")


def _entries_at(buf: bytes, vector: int) -> Entries:
    """A [TextEntry] vector: the hot path of every request, hence the inlined reads.

    Entries whose tables and strings do not share storage (what every known builder writes)
    cannot account for more bytes than the payload holds. Once they do, the payload shares
    storage, so decoding restarts on the memoising path: a hostile payload pointing many
    entries at one large string must not turn 16 MiB into gigabytes of Python objects.
    """
    start, length = _span(buf, vector, 4)
    if not length:
        return ()
    size = budget = len(buf)
    u32, i32, u16, two_slots = _u32, _i32, _u16, _SLOTS[2]
    out = []
    pos = start
    for rel in struct.unpack_from(f"<{length}I", buf, start):
        table = pos + rel
        pos += 4
        vtable = table - i32(buf, table)[0]
        if vtable < 0:
            raise MalformedFrame(f"the TextEntry at byte {table} has a vtable before the start")
        vtable_size = u16(buf, vtable)[0]
        if vtable_size >= 8:
            name_at, value_at = two_slots(buf, vtable + 4)
        else:
            name_at = u16(buf, vtable + 4)[0] if vtable_size >= 6 else 0
            value_at = 0
        # The vector slot and the table's vtable offset: 8 bytes no other entry can use.
        budget -= 8
        name = ""
        if name_at:
            name_at += table
            name_at += u32(buf, name_at)[0]
            end = name_at + 4 + u32(buf, name_at)[0]
            if end > size:
                raise MalformedFrame(f"the string at byte {name_at} runs past the payload")
            name = buf[name_at + 4 : end].decode("utf-8", "surrogateescape")
            budget -= end - name_at + 4
        value = None
        if value_at:
            value_at += table
            value_at += u32(buf, value_at)[0]
            end = value_at + 4 + u32(buf, value_at)[0]
            if end > size:
                raise MalformedFrame(f"the string at byte {value_at} runs past the payload")
            value = buf[value_at + 4 : end].decode("utf-8", "surrogateescape")
            budget -= end - value_at + 4
        if budget < 0:
            return _shared_entries_at(buf, start, length)
        out.append(TextEntry(name, value))
    return tuple(out)


def _shared_entries_at(buf: bytes, start: int, length: int) -> Entries:
    """A [TextEntry] vector whose entries share tables or strings, each decoded only once."""
    tables: dict[int, TextEntry] = {}
    strings: dict[int, str] = {}
    out = []
    pos = start
    for rel in struct.unpack_from(f"<{length}I", buf, start):
        table = pos + rel
        pos += 4
        entry = tables.get(table)
        if entry is None:
            name_at, value_at = _fields(buf, table, 2)
            name = value = None
            if name_at:
                name_at = _deref(buf, table + name_at)
                name = strings.get(name_at)
                if name is None:
                    name = strings[name_at] = _string_at(buf, name_at)
            if value_at:
                value_at = _deref(buf, table + value_at)
                value = strings.get(value_at)
                if value is None:
                    value = strings[value_at] = _string_at(buf, value_at)
            entry = tables[table] = TextEntry(name or "", value)
        out.append(entry)
    return tuple(out)


def _string(buf: bytes, table: int, at: int, default: str = "") -> str:
    return _string_at(buf, _deref(buf, table + at)) if at else default


def _entries(buf: bytes, table: int, at: int) -> Entries:
    return _entries_at(buf, _deref(buf, table + at)) if at else ()


def _decode_prepare_conf_request(buf: bytes, root: int) -> PrepareConfRequest:
    conf, key = _fields(buf, root, 2)
    return PrepareConfRequest(
        conf=_entries_at(buf, _deref(buf, root + conf)) if conf else None,
        key=_string(buf, root, key),
    )


def _decode_http_req_call_request(buf: bytes, root: int) -> HTTPReqCallRequest:
    id_, src_ip, method, path, args, headers, token = _fields(buf, root, 7)
    return HTTPReqCallRequest(
        id=_u32(buf, root + id_)[0] if id_ else 0,
        conf_token=_u32(buf, root + token)[0] if token else 0,
        method=_u8(buf, root + method)[0] if method else 0,
        path=_string(buf, root, path),
        src_ip=_bytes_at(buf, _deref(buf, root + src_ip)) if src_ip else b"",
        args=_entries(buf, root, args),
        headers=_entries(buf, root, headers),
    )


def _decode_http_resp_call_request(buf: bytes, root: int) -> HTTPRespCallRequest:
    id_, status, headers, token = _fields(buf, root, 4)
    return HTTPRespCallRequest(
        id=_u32(buf, root + id_)[0] if id_ else 0,
        conf_token=_u32(buf, root + token)[0] if token else 0,
        status=_u16(buf, root + status)[0] if status else 0,
        headers=_entries(buf, root, headers),
    )


def _decode_extra_info_response(buf: bytes, root: int) -> ExtraInfoResponse:
    (result,) = _fields(buf, root, 1)
    return ExtraInfoResponse(_bytes_at(buf, _deref(buf, root + result)) if result else None)


def _decode_error_response(buf: bytes, root: int) -> ErrorResponse:
    (code,) = _fields(buf, root, 1)
    value = _u8(buf, root + code)[0] if code else 0
    try:
        return ErrorResponse(ErrorCode(value))
    except ValueError:
        # APISIX answers an unknown code with "unknown err N" instead of rejecting the frame;
        # keep the number (an int compares equal to no ErrorCode member) so callers can do the same.
        return ErrorResponse(value)  # type: ignore[arg-type]


def _decode_prepare_conf_response(buf: bytes, root: int) -> PrepareConfResponse:
    (token,) = _fields(buf, root, 1)
    return PrepareConfResponse(_u32(buf, root + token)[0] if token else 0)


def _union_table(buf: bytes, table: int, at: int, what: str) -> int:
    if not at:
        raise MalformedFrame(f"{what} has its union type set but no table")
    return _deref(buf, table + at)


def _decode_stop(buf: bytes, table: int) -> Stop:
    status, headers, body = _fields(buf, table, 3)
    return Stop(
        status=_u16(buf, table + status)[0] if status else 0,
        headers=_entries(buf, table, headers),
        body=_bytes_at(buf, _deref(buf, table + body)) if body else b"",
    )


def _decode_rewrite(buf: bytes, table: int) -> Rewrite:
    path, headers, args, resp_headers, body = _fields(buf, table, 5)
    return Rewrite(
        path=_string_at(buf, _deref(buf, table + path)) if path else None,
        headers=_entries(buf, table, headers),
        args=_entries(buf, table, args),
        resp_headers=_entries(buf, table, resp_headers),
        body=_bytes_at(buf, _deref(buf, table + body)) if body else None,
    )


def _decode_http_req_call_response(buf: bytes, root: int) -> HTTPReqCallResponse:
    id_, action_type, action = _fields(buf, root, 3)
    kind = _u8(buf, root + action_type)[0] if action_type else 0
    decoded: Stop | Rewrite | None
    if kind == ACTION_STOP:
        decoded = _decode_stop(buf, _union_table(buf, root, action, "HTTPReqCall.Resp Stop"))
    elif kind == ACTION_REWRITE:
        decoded = _decode_rewrite(buf, _union_table(buf, root, action, "HTTPReqCall.Resp Rewrite"))
    elif kind == 0:
        decoded = None
    else:
        raise MalformedFrame(f"HTTPReqCall.Resp has unknown action type {kind}")
    return HTTPReqCallResponse(id=_u32(buf, root + id_)[0] if id_ else 0, action=decoded)


def _decode_extra_info_request(buf: bytes, root: int) -> ExtraInfoRequest:
    info_type, info = _fields(buf, root, 2)
    kind = _u8(buf, root + info_type)[0] if info_type else 0
    if kind == INFO_VAR:
        var = _union_table(buf, root, info, "ExtraInfo.Req Var")
        (name,) = _fields(buf, var, 1)
        return ExtraInfoRequest(Var(_string(buf, var, name)))
    # ReqBody and RespBody are empty tables, and APISIX never reads them: a missing one is harmless.
    if kind == INFO_REQ_BODY:
        return ExtraInfoRequest(ReqBody())
    if kind == INFO_RESP_BODY:
        return ExtraInfoRequest(RespBody())
    raise MalformedFrame(f"ExtraInfo.Req has unsupported info type {kind}")


def _decode_http_resp_call_response(buf: bytes, root: int) -> HTTPRespCallResponse:
    id_, status, headers, body = _fields(buf, root, 4)
    return HTTPRespCallResponse(
        id=_u32(buf, root + id_)[0] if id_ else 0,
        status=_u16(buf, root + status)[0] if status else 0,
        headers=_entries(buf, root, headers),
        body=_bytes_at(buf, _deref(buf, root + body)) if body else b"",
    )


_Decoder = Callable[[bytes, int], Any]

_APISIX_DECODERS: Final[Mapping[int, tuple[str, _Decoder]]] = MappingProxyType(
    {
        MessageType.PREPARE_CONF: ("PrepareConf.Req", _decode_prepare_conf_request),
        MessageType.HTTP_REQ_CALL: ("HTTPReqCall.Req", _decode_http_req_call_request),
        MessageType.EXTRA_INFO: ("ExtraInfo.Resp", _decode_extra_info_response),
        MessageType.HTTP_RESP_CALL: ("HTTPRespCall.Req", _decode_http_resp_call_request),
    }
)
_RUNNER_DECODERS: Final[Mapping[int, tuple[str, _Decoder]]] = MappingProxyType(
    {
        MessageType.RPC_ERROR: ("Err.Resp", _decode_error_response),
        MessageType.PREPARE_CONF: ("PrepareConf.Resp", _decode_prepare_conf_response),
        MessageType.HTTP_REQ_CALL: ("HTTPReqCall.Resp", _decode_http_req_call_response),
        MessageType.EXTRA_INFO: ("ExtraInfo.Req", _decode_extra_info_request),
        MessageType.HTTP_RESP_CALL: ("HTTPRespCall.Resp", _decode_http_resp_call_response),
    }
)


def _decode(
    decoders: Mapping[int, tuple[str, _Decoder]], frame_type: int, payload: bytes, sender: str
) -> Any:
    entry = decoders.get(frame_type)
    if entry is None:
        raise MalformedFrame(f"frame type {frame_type} is not a message {sender} sends")
    name, decoder = entry
    if not payload:
        raise MalformedFrame(f"{name} frame has an empty payload")
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    try:
        return decoder(payload, _u32(payload, 0)[0])
    except ProtocolError:
        raise
    except _READ_ERRORS as exc:
        raise MalformedFrame(f"{name} payload is not a valid FlatBuffer: {exc}") from exc


def decode_apisix_message(frame_type: int, payload: bytes) -> ApisixMessage:
    """Decode a frame APISIX sent (what a runner receives). Raises MalformedFrame."""
    result: ApisixMessage = _decode(_APISIX_DECODERS, frame_type, payload, "APISIX")
    return result


def decode_runner_message(frame_type: int, payload: bytes) -> RunnerMessage:
    """Decode a frame a runner sent (what APISIX receives). Raises MalformedFrame."""
    result: RunnerMessage = _decode(_RUNNER_DECODERS, frame_type, payload, "a runner")
    return result


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

# Room for the tables and vtables of any message; bodies are added on top so that a large body
# is copied into the builder once instead of through repeated doublings.
_BUILDER_BASE = 256


def _scalar(value: int, maximum: int, what: str) -> int:
    if not 0 <= value <= maximum:
        raise InvalidMessage(f"{what} {value!r} does not fit its wire type (0..{maximum})")
    return value


def _string_offset(b: Builder, text: str) -> int:
    offset: int = b.CreateString(text, "utf-8", "surrogateescape")
    return offset


def _create_entries(b: Builder, entries: Entries) -> int:
    """A [TextEntry] vector: each name before its value, as both reference builders do."""
    tables = []
    for entry in entries:
        name = b.CreateString(entry.name, "utf-8", "surrogateescape")
        value = entry.value
        value_offset = 0 if value is None else b.CreateString(value, "utf-8", "surrogateescape")
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUOffsetTRelativeSlot(1, value_offset, 0)
        tables.append(b.EndObject())
    b.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        b.PrependUOffsetTRelative(table)
    vector: int = b.EndVector()
    return vector


def _check_body(body: bytes, what: str) -> int:
    """Fail before copying a body that could never fit in a frame."""
    if len(body) > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"{what} of {len(body)} bytes cannot fit the {MAX_PAYLOAD}-byte frame limit"
        )
    return len(body)


def _frame(b: Builder, root: int, frame_type: MessageType) -> bytes:
    """Finish the buffer and return header + payload."""
    b.Finish(root)
    data = b.Bytes
    head = b.Head()
    header = encode_header(frame_type, len(data) - head)
    # The builder fills its buffer back to front, so the header usually fits in the unused
    # space before the payload and the frame leaves with a single copy.
    if head >= HEADER_SIZE:
        head -= HEADER_SIZE
        data[head : head + HEADER_SIZE] = header
        with memoryview(data) as view:
            return bytes(view[head:])
    with memoryview(data) as view:
        return header + view[head:]


def _encode_error_response(msg: ErrorResponse) -> bytes:
    b = Builder(_BUILDER_BASE)
    b.StartObject(1)
    b.PrependUint8Slot(0, _scalar(msg.code, 0xFF, "Err.Resp code"), 0)
    return _frame(b, b.EndObject(), MessageType.RPC_ERROR)


def _encode_prepare_conf_response(msg: PrepareConfResponse) -> bytes:
    b = Builder(_BUILDER_BASE)
    b.StartObject(1)
    b.PrependUint32Slot(0, _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token"), 0)
    return _frame(b, b.EndObject(), MessageType.PREPARE_CONF)


def _encode_stop(b: Builder, stop: Stop) -> int:
    body = b.CreateByteVector(stop.body) if stop.body else 0
    headers = _create_entries(b, stop.headers) if stop.headers else 0
    b.StartObject(3)
    b.PrependUint16Slot(0, _scalar(stop.status, 0xFFFF, "Stop status"), 0)
    b.PrependUOffsetTRelativeSlot(1, headers, 0)
    b.PrependUOffsetTRelativeSlot(2, body, 0)
    table: int = b.EndObject()
    return table


def _encode_rewrite(b: Builder, rewrite: Rewrite) -> int:
    path = 0 if rewrite.path is None else _string_offset(b, rewrite.path)
    headers = _create_entries(b, rewrite.headers) if rewrite.headers else 0
    args = _create_entries(b, rewrite.args) if rewrite.args else 0
    resp_headers = _create_entries(b, rewrite.resp_headers) if rewrite.resp_headers else 0
    body = 0 if rewrite.body is None else b.CreateByteVector(rewrite.body)
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, path, 0)
    b.PrependUOffsetTRelativeSlot(1, headers, 0)
    b.PrependUOffsetTRelativeSlot(2, args, 0)
    b.PrependUOffsetTRelativeSlot(3, resp_headers, 0)
    b.PrependUOffsetTRelativeSlot(4, body, 0)
    table: int = b.EndObject()
    return table


def _encode_http_req_call_response(msg: HTTPReqCallResponse) -> bytes:
    action = msg.action
    if action is None:
        b = Builder(_BUILDER_BASE)
        kind = offset = 0
    elif type(action) is Stop:
        b = Builder(_BUILDER_BASE + _check_body(action.body, "Stop body"))
        kind, offset = ACTION_STOP, _encode_stop(b, action)
    elif type(action) is Rewrite:
        b = Builder(_BUILDER_BASE + _check_body(action.body or b"", "Rewrite body"))
        kind, offset = ACTION_REWRITE, _encode_rewrite(b, action)
    else:
        raise InvalidMessage(
            f"HTTPReqCallResponse action must be Stop, Rewrite or None: {type(action).__name__}"
        )
    b.StartObject(3)
    b.PrependUint32Slot(0, _scalar(msg.id, 0xFFFFFFFF, "id"), 0)
    b.PrependUint8Slot(1, kind, 0)
    b.PrependUOffsetTRelativeSlot(2, offset, 0)
    return _frame(b, b.EndObject(), MessageType.HTTP_REQ_CALL)


def _build_extra_info_request(msg: ExtraInfoRequest) -> bytes:
    b = Builder(_BUILDER_BASE)
    info = msg.info
    if type(info) is Var:
        kind = INFO_VAR
        name = _string_offset(b, info.name)
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
    elif type(info) is ReqBody:
        kind = INFO_REQ_BODY
        b.StartObject(0)
    elif type(info) is RespBody:
        kind = INFO_RESP_BODY
        b.StartObject(0)
    else:
        raise InvalidMessage(
            f"ExtraInfoRequest info must be Var, ReqBody or RespBody: {type(info).__name__}"
        )
    offset = b.EndObject()
    b.StartObject(2)
    b.PrependUint8Slot(0, kind, 0)
    b.PrependUOffsetTRelativeSlot(1, offset, 0)
    return _frame(b, b.EndObject(), MessageType.EXTRA_INFO)


# ReqBody and RespBody requests carry no data: build each frame once, at import.
_BODY_REQUEST_FRAMES: Final[Mapping[type, bytes]] = MappingProxyType(
    {kind: _build_extra_info_request(ExtraInfoRequest(kind())) for kind in (ReqBody, RespBody)}
)


def _encode_extra_info_request(msg: ExtraInfoRequest) -> bytes:
    frame = _BODY_REQUEST_FRAMES.get(type(msg.info))
    return frame if frame is not None else _build_extra_info_request(msg)


def _encode_http_resp_call_response(msg: HTTPRespCallResponse) -> bytes:
    b = Builder(_BUILDER_BASE + _check_body(msg.body, "HTTPRespCall.Resp body"))
    headers = _create_entries(b, msg.headers) if msg.headers else 0
    body = b.CreateByteVector(msg.body) if msg.body else 0
    b.StartObject(4)
    b.PrependUint32Slot(0, _scalar(msg.id, 0xFFFFFFFF, "id"), 0)
    b.PrependUint16Slot(1, _scalar(msg.status, 0xFFFF, "HTTPRespCall.Resp status"), 0)
    b.PrependUOffsetTRelativeSlot(2, headers, 0)
    b.PrependUOffsetTRelativeSlot(3, body, 0)
    return _frame(b, b.EndObject(), MessageType.HTTP_RESP_CALL)


# APISIX -> runner, in the call order of APISIX's init.lua: a fake APISIX then looks real.


def _encode_prepare_conf_request(msg: PrepareConfRequest) -> bytes:
    b = Builder(_BUILDER_BASE)
    key = _string_offset(b, msg.key)
    conf = 0 if msg.conf is None else _create_entries(b, msg.conf)
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(1, key, 0)
    b.PrependUOffsetTRelativeSlot(0, conf, 0)
    return _frame(b, b.EndObject(), MessageType.PREPARE_CONF)


def _encode_http_req_call_request(msg: HTTPReqCallRequest) -> bytes:
    b = Builder(_BUILDER_BASE)
    path = _string_offset(b, msg.path)
    src_ip = b.CreateByteVector(msg.src_ip)
    args = _create_entries(b, msg.args)
    headers = _create_entries(b, msg.headers)
    b.StartObject(7)
    b.PrependUint32Slot(0, _scalar(msg.id, 0xFFFFFFFF, "id"), 0)
    b.PrependUint32Slot(6, _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token"), 0)
    b.PrependUOffsetTRelativeSlot(1, src_ip, 0)
    b.PrependUOffsetTRelativeSlot(3, path, 0)
    b.PrependUOffsetTRelativeSlot(4, args, 0)
    b.PrependUOffsetTRelativeSlot(5, headers, 0)
    b.PrependUint8Slot(2, _scalar(msg.method, 0xFF, "method"), 0)
    return _frame(b, b.EndObject(), MessageType.HTTP_REQ_CALL)


def _encode_http_resp_call_request(msg: HTTPRespCallRequest) -> bytes:
    b = Builder(_BUILDER_BASE)
    headers = _create_entries(b, msg.headers)
    b.StartObject(4)
    b.PrependUint32Slot(0, _scalar(msg.id, 0xFFFFFFFF, "id"), 0)
    b.PrependUint16Slot(1, _scalar(msg.status, 0xFFFF, "HTTPRespCall.Req status"), 0)
    b.PrependUOffsetTRelativeSlot(2, headers, 0)
    b.PrependUint32Slot(3, _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token"), 0)
    return _frame(b, b.EndObject(), MessageType.HTTP_RESP_CALL)


def _encode_extra_info_response(msg: ExtraInfoResponse) -> bytes:
    result = msg.result
    if result is None:
        b = Builder(_BUILDER_BASE)
        offset = 0
    else:
        b = Builder(_BUILDER_BASE + _check_body(result, "ExtraInfo.Resp result"))
        offset = b.CreateByteVector(result)
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, offset, 0)
    return _frame(b, b.EndObject(), MessageType.EXTRA_INFO)


_Encoder = Callable[[Any], bytes]

_ENCODERS: Final[Mapping[type, tuple[MessageType, _Encoder]]] = MappingProxyType(
    {
        ErrorResponse: (MessageType.RPC_ERROR, _encode_error_response),
        PrepareConfResponse: (MessageType.PREPARE_CONF, _encode_prepare_conf_response),
        HTTPReqCallResponse: (MessageType.HTTP_REQ_CALL, _encode_http_req_call_response),
        ExtraInfoRequest: (MessageType.EXTRA_INFO, _encode_extra_info_request),
        HTTPRespCallResponse: (MessageType.HTTP_RESP_CALL, _encode_http_resp_call_response),
        PrepareConfRequest: (MessageType.PREPARE_CONF, _encode_prepare_conf_request),
        HTTPReqCallRequest: (MessageType.HTTP_REQ_CALL, _encode_http_req_call_request),
        HTTPRespCallRequest: (MessageType.HTTP_RESP_CALL, _encode_http_resp_call_request),
        ExtraInfoResponse: (MessageType.EXTRA_INFO, _encode_extra_info_response),
    }
)


def message_type(msg: Message) -> MessageType:
    """The frame type byte ``msg`` travels under (ErrorResponse is always RPC_ERROR)."""
    entry = _ENCODERS.get(type(msg))
    if entry is None:
        raise InvalidMessage(f"{type(msg).__name__} is not an ext-plugin message")
    return entry[0]


def encode_message(msg: Message) -> bytes:
    """The whole frame (4-byte header + FlatBuffers payload) carrying ``msg``.

    Raises FrameTooLarge when the payload would exceed MAX_PAYLOAD (a runner then answers
    ``ErrorResponse(SERVICE_UNAVAILABLE)``) and InvalidMessage for values the wire cannot carry.
    """
    entry = _ENCODERS.get(type(msg))
    if entry is None:
        raise InvalidMessage(f"{type(msg).__name__} is not an ext-plugin message")
    encoder = entry[1]
    try:
        return encoder(msg)
    except ProtocolError:
        raise
    except (TypeError, ValueError, struct.error) as exc:
        raise InvalidMessage(f"cannot encode {type(msg).__name__}: {exc}") from exc
