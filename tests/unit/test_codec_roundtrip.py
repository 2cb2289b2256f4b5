"""Every message survives encode -> decode; decoding is lenient where APISIX's writers are odd."""

from __future__ import annotations

import struct

import pytest
from flatbuffers import Builder
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    FrameTooLarge,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    InvalidMessage,
    MalformedFrame,
    Message,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    ReqBody,
    RespBody,
    Rewrite,
    Stop,
    TextEntry,
    Var,
    decode_apisix_message,
    decode_runner_message,
    encode_message,
    message_type,
)


def escaped(raw: bytes) -> str:
    """How the codec represents raw wire bytes that need not be UTF-8."""
    return raw.decode("utf-8", "surrogateescape")


# --- strategies (also used by test_codec_fuzz and test_connection) ----------------------------

texts = st.one_of(st.text(max_size=30), st.binary(max_size=30).map(escaped))
entries = st.lists(st.builds(TextEntry, texts, st.none() | texts), max_size=5).map(tuple)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)
bodies = st.binary(max_size=200)

apisix_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(PrepareConfRequest, conf=st.none() | entries, key=texts),
    st.builds(
        HTTPReqCallRequest,
        id=u32,
        conf_token=u32,
        method=st.integers(0, 255),
        path=texts,
        src_ip=st.binary(max_size=16),
        args=entries,
        headers=entries,
    ),
    st.builds(HTTPRespCallRequest, id=u32, conf_token=u32, status=u16, headers=entries),
    st.builds(ExtraInfoResponse, st.none() | bodies),
)
stops = st.builds(Stop, status=u16, headers=entries, body=bodies)
rewrites = st.builds(
    Rewrite,
    path=st.none() | texts,
    headers=entries,
    args=entries,
    resp_headers=entries,
    body=st.none() | bodies,
)
infos = st.one_of(st.builds(Var, texts), st.just(ReqBody()), st.just(RespBody()))
runner_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(PrepareConfResponse, u32),
    st.builds(ErrorResponse, st.sampled_from(ErrorCode)),
    st.builds(HTTPReqCallResponse, id=u32, action=st.none() | stops | rewrites),
    st.builds(ExtraInfoRequest, infos),
    st.builds(HTTPRespCallResponse, id=u32, status=u16, headers=entries, body=bodies),
)

EXPECTED_TYPE = {
    PrepareConfRequest: MessageType.PREPARE_CONF,
    PrepareConfResponse: MessageType.PREPARE_CONF,
    HTTPReqCallRequest: MessageType.HTTP_REQ_CALL,
    HTTPReqCallResponse: MessageType.HTTP_REQ_CALL,
    ExtraInfoRequest: MessageType.EXTRA_INFO,
    ExtraInfoResponse: MessageType.EXTRA_INFO,
    HTTPRespCallRequest: MessageType.HTTP_RESP_CALL,
    HTTPRespCallResponse: MessageType.HTTP_RESP_CALL,
    ErrorResponse: MessageType.RPC_ERROR,
}


def split(frame: bytes) -> tuple[int, bytes]:
    assert int.from_bytes(frame[1:4], "big") == len(frame) - 4 > 0
    return frame[0], frame[4:]


# --- round trips --------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(apisix_messages)
def test_apisix_messages_round_trip(msg: Message):
    frame_type, payload = split(encode_message(msg))
    assert frame_type == EXPECTED_TYPE[type(msg)] == message_type(msg)
    assert decode_apisix_message(frame_type, payload) == msg


@settings(deadline=None, max_examples=300)
@given(runner_messages)
def test_runner_messages_round_trip(msg: Message):
    frame_type, payload = split(encode_message(msg))
    assert frame_type == EXPECTED_TYPE[type(msg)] == message_type(msg)
    assert decode_runner_message(frame_type, payload) == msg


@pytest.mark.parametrize(
    "msg",
    [
        HTTPReqCallRequest(id=2**32 - 1, conf_token=2**32 - 1, method=14),
        HTTPRespCallRequest(id=2**32 - 1, conf_token=2**32 - 1, status=0xFFFF),
        HTTPReqCallResponse(id=2**32 - 1, action=Stop(status=0xFFFF)),
        PrepareConfResponse(conf_token=2**32 - 1),
    ],
)
def test_largest_scalars_round_trip(msg: Message):
    frame_type, payload = split(encode_message(msg))
    if isinstance(msg, HTTPReqCallRequest | HTTPRespCallRequest):
        assert decode_apisix_message(frame_type, payload) == msg
    else:
        assert decode_runner_message(frame_type, payload) == msg


@pytest.mark.parametrize(
    ("absent", "empty"),
    [
        (PrepareConfRequest(conf=None, key="k"), PrepareConfRequest(conf=(), key="k")),
        (ExtraInfoResponse(None), ExtraInfoResponse(b"")),
        (
            HTTPRespCallRequest(id=1, conf_token=1, headers=(TextEntry("x", None),)),
            HTTPRespCallRequest(id=1, conf_token=1, headers=(TextEntry("x", ""),)),
        ),
    ],
)
def test_absent_and_empty_stay_distinct_from_apisix(absent: Message, empty: Message):
    decoded_absent = decode_apisix_message(*split(encode_message(absent)))
    decoded_empty = decode_apisix_message(*split(encode_message(empty)))
    assert (decoded_absent, decoded_empty) == (absent, empty)


@pytest.mark.parametrize(
    ("absent", "empty"),
    [
        (Rewrite(path=None), Rewrite(path="")),
        (Rewrite(body=None), Rewrite(body=b"")),
        (Rewrite(args=(TextEntry("d"),)), Rewrite(args=(TextEntry("d", ""),))),
    ],
)
def test_absent_and_empty_stay_distinct_from_the_runner(absent: Rewrite, empty: Rewrite):
    for rewrite in (absent, empty):
        msg = HTTPReqCallResponse(id=3, action=rewrite)
        assert decode_runner_message(*split(encode_message(msg))) == msg


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_non_utf8_bytes_reach_the_wire_unchanged(raw: bytes):
    msg = HTTPReqCallResponse(id=1, action=Stop(headers=(TextEntry(escaped(raw), escaped(raw)),)))
    frame = encode_message(msg)
    assert frame.count(raw) >= 2  # name and value, verbatim
    assert decode_runner_message(*split(frame)) == msg


def test_unknown_error_code_is_kept_as_its_number():
    # APISIX reports "unknown err 7" rather than rejecting such a frame.
    decoded = decode_runner_message(*split(encode_message(ErrorResponse(7))))  # type: ignore[arg-type]
    assert isinstance(decoded, ErrorResponse)
    assert decoded.code == 7
    assert decoded.code != ErrorCode.CONF_TOKEN_NOT_FOUND


def test_bad_request_is_the_default_and_omitted():
    frame = encode_message(ErrorResponse(ErrorCode.BAD_REQUEST))
    assert frame[:4] == b"\x00\x00\x00\x0c"  # the empty table: 12 bytes with the Python builder
    assert decode_runner_message(*split(frame)) == ErrorResponse(ErrorCode.BAD_REQUEST)


def test_cheapest_reply_is_a_12_byte_no_action_response():
    assert len(encode_message(HTTPReqCallResponse(id=0))) == 4 + 12


# --- what cannot be encoded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        HTTPReqCallResponse(id=2**32),
        HTTPReqCallResponse(id=-1),
        HTTPReqCallResponse(id=1, action=Stop(status=0x10000)),
        HTTPRespCallResponse(id=1, status=-1),
        HTTPReqCallRequest(id=1, conf_token=1, method=256),
        ErrorResponse(256),  # type: ignore[arg-type]
        PrepareConfResponse(conf_token=2**32),
        HTTPReqCallResponse(id=1, action=Stop(headers=(TextEntry("\ud800", "x"),))),
        ExtraInfoRequest(Var("\udfff")),
        HTTPReqCallResponse(id=1, action="stop"),  # type: ignore[arg-type]
        ExtraInfoRequest("body"),  # type: ignore[arg-type]
        HTTPRespCallResponse(id="1"),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_unencodable_values_raise_invalid_message(msg: Message):
    with pytest.raises(InvalidMessage) as info:
        encode_message(msg)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtocolError)


def test_non_messages_raise_invalid_message():
    with pytest.raises(InvalidMessage, match="not an ext-plugin message"):
        encode_message(TextEntry("a", "b"))  # type: ignore[arg-type]


# --- the frame limit ----------------------------------------------------------------------------


def _overhead(residue: int) -> int:
    """Payload bytes an ExtraInfoResponse adds to a result of length ≡ residue (mod 4)."""
    size = 1000 + residue
    return len(encode_message(ExtraInfoResponse(bytes(size)))) - 4 - size


def test_reply_at_the_limit_fits_and_one_byte_more_raises_frame_too_large():
    largest = max(
        n for n in range(MAX_PAYLOAD - 40, MAX_PAYLOAD) if n + _overhead(n % 4) <= MAX_PAYLOAD
    )
    frame = encode_message(ExtraInfoResponse(bytes(largest)))
    assert int.from_bytes(frame[1:4], "big") <= MAX_PAYLOAD
    with pytest.raises(FrameTooLarge) as info:
        encode_message(ExtraInfoResponse(bytes(largest + 1)))
    assert info.value.error_code == ErrorCode.SERVICE_UNAVAILABLE


@pytest.mark.parametrize(
    "msg",
    [
        HTTPReqCallResponse(id=1, action=Stop(body=bytes(MAX_PAYLOAD))),
        HTTPReqCallResponse(id=1, action=Rewrite(body=bytes(MAX_PAYLOAD + 1))),
        HTTPRespCallResponse(id=1, body=bytes(MAX_PAYLOAD - 8)),
        HTTPReqCallResponse(id=1, action=Stop(headers=(TextEntry("x", "y" * MAX_PAYLOAD),))),
    ],
    ids=["stop", "rewrite", "resp-call-just-over", "huge-header"],
)
def test_oversize_replies_raise_frame_too_large(msg: Message):
    with pytest.raises(FrameTooLarge):
        encode_message(msg)


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 30, 31, 32, 33, 100])
def test_builder_growth_still_yields_valid_frames(count: int):
    # Sizes around the builder's initial capacity exercise both ways the header is attached.
    msg = HTTPRespCallResponse(
        id=count, headers=tuple(TextEntry(f"h{i}", "v" * i) for i in range(count))
    )
    assert decode_runner_message(*split(encode_message(msg))) == msg


# --- lenient decoding of other writers' layouts ------------------------------------------------


def _position(b: Builder, offset: int) -> int:
    """Where a builder offset lands in the finished payload."""
    return len(b.Bytes) - offset - b.Head()


def test_lua_garbage_after_empty_strings_is_ignored():
    b = Builder(0)
    key = b.CreateString("")
    name = b.CreateString("a")
    value = b.CreateString("")
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, value, 0)
    entry = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(entry)
    conf = b.EndVector()
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(1, key, 0)
    b.PrependUOffsetTRelativeSlot(0, conf, 0)
    b.Finish(b.EndObject())
    payload = bytearray(b.Output())
    for offset in (key, value):
        at = _position(b, offset)
        assert payload[at : at + 6] == bytes(6)  # length 0, then the NUL and padding
        payload[at + 4 : at + 6] = b"/0"  # what APISIX's Lua builder leaves there
    decoded = decode_apisix_message(1, bytes(payload))
    assert decoded == PrepareConfRequest(conf=(TextEntry("a", ""),), key="")


def test_lua_garbage_after_an_empty_byte_vector_is_ignored():
    b = Builder(0)
    result = b.CreateByteVector(b"")
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, result, 0)
    b.Finish(b.EndObject())
    payload = bytearray(b.Output())
    at = _position(b, result)
    payload[at + 4 : at + 6] = b"/0"
    assert decode_apisix_message(3, bytes(payload)) == ExtraInfoResponse(b"")


def test_fields_beyond_a_short_vtable_are_absent():
    # An older writer (a6pluginprotos' Rewrite has 3 slots) or trimmed trailing defaults.
    b = Builder(0)
    path = b.CreateString("/p")
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, path, 0)
    rewrite = b.EndObject()
    b.StartObject(3)
    b.PrependUint8Slot(1, 2, 0)
    b.PrependUOffsetTRelativeSlot(2, rewrite, 0)
    b.Finish(b.EndObject())
    decoded = decode_runner_message(2, bytes(b.Output()))
    assert decoded == HTTPReqCallResponse(id=0, action=Rewrite(path="/p"))


def test_method_outside_the_enum_is_kept_raw():
    msg = HTTPReqCallRequest(id=5, conf_token=9, method=200)
    assert decode_apisix_message(*split(encode_message(msg))) == msg


def test_payload_may_be_any_bytes_like_object_and_bodies_come_back_as_bytes():
    _, payload = split(encode_message(ExtraInfoResponse(b"body")))
    for view in (bytearray(payload), memoryview(payload)):
        decoded = decode_apisix_message(3, view)  # type: ignore[arg-type]
        assert decoded == ExtraInfoResponse(b"body")
        assert isinstance(decoded, ExtraInfoResponse)
        assert type(decoded.result) is bytes


def _union_only(type_field: int, union_type: int, value: bool, value_field: int) -> bytes:
    """A root table holding only a union's type (and optionally an empty value table)."""
    b = Builder(0)
    table = 0
    if value:
        b.StartObject(0)
        table = b.EndObject()
    b.StartObject(3)
    b.PrependUint8Slot(type_field, union_type, 0)
    if value:
        b.PrependUOffsetTRelativeSlot(value_field, table, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


@pytest.mark.parametrize(
    ("frame_type", "payload", "message"),
    [
        (2, _union_only(1, 3, True, 2), "unknown action type 3"),
        (2, _union_only(1, 255, True, 2), "unknown action type 255"),
        (2, _union_only(1, 1, False, 2), "Stop has its union type set but no table"),
        (2, _union_only(1, 2, False, 2), "Rewrite has its union type set but no table"),
        (3, _union_only(0, 4, True, 1), "unsupported info type 4"),
        (3, _union_only(0, 0, False, 1), "unsupported info type 0"),
        (3, _union_only(0, 1, False, 1), "Var has its union type set but no table"),
    ],
)
def test_bad_unions_are_malformed(frame_type: int, payload: bytes, message: str):
    with pytest.raises(MalformedFrame, match=message):
        decode_runner_message(frame_type, payload)


def test_body_requests_without_their_empty_table_are_accepted():
    # APISIX never reads the ReqBody/RespBody table, so its absence changes nothing.
    assert decode_runner_message(3, _union_only(0, 2, False, 1)) == ExtraInfoRequest(ReqBody())
    assert decode_runner_message(3, _union_only(0, 3, False, 1)) == ExtraInfoRequest(RespBody())


def test_union_value_without_a_type_means_no_action():
    assert decode_runner_message(2, _union_only(1, 0, True, 2)) == HTTPReqCallResponse(id=0)


@pytest.mark.parametrize(
    ("decode", "frame_type"),
    [
        (decode_apisix_message, 0),
        (decode_apisix_message, 5),
        (decode_runner_message, 5),
        (decode_runner_message, 255),
    ],
)
def test_types_not_sent_in_that_direction_are_malformed(decode, frame_type: int):
    with pytest.raises(MalformedFrame, match=f"frame type {frame_type} is not"):
        decode(frame_type, b"\x08\x00\x00\x00\x04\x00\x04\x00\x04\x00\x00\x00")


def test_empty_payload_is_malformed():
    with pytest.raises(MalformedFrame, match="empty payload"):
        decode_apisix_message(2, b"")


def test_entries_sharing_storage_are_decoded_once():
    # A hostile payload: many vector slots pointing at one table whose strings are large. Decoding
    # must share the objects instead of materialising every copy.
    b = Builder(0)
    big = b.CreateString("v" * 65536)
    name = b.CreateString("n" * 1000)
    tables = []
    for _ in range(3):
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUOffsetTRelativeSlot(1, big, 0)
        tables.append(b.EndObject())
    slots = [tables[i % 3] for i in range(3000)]
    b.StartVector(4, len(slots), 4)
    for table in reversed(slots):
        b.PrependUOffsetTRelative(table)
    headers = b.EndVector()
    b.StartObject(4)
    b.PrependUOffsetTRelativeSlot(2, headers, 0)
    b.Finish(b.EndObject())
    decoded = decode_apisix_message(4, bytes(b.Output()))
    assert isinstance(decoded, HTTPRespCallRequest)
    assert len(decoded.headers) == 3000
    assert len({id(entry) for entry in decoded.headers}) == 3
    assert len({id(entry.value) for entry in decoded.headers}) == 1
    assert decoded.headers[0] == TextEntry("n" * 1000, "v" * 65536)


def test_vtable_before_the_buffer_start_is_malformed():
    payload = struct.pack("<Ii", 4, 1000)
    with pytest.raises(MalformedFrame, match="vtable"):
        decode_runner_message(1, payload)
