"""Decoding each ext-plugin message from its FlatBuffers payload, and which frame holds which.

Hand-written instead of the runtime's ``Table``, on the bounds-checked reads of ``_flatreader``:
arbitrary bytes only ever raise :class:`MalformedFrame`, and nothing is copied except the
strings and byte vectors returned (one copy each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from kafkaupstream.protocol._flatreader import (
    READ_ERRORS,
    _deref,
    _entries,
    _entries_at,
    _field_bytes,
    _fields,
    _string,
    _u8,
    _u16,
    _u32,
)
from kafkaupstream.protocol._schema import (
    ACTION_REWRITE,
    ACTION_STOP,
    INFO_REQ_BODY,
    INFO_RESP_BODY,
    INFO_VAR,
)
from kafkaupstream.protocol.errors import MalformedFrame, ProtocolError
from kafkaupstream.protocol.messages import (
    ApisixMessage,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    RespBody,
    Rewrite,
    RunnerMessage,
    Stop,
    Var,
)


def _decode_prepare_conf_request(buf: bytes, root: int) -> PrepareConfRequest:
    conf, key = _fields(buf, root, 2)
    return PrepareConfRequest(
        conf=_entries_at(buf, _deref(buf, root + conf)) if conf else None,
        key=_string(buf, root, key),
    )


def _decode_http_req_call_request(buf: bytes, root: int) -> HTTPReqCallRequest:
    id_, src_ip, method, path, args, headers, token = _fields(buf, root, 7)
    # Positional: keyword arguments cost a quarter of building the message.
    return HTTPReqCallRequest(
        _u32(buf, root + id_)[0] if id_ else 0,
        _u32(buf, root + token)[0] if token else 0,
        buf[root + method] if method else 0,
        _string(buf, root, path),
        _field_bytes(buf, root + src_ip) if src_ip else b"",
        _entries_at(buf, root + args + _u32(buf, root + args)[0]) if args else (),
        _entries_at(buf, root + headers + _u32(buf, root + headers)[0]) if headers else (),
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
    return ExtraInfoResponse(_field_bytes(buf, root + result) if result else None)


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
        body=_field_bytes(buf, table + body) if body else b"",
    )


def _decode_rewrite(buf: bytes, table: int) -> Rewrite:
    path, headers, args, resp_headers, body = _fields(buf, table, 5)
    return Rewrite(
        path=_string(buf, table, path) if path else None,
        headers=_entries(buf, table, headers),
        args=_entries(buf, table, args),
        resp_headers=_entries(buf, table, resp_headers),
        body=_field_bytes(buf, table + body) if body else None,
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
        body=_field_bytes(buf, root + body) if body else b"",
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
    except READ_ERRORS as exc:
        raise MalformedFrame(f"{name} payload is not a valid FlatBuffer: {exc}") from exc


def decode_apisix_message(frame_type: int, payload: bytes) -> ApisixMessage:
    """Decode a frame APISIX sent (what a runner receives). Raises MalformedFrame."""
    result: ApisixMessage = _decode(_APISIX_DECODERS, frame_type, payload, "APISIX")
    return result


def decode_runner_message(frame_type: int, payload: bytes) -> RunnerMessage:
    """Decode a frame a runner sent (what APISIX receives). Raises MalformedFrame."""
    result: RunnerMessage = _decode(_RUNNER_DECODERS, frame_type, payload, "a runner")
    return result
