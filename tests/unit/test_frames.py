"""The frame layer: header layout, limits, and reassembly from arbitrary chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkaupstream.plugin.config import MAX_BODY_LIMIT
from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    ExtraInfoResponse,
    Frame,
    FrameBuffer,
    FrameTooLarge,
    InvalidMessage,
    MalformedFrame,
    ProtocolError,
    encode_frame,
    encode_message,
)


def feed_in_chunks(buffer: FrameBuffer, data: bytes, sizes: list[int]) -> list[Frame]:
    """Feed ``data`` in chunks of the given sizes (cycled), collecting frames as they complete."""
    frames = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        i += 1
        buffer.feed(data[pos : pos + size])
        pos += size
        while (frame := buffer.next_frame()) is not None:
            frames.append(frame)
    return frames


def test_header_is_type_byte_then_big_endian_24_bit_length():
    frame = encode_frame(2, b"x" * 0x010203)
    assert frame[:4] == bytes([2, 0x01, 0x02, 0x03])
    assert frame[4:] == b"x" * 0x010203


def test_max_payload_is_the_largest_3_byte_length():
    assert MAX_PAYLOAD == 2**24 - 1
    frame = encode_frame(3, bytes(MAX_PAYLOAD))
    assert frame[:4] == b"\x03\xff\xff\xff"


def test_payload_over_the_limit_raises_frame_too_large_with_service_unavailable():
    with pytest.raises(FrameTooLarge) as info:
        encode_frame(3, bytes(MAX_PAYLOAD + 1))
    assert info.value.error_code == 1  # SERVICE_UNAVAILABLE
    assert "16777215" in str(info.value)


def test_empty_payload_is_never_sent():
    with pytest.raises(MalformedFrame, match="empty payload"):
        encode_frame(1, b"")


@pytest.mark.parametrize("frame_type", [-1, 256])
def test_type_must_fit_one_byte(frame_type: int):
    with pytest.raises(InvalidMessage):
        encode_frame(frame_type, b"x")


def test_incomplete_header_and_payload_yield_nothing_yet():
    buffer = FrameBuffer()
    frame = encode_frame(4, b"abcdef")
    buffer.feed(frame[:3])
    assert buffer.next_frame() is None
    buffer.feed(frame[3:7])
    assert buffer.next_frame() is None
    assert len(buffer) == 7
    buffer.feed(frame[7:])
    assert buffer.next_frame() == Frame(4, b"abcdef")
    assert len(buffer) == 0
    assert buffer.next_frame() is None


def test_one_byte_at_a_time_and_many_frames_per_chunk():
    frames = [Frame(t % 5, bytes([t]) * (t + 1)) for t in range(40)]
    stream = b"".join(encode_frame(f.type, f.payload) for f in frames)
    assert feed_in_chunks(FrameBuffer(), stream, [1]) == frames
    assert feed_in_chunks(FrameBuffer(), stream, [len(stream)]) == frames


def test_header_announcing_zero_length_is_malformed():
    buffer = FrameBuffer()
    buffer.feed(b"\x02\x00\x00\x00")
    with pytest.raises(MalformedFrame, match="empty payload"):
        buffer.next_frame()


def test_payload_is_bytes_even_though_the_buffer_is_a_bytearray():
    buffer = FrameBuffer()
    buffer.feed(encode_frame(1, b"abc"))
    frame = buffer.next_frame()
    assert frame is not None
    assert type(frame.payload) is bytes


def test_large_payload_in_small_chunks_arrives_intact():
    # 16 MiB in 4 KiB chunks: with quadratic copying this would not finish within the timeout.
    payload = bytes(range(256)) * (MAX_PAYLOAD // 256) + b"tail"
    assert len(payload) <= MAX_PAYLOAD
    stream = encode_frame(3, payload) + encode_frame(2, b"next")
    frames = feed_in_chunks(FrameBuffer(), stream, [4096, 4093, 1])
    assert frames == [Frame(3, payload), Frame(2, b"next")]


def test_compaction_keeps_the_unread_tail():
    # Enough consumed frames to pass the compaction threshold, with a partial frame behind them.
    small = [encode_frame(1, bytes([i % 256]) * 1000) for i in range(100)]
    last = encode_frame(2, b"z" * 5000)
    buffer = FrameBuffer()
    buffer.feed(b"".join(small) + last[:10])
    got = []
    while (frame := buffer.next_frame()) is not None:
        got.append(frame)
    assert len(got) == 100
    assert len(buffer) == 10
    buffer.feed(last[10:])
    assert buffer.next_frame() == Frame(2, b"z" * 5000)


frames_strategy = st.lists(
    st.builds(Frame, st.integers(0, 255), st.binary(min_size=1, max_size=300)), max_size=12
)


@settings(deadline=None, max_examples=150)
@given(frames=frames_strategy, sizes=st.lists(st.integers(1, 400), min_size=1, max_size=20))
def test_any_chunking_yields_the_same_frames(frames: list[Frame], sizes: list[int]):
    stream = b"".join(encode_frame(f.type, f.payload) for f in frames)
    buffer = FrameBuffer()
    assert feed_in_chunks(buffer, stream, sizes) == frames
    assert len(buffer) == 0


@settings(deadline=None, max_examples=150)
@given(data=st.binary(max_size=200), sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_arbitrary_bytes_give_frames_or_malformed_frame(data: bytes, sizes: list[int]):
    buffer = FrameBuffer()
    try:
        feed_in_chunks(buffer, data, sizes)
    except ProtocolError as exc:
        assert isinstance(exc, MalformedFrame)


def test_max_body_bytes_is_the_largest_body_an_extra_info_answer_can_carry() -> None:
    # APISIX builds the same FlatBuffers layout: 24 bytes around the body, padded to 4.
    largest = encode_message(ExtraInfoResponse(b"x" * MAX_BODY_LIMIT))
    assert len(largest) - 4 == MAX_PAYLOAD - 3
    with pytest.raises(FrameTooLarge):
        encode_message(ExtraInfoResponse(b"x" * (MAX_BODY_LIMIT + 1)))
