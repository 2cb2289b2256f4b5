"""The flatbuffers-runtime encoder the codec used before its hand-written writer: the reference.

Kept verbatim (the ``flatbuffers`` package's ``Builder``, fields in schema order, children first),
so the tests can check that the fast writer produces exactly the bytes the runtime produces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from flatbuffers import Builder

from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    Entries,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    FrameTooLarge,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    InvalidMessage,
    Message,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    RespBody,
    Rewrite,
    Stop,
    Var,
)
from kafkaupstream.protocol.frames import HEADER_SIZE, encode_header

ACTION_STOP = 1
ACTION_REWRITE = 2
INFO_VAR = 1
INFO_REQ_BODY = 2
INFO_RESP_BODY = 3

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


_ENCODERS: Final[Mapping[type, Callable[[Any], bytes]]] = MappingProxyType(
    {
        ErrorResponse: _encode_error_response,
        PrepareConfResponse: _encode_prepare_conf_response,
        HTTPReqCallResponse: _encode_http_req_call_response,
        ExtraInfoRequest: _encode_extra_info_request,
        HTTPRespCallResponse: _encode_http_resp_call_response,
        PrepareConfRequest: _encode_prepare_conf_request,
        HTTPReqCallRequest: _encode_http_req_call_request,
        HTTPRespCallRequest: _encode_http_resp_call_request,
        ExtraInfoResponse: _encode_extra_info_response,
    }
)


def reference_encode(msg: Message) -> bytes:
    """The frame the flatbuffers runtime builds for ``msg`` (header included)."""
    return _ENCODERS[type(msg)](msg)
