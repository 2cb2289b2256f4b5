"""The golden frames: APISIX's Lua-built requests and APISIX-verified replies.

They are copies of ``shared/vectors`` kept in ``tests/data/vectors`` so that a clean clone tests
against them; when ``shared/`` is checked out beside the repository the copies must match it.

Expected values come from the protocol reference (Appendix A and the tests it cites), not from our
decoder; presence checks use the ``flatbuffers`` runtime's own ``Table`` reader as a second opinion.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from flatbuffers.number_types import Uint8Flags, Uint16Flags
from flatbuffers.table import Table

from kafkaupstream.protocol import (
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallResponse,
    Message,
    Method,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    RespBody,
    Rewrite,
    Stop,
    TextEntry,
    Var,
    decode_apisix_message,
    decode_runner_message,
    encode_message,
)

VECTORS_DIR = Path(__file__).resolve().parents[1] / "data" / "vectors"
UPSTREAM_VECTORS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
LUA_FILE = "ext-plugin-golden-frames-lua.txt"
RUNNER_FILE = "ext-plugin-golden-frames-runner.txt"


def load_vectors(file_name: str) -> dict[str, bytes]:
    """``NAME HEX`` lines -> whole frames."""
    path = VECTORS_DIR / file_name
    frames = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, hex_frame = line.split()
            frames[name] = bytes.fromhex(hex_frame)
    return frames


KEY = "route#1#ext-plugin-pre-req#1"

# APISIX -> runner (Lua-built).
LUA_EXPECTED: dict[str, Message] = {
    "PREPARE_CONF_NO_CONF": PrepareConfRequest(conf=None, key=KEY),
    "PREPARE_CONF_ONE": PrepareConfRequest(
        conf=(TextEntry("stop", '{"status":403}'),),
        key=KEY,
    ),
    "HTTP_REQ_CALL_GET": HTTPReqCallRequest(
        id=0,
        conf_token=1,
        method=Method.GET,
        path="/hello",
        src_ip=bytes([127, 0, 0, 1]),
        args=(),
        headers=(TextEntry("host", "localhost"),),
    ),
    "EXTRA_INFO_RESP_VALUE": ExtraInfoResponse(b"127.0.0.1"),
    "EXTRA_INFO_RESP_NIL": ExtraInfoResponse(None),
}

# Runner -> APISIX (Python-built, read back by APISIX's Lua readers).
RUNNER_EXPECTED: dict[str, Message] = {
    "PREPARE_CONF_RESP_TOKEN1": PrepareConfResponse(conf_token=1),
    "ERR_CONF_TOKEN_NOT_FOUND": ErrorResponse(ErrorCode.CONF_TOKEN_NOT_FOUND),
    "ERR_SERVICE_UNAVAILABLE": ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE),
    "HTTP_REQ_CALL_RESP_STOP": HTTPReqCallResponse(
        id=0,
        action=Stop(
            status=405,
            headers=(
                TextEntry("X-Resp", "foo"),
                TextEntry("X-Same", "one"),
                TextEntry("X-Same", "two"),
            ),
            body=b"cat",
        ),
    ),
    "HTTP_REQ_CALL_RESP_REWRITE": HTTPReqCallResponse(
        id=0,
        action=Rewrite(
            path="/uri",
            headers=(TextEntry("X-Delete", None), TextEntry("X-Change", "bar")),
            args=(TextEntry("a", "1"), TextEntry("d", None)),
            resp_headers=(TextEntry("X-Resp", "foo"),),
            body=b"abc\n",
        ),
    ),
    "HTTP_REQ_CALL_RESP_NOOP": HTTPReqCallResponse(id=0, action=None),
    "EXTRA_INFO_REQ_VAR": ExtraInfoRequest(Var("remote_addr")),
    "EXTRA_INFO_REQ_REQBODY": ExtraInfoRequest(ReqBody()),
    "EXTRA_INFO_REQ_RESPBODY": ExtraInfoRequest(RespBody()),
    "HTTP_RESP_CALL_RESP": HTTPRespCallResponse(
        id=0,
        status=201,
        headers=(TextEntry("Content-Type", "application/json"),),
        body=b"{}",
    ),
}

# Python and Lua builders agree byte for byte except where Lua keeps trailing absent vtable slots.
LUA_UNTRIMMED_VTABLE = {"EXTRA_INFO_RESP_NIL"}


def runtime_root(payload: bytes) -> Table:
    """The root table as the flatbuffers runtime sees it (an independent reader)."""
    return Table(bytearray(payload), struct.unpack_from("<I", payload, 0)[0])


def runtime_field(table: Table, field_id: int) -> int:
    offset: int = table.Offset(4 + 2 * field_id)
    return offset


def split(frame: bytes) -> tuple[int, bytes]:
    """Check the header against the payload and return (type, payload)."""
    assert int.from_bytes(frame[1:4], "big") == len(frame) - 4
    return frame[0], frame[4:]


def test_every_vector_has_an_expected_value():
    assert set(load_vectors(LUA_FILE)) == set(LUA_EXPECTED)
    assert set(load_vectors(RUNNER_FILE)) == set(RUNNER_EXPECTED)


@pytest.mark.parametrize("file_name", [LUA_FILE, RUNNER_FILE])
def test_the_copies_match_shared_vectors_when_it_is_checked_out(file_name: str):
    upstream = UPSTREAM_VECTORS_DIR / file_name
    if not upstream.is_file():
        pytest.skip(f"{upstream} is not checked out beside the repository; the copy is used as is")
    assert (VECTORS_DIR / file_name).read_bytes() == upstream.read_bytes()


@pytest.mark.parametrize("name", sorted(LUA_EXPECTED))
def test_lua_frame_decodes_to_documented_values(name: str):
    frame_type, payload = split(load_vectors(LUA_FILE)[name])
    assert decode_apisix_message(frame_type, payload) == LUA_EXPECTED[name]


@pytest.mark.parametrize("name", sorted(RUNNER_EXPECTED))
def test_runner_frame_decodes_to_documented_values(name: str):
    frame_type, payload = split(load_vectors(RUNNER_FILE)[name])
    assert decode_runner_message(frame_type, payload) == RUNNER_EXPECTED[name]


@pytest.mark.parametrize("name", sorted(RUNNER_EXPECTED))
def test_our_runner_frame_is_byte_identical_to_golden(name: str):
    golden = load_vectors(RUNNER_FILE)[name]
    ours = encode_message(RUNNER_EXPECTED[name])
    assert decode_runner_message(*split(ours)) == decode_runner_message(*split(golden))
    assert ours.hex() == golden.hex()


@pytest.mark.parametrize("name", sorted(LUA_EXPECTED))
def test_our_apisix_frame_matches_lua_frame(name: str):
    golden = load_vectors(LUA_FILE)[name]
    ours = encode_message(LUA_EXPECTED[name])
    assert decode_apisix_message(*split(ours)) == decode_apisix_message(*split(golden))
    if name in LUA_UNTRIMMED_VTABLE:
        assert len(ours) < len(golden)
    else:
        assert ours.hex() == golden.hex()


def test_lua_nil_result_keeps_an_absent_slot_python_trims():
    _, lua = split(load_vectors(LUA_FILE)["EXTRA_INFO_RESP_NIL"])
    _, ours = split(encode_message(ExtraInfoResponse(None)))
    assert (len(lua), len(ours)) == (16, 12)
    for payload in (lua, ours):
        assert runtime_field(runtime_root(payload), 0) == 0


def test_lua_req_call_sends_an_empty_args_vector_not_an_absent_one():
    _, payload = split(load_vectors(LUA_FILE)["HTTP_REQ_CALL_GET"])
    root = runtime_root(payload)
    args = runtime_field(root, 4)
    assert args != 0
    assert root.VectorLen(args) == 0
    assert runtime_field(root, 2) == 0  # method GET is the default: omitted


def test_lua_prepare_conf_without_conf_has_no_conf_vector():
    frame_type, payload = split(load_vectors(LUA_FILE)["PREPARE_CONF_NO_CONF"])
    assert (frame_type, len(payload)) == (1, 56)
    assert runtime_field(runtime_root(payload), 0) == 0


def test_err_frames_are_type_0_with_a_20_byte_payload():
    vectors = load_vectors(RUNNER_FILE)
    for name in ("ERR_CONF_TOKEN_NOT_FOUND", "ERR_SERVICE_UNAVAILABLE"):
        assert vectors[name][:4] == b"\x00\x00\x00\x14"


def test_runtime_reader_sees_our_stop_reply_as_apisix_would():
    _, payload = split(encode_message(RUNNER_EXPECTED["HTTP_REQ_CALL_RESP_STOP"]))
    root = runtime_root(payload)
    assert root.Get(Uint8Flags, root.Pos + runtime_field(root, 1)) == 1  # Action.Stop
    stop = Table(root.Bytes, 0)
    root.Union(stop, runtime_field(root, 2))
    assert stop.Get(Uint16Flags, stop.Pos + runtime_field(stop, 0)) == 405
    headers = runtime_field(stop, 1)
    names = []
    for i in range(stop.VectorLen(headers)):
        entry = Table(stop.Bytes, stop.Indirect(stop.Vector(headers) + 4 * i))
        names.append(entry.String(entry.Pos + runtime_field(entry, 0)))
    assert names == [b"X-Resp", b"X-Same", b"X-Same"]
    body = runtime_field(stop, 2)
    start = stop.Vector(body)
    assert bytes(stop.Bytes[start : start + stop.VectorLen(body)]) == b"cat"
