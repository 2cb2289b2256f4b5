"""Fuzzing the runner's side of the sans-IO Connection through whole conversations.

Unlike ``test_codec_fuzz`` (one decoder call, or a connection that never answers), the runner
here answers every request, so hostile bytes reach every state of the conversation; the outcome
must not depend on how the bytes are chunked, and every error must be answerable with the
documented ``RPC_ERROR`` frame (type 0, the error's code).
"""

from __future__ import annotations

import functools
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.hostile import converse, expected_replies
from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPRespCallRequest,
    MalformedFrame,
    PrepareConfRequest,
    ProtocolError,
    ReqBody,
    Role,
    State,
    TextEntry,
    decode_runner_message,
    encode_message,
)
from tests.unit.fuzzing import escaped, fuzz
from tests.unit.test_codec_fuzz import chunks_of
from tests.unit.test_codec_golden import LUA_FILE, load_vectors


def hostile_conf_value(depth: int, kind: int) -> str:
    """A kafkaupstream conf value that is never a valid config and stresses the parser."""
    return [
        "[" * depth,
        '{"config": ' + "[" * depth + "]" * depth + "}",
        json.dumps({"topic": "t", "jsonkey": "(" * depth + "a" + ")" * depth}),
        json.dumps({"jsonkey": "`" + "[" * depth + "]" * depth + "`"}),
        "\udcff" * depth,
    ][kind]


def _random_text(rng: random.Random) -> str:
    return escaped(rng.randbytes(rng.choice([0, 0, 1, 5, 20])))


def _random_entries(rng: random.Random) -> tuple[TextEntry, ...]:
    return tuple(
        TextEntry(_random_text(rng), rng.choice([None, _random_text(rng)]))
        for _ in range(rng.choice([0, 1, 3, 8]))
    )


@functools.cache
def frame_pool() -> tuple[bytes, ...]:
    """Valid APISIX frames: the Lua golden vectors, seeded random messages, hostile confs.

    Drawn from a pool rather than built by hypothesis: building a message costs ~2 ms of
    generation, a pool lookup nothing, and the mutations below supply the variety.
    """
    rng = random.Random(7)
    pool = [frame for _name, frame in sorted(load_vectors(LUA_FILE).items())]
    for _ in range(60):
        pool.append(encode_message(PrepareConfRequest(_random_entries(rng), _random_text(rng))))
        pool.append(
            encode_message(
                HTTPReqCallRequest(
                    id=rng.getrandbits(32),
                    conf_token=rng.choice([0, 1, 2, rng.getrandbits(32)]),
                    method=rng.randrange(256),
                    path=_random_text(rng),
                    src_ip=rng.randbytes(rng.choice([0, 4, 16])),
                    args=_random_entries(rng),
                    headers=_random_entries(rng),
                )
            )
        )
        pool.append(
            encode_message(
                HTTPRespCallRequest(
                    id=rng.getrandbits(32),
                    conf_token=rng.choice([0, 1, rng.getrandbits(32)]),
                    status=rng.randrange(65536),
                    headers=_random_entries(rng),
                )
            )
        )
        pool.append(encode_message(ExtraInfoResponse(rng.choice([None, rng.randbytes(9)]))))
    for depth in (1, 50, 3000):
        for kind in range(5):
            conf = (TextEntry("kafkaupstream", hostile_conf_value(depth, kind)),)
            pool.append(encode_message(PrepareConfRequest(conf, f"route#{depth}#{kind}")))
    return tuple(pool)


valid_frames = st.sampled_from(frame_pool())


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with one frame-level mutation: type, length, bytes, truncation or splice."""
    data = bytearray(frame)
    how = draw(st.sampled_from(["type", "length", "byte", "cut", "insert", "repeat"]))
    if how == "type":
        data[0] = draw(st.integers(0, 255))
    elif how == "length":
        length = draw(st.sampled_from([0, 1, 3, 4, len(data) - 5, len(data), MAX_PAYLOAD]))
        data[1:4] = max(0, length).to_bytes(3, "big")
    elif how == "byte":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "cut":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    else:
        start = draw(st.integers(0, len(data) - 1))
        data += data[start : start + draw(st.integers(1, 16))]
    return bytes(data)


frames = st.one_of(valid_frames, valid_frames.flatmap(mutated))

#: What a runner may be sent: whole conversations, some of their frames mutated, or raw bytes.
hostile_streams = st.one_of(
    st.lists(frames, min_size=1, max_size=6).map(b"".join),
    st.binary(max_size=300),
    st.tuples(st.lists(valid_frames, max_size=3), st.binary(min_size=1, max_size=40)).map(
        lambda parts: b"".join(parts[0]) + parts[1]
    ),
)
APISIX_REQUESTS = (PrepareConfRequest, HTTPReqCallRequest, HTTPRespCallRequest)
chunk_sizes = st.lists(st.integers(1, 97), min_size=1, max_size=5)


def assert_documented_error(conn: Connection, code: ErrorCode) -> None:
    """A broken connection stays broken and can still say why in a type 0 frame."""
    assert conn.state is State.ERROR
    with pytest.raises(ProtocolError):
        conn.next_event()
    frame = conn.send(ErrorResponse(code))
    assert frame[0] == 0
    assert decode_runner_message(0, frame[4:]) == ErrorResponse(code)


@fuzz(2500)
@given(stream=hostile_streams, sizes=chunk_sizes, eof=st.booleans())
def test_runner_connection_answers_hostile_streams_the_same_in_any_chunking(
    stream: bytes, sizes: list[int], eof: bool
) -> None:
    conn = Connection(Role.RUNNER)
    chunked = converse(chunks_of(stream, sizes), eof=eof, conn=conn)
    whole = expected_replies(stream, eof=eof)
    assert chunked.requests == whole.requests
    assert (chunked.error, chunked.error_type) == (whole.error, whole.error_type)
    assert all(isinstance(r, APISIX_REQUESTS) for r in chunked.requests)
    if chunked.error is not None:
        assert chunked.error in ErrorCode
        assert_documented_error(conn, chunked.error)
    elif eof:
        assert conn.state is State.IDLE  # every request was answered and the stream ended


@fuzz(1500)
@given(
    reply=st.one_of(
        st.binary(max_size=200),
        valid_frames,
        st.binary(max_size=60).map(lambda b: encode_message(ExtraInfoResponse(b))),
        st.binary(max_size=60).map(lambda b: encode_message(ExtraInfoResponse(b))).flatmap(mutated),
    ),
    sizes=chunk_sizes,
)
def test_hostile_bytes_in_reply_to_an_extra_info_request(reply: bytes, sizes: list[int]) -> None:
    # The one state the runner enters by sending: APISIX owes an ExtraInfo answer.
    conn = Connection(Role.RUNNER)
    conn.receive_data(encode_message(HTTPReqCallRequest(id=1, conf_token=1)))
    assert isinstance(conn.next_event(), HTTPReqCallRequest)
    conn.send(ExtraInfoRequest(ReqBody()))
    try:
        for chunk in chunks_of(reply, sizes):
            conn.receive_data(chunk)
            event = conn.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, ExtraInfoResponse)
                assert conn.state is State.IN_CALL
                return
        conn.receive_data(b"")
        # EOF between frames is a clean close even here; the server treats it as the peer gone.
        assert isinstance(conn.next_event(), ConnectionClosed)
    except ProtocolError as exc:
        assert_documented_error(conn, exc.error_code)


@pytest.mark.parametrize("sent", [0, 1, 10, 1000])
def test_frame_claiming_16_mib_waits_for_it_and_eof_mid_frame_is_bad_request(sent: int) -> None:
    conn = Connection(Role.RUNNER)
    conn.receive_data(b"\x01\xff\xff\xff" + b"x" * sent)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(MalformedFrame, match="mid-frame"):
        conn.next_event()
    assert_documented_error(conn, ErrorCode.BAD_REQUEST)
