"""Hostile bytes: decoders and connections raise ProtocolError and nothing else, ever."""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkaupstream.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Message,
    ProtocolError,
    Role,
    State,
    decode_apisix_message,
    decode_runner_message,
    encode_frame,
    encode_message,
)
from tests.unit.test_codec_golden import LUA_FILE, RUNNER_FILE, load_vectors
from tests.unit.test_codec_roundtrip import apisix_messages, runner_messages

Decoder = Callable[[int, bytes], Message]
DECODERS: list[Decoder] = [decode_apisix_message, decode_runner_message]

# u32 values that make offsets and lengths point somewhere interesting.
EDGE_U32 = [0, 1, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF, 0xFFFF, 0x10000]


@functools.cache
def golden_payloads() -> tuple[tuple[str, int, bytes], ...]:
    frames = {**load_vectors(LUA_FILE), **load_vectors(RUNNER_FILE)}
    return tuple((name, frame[0], frame[4:]) for name, frame in sorted(frames.items()))


def decode_quietly(decode: Decoder, frame_type: int, payload: bytes) -> None:
    """Decode; a ProtocolError is an acceptable answer, any other exception fails the test."""
    with contextlib.suppress(ProtocolError):
        decode(frame_type, payload)


@settings(deadline=None, max_examples=800)
@given(frame_type=st.integers(0, 255), payload=st.binary(max_size=120))
def test_arbitrary_payloads_only_raise_protocol_error(frame_type: int, payload: bytes):
    for decode in DECODERS:
        decode_quietly(decode, frame_type, payload)


@settings(deadline=None, max_examples=600)
@given(
    frame_type=st.integers(0, 5),
    words=st.lists(st.sampled_from(EDGE_U32) | st.integers(0, 64), min_size=1, max_size=24),
)
def test_payloads_made_of_plausible_offsets_only_raise_protocol_error(
    frame_type: int, words: list[int]
):
    # Random bytes rarely form a table; small and extreme u32s reach the deeper reads.
    payload = struct.pack(f"<{len(words)}I", *words)
    for decode in DECODERS:
        decode_quietly(decode, frame_type, payload)


def test_every_single_bit_flip_of_every_golden_payload():
    for _name, frame_type, payload in golden_payloads():
        for bit in range(len(payload) * 8):
            mutated = bytearray(payload)
            mutated[bit // 8] ^= 1 << (bit % 8)
            for decode in DECODERS:
                decode_quietly(decode, frame_type, bytes(mutated))


def test_every_truncation_of_every_golden_payload():
    for _name, frame_type, payload in golden_payloads():
        for size in range(len(payload)):
            for decode in DECODERS:
                decode_quietly(decode, frame_type, payload[:size])


def test_golden_payloads_with_edge_values_at_every_aligned_word():
    for _name, frame_type, payload in golden_payloads():
        for at in range(0, len(payload) - 3, 2):
            for value in EDGE_U32:
                mutated = bytearray(payload)
                struct.pack_into("<I", mutated, at, value)
                for decode in DECODERS:
                    decode_quietly(decode, frame_type, bytes(mutated))


@settings(deadline=None, max_examples=600)
@given(data=st.data())
def test_random_multi_byte_mutations_of_golden_payloads(data: st.DataObject):
    vectors = golden_payloads()
    _name, frame_type, payload = data.draw(st.sampled_from(vectors))
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    for decode in DECODERS:
        decode_quietly(decode, frame_type, bytes(mutated[:cut]))


def _stop_payload() -> bytes:
    frame = load_vectors(RUNNER_FILE)["HTTP_REQ_CALL_RESP_STOP"]
    return frame[4:]


@pytest.mark.parametrize(
    "find",
    [
        pytest.param(b"\x03\x00\x00\x00cat", id="body length"),
        pytest.param(b"\x06\x00\x00\x00X-Resp", id="header name length"),
        pytest.param(b"\x03\x00\x00\x00foo", id="header value length"),
        pytest.param(b"\x03\x00\x00\x00T\x00\x00\x00", id="header vector count"),
    ],
)
@pytest.mark.parametrize("value", [200, 0xFFFFFFFF])
def test_lengths_running_past_the_payload_are_malformed(find: bytes, value: int):
    # Slicing would silently truncate: each length must be checked against the payload.
    payload = bytearray(_stop_payload())
    at = payload.index(find)
    struct.pack_into("<I", payload, at, value)
    with pytest.raises(ProtocolError, match="runs past the payload"):
        decode_runner_message(2, bytes(payload))


# --- connections --------------------------------------------------------------------------------


def chunks_of(stream: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        i += 1
        yield stream[pos : pos + size]
        pos += size


def drain(conn: Connection) -> object:
    """Pull events until the connection needs data, closes, or raises a ProtocolError."""
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return event


def feed_stream(role: Role, stream: bytes, sizes: list[int], eof: bool) -> None:
    conn = Connection(role)
    try:
        for chunk in chunks_of(stream, sizes):
            conn.receive_data(chunk)
            drain(conn)
        if eof:
            conn.receive_data(b"")
            assert isinstance(drain(conn), ConnectionClosed)
    except ProtocolError:
        assert conn.state is State.ERROR
        with pytest.raises(ProtocolError):
            conn.next_event()


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Valid frames, frames with random payloads, and raw garbage, concatenated."""
    pieces = draw(
        st.lists(
            st.one_of(
                (apisix_messages | runner_messages).map(encode_message),
                st.builds(encode_frame, st.integers(0, 6), st.binary(min_size=1, max_size=40)),
                st.binary(max_size=12),
            ),
            max_size=6,
        )
    )
    return b"".join(pieces)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from(Role),
    stream=streams(),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=6),
    eof=st.booleans(),
)
def test_connection_fed_hostile_streams_only_raises_protocol_error(
    role: Role, stream: bytes, sizes: list[int], eof: bool
):
    feed_stream(role, stream, sizes, eof)


@settings(deadline=None, max_examples=500)
@given(
    role=st.sampled_from(Role),
    stream=st.binary(max_size=200),
    sizes=st.lists(st.integers(1, 32), min_size=1, max_size=6),
    eof=st.booleans(),
)
def test_connection_fed_arbitrary_bytes_only_raises_protocol_error(
    role: Role, stream: bytes, sizes: list[int], eof: bool
):
    feed_stream(role, stream, sizes, eof)
