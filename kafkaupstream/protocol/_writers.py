"""Writing the ext-plugin messages as whole frames (header + FlatBuffers payload).

Fields are added in schema order with children created first: the call order behind the
Python-built reference frames and APISIX's Lua builder, so our bytes match theirs wherever the two
runtimes agree. :class:`FlatWriter` reproduces the runtime Builder's layout, so each frame is the
one the ``flatbuffers`` package would build, byte for byte (the unit tests check it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Final

from kafkaupstream.protocol._flatbuffers import FlatWriter
from kafkaupstream.protocol._schema import (
    ACTION_REWRITE,
    ACTION_STOP,
    INFO_REQ_BODY,
    INFO_RESP_BODY,
    INFO_VAR,
)
from kafkaupstream.protocol.errors import FrameTooLarge, InvalidMessage, ProtocolError
from kafkaupstream.protocol.frames import MAX_PAYLOAD, encode_header
from kafkaupstream.protocol.messages import (
    Entries,
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
    Stop,
    Var,
)


def _scalar(value: int, maximum: int, what: str) -> int:
    if not 0 <= value <= maximum:
        raise InvalidMessage(f"{what} {value!r} does not fit its wire type (0..{maximum})")
    return value


def _text(text: str) -> bytes:
    # str.encode, not text.encode: a non-string is then a TypeError (InvalidMessage), as before.
    return str.encode(text, "utf-8", "surrogateescape")


def _entries(w: FlatWriter, entries: Entries) -> int:
    """A [TextEntry] vector: each name before its value, as both reference builders do."""
    tables = []
    for entry in entries:
        name = w.string(_text(entry.name))
        value = entry.value
        value_at = 0 if value is None else w.string(_text(value))
        w.start(2)
        w.add_offset(0, name)
        w.add_offset(1, value_at)
        tables.append(w.end())
    return w.offset_vector(tables)


def _check_body(body: bytes, what: str) -> None:
    """Fail before copying a body that could never fit in a frame."""
    if len(body) > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"{what} of {len(body)} bytes cannot fit the {MAX_PAYLOAD}-byte frame limit"
        )


def _frame(w: FlatWriter, root: int, frame_type: MessageType) -> bytes:
    """Finish the payload and return header + payload."""
    return w.finish(root, partial(encode_header, frame_type))


def _encode_error_response(msg: ErrorResponse) -> bytes:
    w = FlatWriter()
    w.start(1)
    w.add_u8(0, _scalar(msg.code, 0xFF, "Err.Resp code"))
    return _frame(w, w.end(), MessageType.RPC_ERROR)


def _encode_prepare_conf_response(msg: PrepareConfResponse) -> bytes:
    w = FlatWriter()
    w.start(1)
    w.add_u32(0, _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token"))
    return _frame(w, w.end(), MessageType.PREPARE_CONF)


def _stop(w: FlatWriter, stop: Stop) -> int:
    _check_body(stop.body, "Stop body")
    body = w.bytes_vector(stop.body) if stop.body else 0
    headers = _entries(w, stop.headers) if stop.headers else 0
    status = _scalar(stop.status, 0xFFFF, "Stop status")
    w.start(3)
    w.add_u16(0, status)
    w.add_offset(1, headers)
    w.add_offset(2, body)
    return w.end()


def _rewrite(w: FlatWriter, rewrite: Rewrite) -> int:
    _check_body(rewrite.body or b"", "Rewrite body")
    path = 0 if rewrite.path is None else w.string(_text(rewrite.path))
    headers = _entries(w, rewrite.headers) if rewrite.headers else 0
    args = _entries(w, rewrite.args) if rewrite.args else 0
    resp_headers = _entries(w, rewrite.resp_headers) if rewrite.resp_headers else 0
    body = 0 if rewrite.body is None else w.bytes_vector(rewrite.body)
    w.start(5)
    for slot, offset in enumerate((path, headers, args, resp_headers, body)):
        w.add_offset(slot, offset)
    return w.end()


def _encode_http_req_call_response(msg: HTTPReqCallResponse) -> bytes:
    action = msg.action
    w = FlatWriter()
    if action is None:
        kind = offset = 0
    elif type(action) is Stop:
        kind, offset = ACTION_STOP, _stop(w, action)
    elif type(action) is Rewrite:
        kind, offset = ACTION_REWRITE, _rewrite(w, action)
    else:
        raise InvalidMessage(
            f"HTTPReqCallResponse action must be Stop, Rewrite or None: {type(action).__name__}"
        )
    call_id = _scalar(msg.id, 0xFFFFFFFF, "id")
    w.start(3)
    w.add_u32(0, call_id)
    w.add_u8(1, kind)
    w.add_offset(2, offset)
    return _frame(w, w.end(), MessageType.HTTP_REQ_CALL)


def _build_extra_info_request(msg: ExtraInfoRequest) -> bytes:
    w = FlatWriter()
    info = msg.info
    if type(info) is Var:
        kind = INFO_VAR
        name = w.string(_text(info.name))
        w.start(1)
        w.add_offset(0, name)
    elif type(info) is ReqBody:
        kind = INFO_REQ_BODY
        w.start(0)
    elif type(info) is RespBody:
        kind = INFO_RESP_BODY
        w.start(0)
    else:
        raise InvalidMessage(
            f"ExtraInfoRequest info must be Var, ReqBody or RespBody: {type(info).__name__}"
        )
    offset = w.end()
    w.start(2)
    w.add_u8(0, kind)
    w.add_offset(1, offset)
    return _frame(w, w.end(), MessageType.EXTRA_INFO)


# ReqBody and RespBody requests carry no data: build each frame once, at import.
_BODY_REQUEST_FRAMES: Final[Mapping[type, bytes]] = MappingProxyType(
    {kind: _build_extra_info_request(ExtraInfoRequest(kind())) for kind in (ReqBody, RespBody)}
)


def _encode_extra_info_request(msg: ExtraInfoRequest) -> bytes:
    frame = _BODY_REQUEST_FRAMES.get(type(msg.info))
    return frame if frame is not None else _build_extra_info_request(msg)


def _encode_http_resp_call_response(msg: HTTPRespCallResponse) -> bytes:
    _check_body(msg.body, "HTTPRespCall.Resp body")
    w = FlatWriter()
    headers = _entries(w, msg.headers) if msg.headers else 0
    body = w.bytes_vector(msg.body) if msg.body else 0
    call_id = _scalar(msg.id, 0xFFFFFFFF, "id")
    status = _scalar(msg.status, 0xFFFF, "HTTPRespCall.Resp status")
    w.start(4)
    w.add_u32(0, call_id)
    w.add_u16(1, status)
    w.add_offset(2, headers)
    w.add_offset(3, body)
    return _frame(w, w.end(), MessageType.HTTP_RESP_CALL)


# APISIX -> runner, in the call order of APISIX's init.lua: a fake APISIX then looks real.


def _encode_prepare_conf_request(msg: PrepareConfRequest) -> bytes:
    w = FlatWriter()
    key = w.string(_text(msg.key))
    conf = 0 if msg.conf is None else _entries(w, msg.conf)
    w.start(2)
    w.add_offset(1, key)
    w.add_offset(0, conf)
    return _frame(w, w.end(), MessageType.PREPARE_CONF)


def _encode_http_req_call_request(msg: HTTPReqCallRequest) -> bytes:
    w = FlatWriter()
    path = w.string(_text(msg.path))
    src_ip = w.bytes_vector(msg.src_ip)
    args = _entries(w, msg.args)
    headers = _entries(w, msg.headers)
    call_id = _scalar(msg.id, 0xFFFFFFFF, "id")
    token = _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token")
    method = _scalar(msg.method, 0xFF, "method")
    w.start(7)
    w.add_u32(0, call_id)
    w.add_u32(6, token)
    w.add_offset(1, src_ip)
    w.add_offset(3, path)
    w.add_offset(4, args)
    w.add_offset(5, headers)
    w.add_u8(2, method)
    return _frame(w, w.end(), MessageType.HTTP_REQ_CALL)


def _encode_http_resp_call_request(msg: HTTPRespCallRequest) -> bytes:
    w = FlatWriter()
    headers = _entries(w, msg.headers)
    call_id = _scalar(msg.id, 0xFFFFFFFF, "id")
    status = _scalar(msg.status, 0xFFFF, "HTTPRespCall.Req status")
    token = _scalar(msg.conf_token, 0xFFFFFFFF, "conf_token")
    w.start(4)
    w.add_u32(0, call_id)
    w.add_u16(1, status)
    w.add_offset(2, headers)
    w.add_u32(3, token)
    return _frame(w, w.end(), MessageType.HTTP_RESP_CALL)


def _encode_extra_info_response(msg: ExtraInfoResponse) -> bytes:
    result = msg.result
    w = FlatWriter()
    offset = 0
    if result is not None:
        _check_body(result, "ExtraInfo.Resp result")
        offset = w.bytes_vector(result)
    w.start(1)
    w.add_offset(0, offset)
    return _frame(w, w.end(), MessageType.EXTRA_INFO)


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
    try:
        return entry[1](msg)
    except ProtocolError:
        raise
    except (TypeError, ValueError, struct.error) as exc:
        raise InvalidMessage(f"cannot encode {type(msg).__name__}: {exc}") from exc
