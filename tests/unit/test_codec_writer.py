"""The hand-written FlatBuffers writer builds exactly the bytes the ``flatbuffers`` runtime builds.

Two levels: every message, against the Builder-based encoder the codec used before
(``fb_reference``); and the writer's primitives in random sequences, against the runtime Builder
itself, so layouts no message has today (shared vtables, every padding residue) are covered too.
"""

from __future__ import annotations

import struct

import pytest
from flatbuffers import Builder
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    ExtraInfoResponse,
    HTTPReqCallResponse,
    Message,
    ProtocolError,
    Stop,
    TextEntry,
    decode_runner_message,
    encode_message,
)
from kafkaupstream.protocol._flatbuffers import FlatWriter
from kafkaupstream.protocol._stopframes import StopFrames
from tests.unit.fb_reference import reference_encode
from tests.unit.test_codec_golden import RUNNER_EXPECTED, load_vectors, split
from tests.unit.test_codec_roundtrip import apisix_messages, entries, runner_messages


@settings(max_examples=600)
@given(runner_messages)
def test_runner_messages_match_the_flatbuffers_runtime_byte_for_byte(msg: Message):
    assert encode_message(msg).hex() == reference_encode(msg).hex()


@settings(max_examples=600)
@given(apisix_messages)
def test_apisix_messages_match_the_flatbuffers_runtime_byte_for_byte(msg: Message):
    assert encode_message(msg).hex() == reference_encode(msg).hex()


@pytest.mark.parametrize("size", range(9))
@pytest.mark.parametrize("call_id", [0, 1, 2**32 - 1])
def test_stop_answers_match_the_runtime_for_every_padding_residue(size: int, call_id: int):
    for body in (b"", b"x" * size, b"{" + b"y" * (1000 + size) + b"}"):
        msg = HTTPReqCallResponse(
            call_id,
            Stop(202, (TextEntry("Content-Type", "application/json"),), body),
        )
        assert encode_message(msg) == reference_encode(msg)
        assert decode_runner_message(*split(encode_message(msg))) == msg


@pytest.mark.parametrize("name", sorted(RUNNER_EXPECTED))
def test_golden_runner_frames_come_out_of_both_encoders(name: str):
    golden = load_vectors("ext-plugin-golden-frames-runner.txt")[name]
    assert encode_message(RUNNER_EXPECTED[name]) == reference_encode(RUNNER_EXPECTED[name])
    assert encode_message(RUNNER_EXPECTED[name]) == golden


def test_large_body_is_copied_whole_and_framed_once():
    body = bytes(range(256)) * 4096
    frame = encode_message(ExtraInfoResponse(body))
    assert frame == reference_encode(ExtraInfoResponse(body))
    assert int.from_bytes(frame[1:4], "big") == len(frame) - 4


# --- the primitives against the runtime Builder ---------------------------------------------------

# One step of building a buffer. Scalars go into tables only, as in every schema.
_field = st.one_of(
    st.tuples(st.just("u8"), st.integers(1, 0xFF)),
    st.tuples(st.just("u16"), st.integers(1, 0xFFFF)),
    st.tuples(st.just("u32"), st.integers(1, 2**32 - 1)),
    st.tuples(st.just("offset"), st.integers(0, 50)),  # index into what was built so far
)
_step = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=13)),
    st.tuples(st.just("string"), st.binary(max_size=13)),
    st.tuples(st.just("vector"), st.lists(st.integers(0, 50), max_size=4)),
    st.tuples(st.just("table"), st.lists(st.none() | _field, max_size=6)),
)


def _build(steps: list[tuple[str, object]]) -> tuple[bytes, bytes]:
    """Run the same steps on FlatWriter and on the runtime Builder; both finished payloads."""
    w, b = FlatWriter(), Builder(0)
    made_w: list[int] = []
    made_b: list[int] = []

    def pick(made: list[int], index: int) -> int:
        return made[index % len(made)]

    for kind, arg in steps:
        if kind == "bytes":
            made_w.append(w.bytes_vector(arg))  # type: ignore[arg-type]
            made_b.append(b.CreateByteVector(arg))
        elif kind == "string":
            made_w.append(w.string(arg))  # type: ignore[arg-type]
            made_b.append(b.CreateString(arg))
        elif kind == "vector":
            picks = [i for i in arg if made_w] if made_w else []  # type: ignore[attr-defined]
            offsets_w = [pick(made_w, i) for i in picks]
            offsets_b = [pick(made_b, i) for i in picks]
            made_w.append(w.offset_vector(offsets_w))
            b.StartVector(4, len(offsets_b), 4)
            for offset in reversed(offsets_b):
                b.PrependUOffsetTRelative(offset)
            made_b.append(b.EndVector())
        else:
            fields = arg  # type: ignore[assignment]
            w.start(len(fields))
            b.StartObject(len(fields))
            for slot, field in enumerate(fields):
                if field is None:
                    continue
                what, value = field
                if what == "offset":
                    if not made_w:
                        continue
                    w.add_offset(slot, pick(made_w, value))
                    b.PrependUOffsetTRelativeSlot(slot, pick(made_b, value), 0)
                else:
                    getattr(w, f"add_{what}")(slot, value)
                    getattr(b, f"Prepend{what.capitalize().replace('U', 'Uint')}Slot")(
                        slot, value, 0
                    )
            made_w.append(w.end())
            made_b.append(b.EndObject())
    # Finish needs a table: end with an empty one, as a ReqBody request does.
    w.start(0)
    b.StartObject(0)
    ours = w.finish(w.end(), lambda size: struct.pack(">I", size))
    b.Finish(b.EndObject())
    theirs = bytes(b.Output())
    return ours[4:], theirs


@settings(max_examples=1000)
@given(st.lists(_step, max_size=12))
def test_writer_primitives_lay_out_bytes_as_the_runtime_builder(steps):
    ours, theirs = _build(steps)
    assert ours.hex() == theirs.hex()


def test_equal_tables_share_one_vtable_as_in_the_runtime():
    steps = [("table", [("u32", 7), ("u8", 1)]), ("table", [("u32", 9), ("u8", 2)])]
    ours, theirs = _build(steps)  # type: ignore[arg-type]
    assert ours == theirs
    # One vtable (10 bytes: size, table size, two slots) for both tables, and the empty root's.
    assert ours.count(struct.pack("<HHHH", 8, 12, 8, 7)) == 1


def test_finish_header_gets_the_payload_length():
    w = FlatWriter()
    w.start(1)
    w.add_u8(0, 5)
    frame = w.finish(w.end(), lambda size: struct.pack(">I", size))
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


# --- Stop answers from templates ------------------------------------------------------------------

_few_headers = st.sampled_from(
    [(), (TextEntry("Content-Type", "application/json"),), (TextEntry("a", None),)]
)
_answers = st.builds(
    HTTPReqCallResponse,
    id=st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1),
    action=st.none()
    | st.builds(Stop, status=st.sampled_from([0, 200, 202, 503]), headers=_few_headers | entries)
    | st.builds(
        Stop,
        status=st.sampled_from([0, 200, 202, 503]),
        headers=_few_headers | entries,
        body=st.binary(min_size=1, max_size=40),
    ),
)


@settings(max_examples=300)
@given(st.lists(_answers, min_size=1, max_size=20))
def test_stop_templates_give_the_codecs_frame_every_time(messages: list[HTTPReqCallResponse]):
    stops = StopFrames(capacity=4)
    for msg in messages:
        assert stops.encode(msg).hex() == encode_message(msg).hex()


def test_stop_templates_are_bounded():
    stops = StopFrames(capacity=3)
    for status in range(100, 110):
        msg = HTTPReqCallResponse(1, Stop(status, (), b"x"))
        assert stops.encode(msg) == encode_message(msg)
    assert len(stops._templates) <= 3


@pytest.mark.parametrize(
    "msg",
    [
        HTTPReqCallResponse(id=2**32, action=Stop(body=b"x")),
        HTTPReqCallResponse(id=-1, action=Stop(body=b"x")),
        HTTPReqCallResponse(id=1, action=Stop(status=0x10000, body=b"x")),
        HTTPReqCallResponse(id=1, action=Stop(headers=(TextEntry("\ud800", "x"),), body=b"x")),
        HTTPReqCallResponse(id=1, action=Stop(headers=(TextEntry("a", ["x"]),), body=b"x")),  # type: ignore[arg-type]
        HTTPReqCallResponse(id=1, action=Stop(body=bytes(MAX_PAYLOAD))),
        HTTPReqCallResponse(id=1, action=Stop(body=bytes(MAX_PAYLOAD - 30))),
    ],
    ids=["id-too-big", "id-negative", "status", "surrogate", "unhashable", "body", "body-total"],
)
def test_stop_templates_raise_what_the_codec_raises(msg: HTTPReqCallResponse):
    with pytest.raises(ProtocolError) as theirs:
        encode_message(msg)
    with pytest.raises(type(theirs.value)):
        StopFrames().encode(msg)
