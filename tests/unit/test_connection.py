"""The sans-IO Connection: reassembly, EOF handling and the conversation rules."""

from __future__ import annotations

import random

import pytest

from kafkaupstream.protocol import (
    MAX_PAYLOAD,
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    FrameTooLarge,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    MalformedFrame,
    Message,
    PrepareConfRequest,
    PrepareConfResponse,
    ProtocolError,
    ReqBody,
    RespBody,
    Role,
    State,
    Stop,
    TextEntry,
    UnexpectedMessage,
    Var,
    encode_frame,
    encode_message,
)

PREPARE = PrepareConfRequest(conf=(TextEntry("kafka", "{}"),), key="route#1#ext-plugin-pre-req#1")
REQ_CALL = HTTPReqCallRequest(id=7, conf_token=1, path="/t", headers=(TextEntry("host", "h"),))
RESP_CALL = HTTPRespCallRequest(id=8, conf_token=1, status=200)
STOP = HTTPReqCallResponse(id=7, action=Stop(status=201, body=b"ok"))
RESP_ANSWER = HTTPRespCallResponse(id=8, status=304)


class Pair:
    """A runner and a fake APISIX wired back to back, checking every frame arrives as sent."""

    def __init__(self) -> None:
        self.runner = Connection(Role.RUNNER)
        self.apisix = Connection(Role.APISIX)

    def apisix_sends(self, msg: Message) -> None:
        self._deliver(self.apisix.send(msg), self.runner, msg)

    def runner_sends(self, msg: Message) -> None:
        self._deliver(self.runner.send(msg), self.apisix, msg)

    def _deliver(self, data: bytes, receiver: Connection, msg: Message) -> None:
        receiver.receive_data(data)
        assert receiver.next_event() == msg
        assert receiver.next_event() is NEED_DATA
        assert self.runner.state is self.apisix.state


def test_roles():
    runner = Connection(Role.RUNNER)
    assert (runner.our_role, runner.their_role) == (Role.RUNNER, Role.APISIX)
    assert runner.state is State.IDLE
    apisix = Connection(Role.APISIX)
    assert (apisix.our_role, apisix.their_role) == (Role.APISIX, Role.RUNNER)


def test_prepare_conf_exchange():
    pair = Pair()
    pair.apisix_sends(PREPARE)
    assert pair.runner.state is State.IN_PREPARE_CONF
    pair.runner_sends(PrepareConfResponse(conf_token=1))
    assert pair.runner.state is State.IDLE


def test_req_call_with_extra_info_round_trips_then_stop():
    pair = Pair()
    pair.apisix_sends(REQ_CALL)
    assert pair.runner.state is State.IN_CALL
    assert pair.runner.call is HTTPReqCallRequest
    infos: list[tuple[Var | ReqBody | RespBody, bytes | None]] = [
        (Var("remote_addr"), b"127.0.0.1"),
        (Var("nope"), None),
        (ReqBody(), b"{}"),
        (RespBody(), None),  # legal during a ReqCall: APISIX answers with nothing
    ]
    for info, answer in infos:
        pair.runner_sends(ExtraInfoRequest(info))
        assert pair.runner.state is State.AWAIT_INFO
        pair.apisix_sends(ExtraInfoResponse(answer))
        assert pair.runner.state is State.IN_CALL
    pair.runner_sends(STOP)
    assert pair.runner.state is State.IDLE
    assert pair.runner.call is None


def test_resp_call_with_resp_body_then_answer():
    pair = Pair()
    pair.apisix_sends(RESP_CALL)
    pair.runner_sends(ExtraInfoRequest(RespBody()))
    pair.apisix_sends(ExtraInfoResponse(b"upstream body"))
    pair.runner_sends(RESP_ANSWER)
    assert pair.runner.state is State.IDLE


@pytest.mark.parametrize("request_msg", [PREPARE, REQ_CALL, RESP_CALL])
def test_error_response_ends_any_exchange(request_msg: Message):
    pair = Pair()
    pair.apisix_sends(request_msg)
    pair.runner_sends(ErrorResponse(ErrorCode.CONF_TOKEN_NOT_FOUND))
    assert pair.runner.state is State.IDLE


def test_keepalive_carries_many_exchanges_of_any_type():
    pair = Pair()
    for _ in range(3):
        pair.apisix_sends(PREPARE)
        pair.runner_sends(PrepareConfResponse(conf_token=2))
        pair.apisix_sends(REQ_CALL)
        pair.runner_sends(HTTPReqCallResponse(id=7))
        pair.apisix_sends(RESP_CALL)
        pair.runner_sends(RESP_ANSWER)


def test_several_frames_in_one_chunk_come_out_one_by_one():
    runner = Connection(Role.RUNNER)
    runner.receive_data(encode_message(PREPARE))
    assert runner.next_event() == PREPARE
    apisix = Connection(Role.APISIX)
    apisix.send(REQ_CALL)
    apisix.receive_data(
        encode_message(ExtraInfoRequest(ReqBody())) + encode_message(HTTPReqCallResponse(id=7))
    )
    assert apisix.next_event() == ExtraInfoRequest(ReqBody())
    # APISIX has not answered the ExtraInfo yet, so the buffered final answer is out of turn.
    with pytest.raises(UnexpectedMessage):
        apisix.next_event()


# --- illegal sequences --------------------------------------------------------------------------


def runner_in(state: State) -> Connection:
    """A runner connection driven into ``state`` by legal traffic."""
    conn = Connection(Role.RUNNER)
    if state is State.IN_PREPARE_CONF:
        conn.receive_data(encode_message(PREPARE))
        conn.next_event()
    elif state in (State.IN_CALL, State.AWAIT_INFO):
        conn.receive_data(encode_message(REQ_CALL))
        conn.next_event()
        if state is State.AWAIT_INFO:
            conn.send(ExtraInfoRequest(ReqBody()))
    assert conn.state is state
    return conn


def apisix_in(state: State, call: Message = REQ_CALL) -> Connection:
    conn = Connection(Role.APISIX)
    if state is State.IN_PREPARE_CONF:
        conn.send(PREPARE)
    elif state in (State.IN_CALL, State.AWAIT_INFO):
        conn.send(call)
        if state is State.AWAIT_INFO:
            conn.receive_data(encode_message(ExtraInfoRequest(ReqBody())))
            conn.next_event()
    assert conn.state is state
    return conn


@pytest.mark.parametrize(
    ("state", "msg"),
    [
        (State.IDLE, PrepareConfResponse(1)),
        (State.IDLE, STOP),
        (State.IDLE, ExtraInfoRequest(ReqBody())),
        (State.IDLE, ErrorResponse(ErrorCode.BAD_REQUEST)),
        (State.IN_PREPARE_CONF, ExtraInfoRequest(Var("x"))),
        (State.IN_PREPARE_CONF, STOP),
        (State.IN_CALL, PrepareConfResponse(1)),
        (State.IN_CALL, RESP_ANSWER),  # the answer to the other kind of call
        (State.AWAIT_INFO, ExtraInfoRequest(ReqBody())),  # at most one outstanding
        (State.AWAIT_INFO, STOP),
        (State.AWAIT_INFO, ErrorResponse(ErrorCode.SERVICE_UNAVAILABLE)),
        (State.IDLE, REQ_CALL),  # a runner never sends APISIX's messages
    ],
    ids=repr,
)
def test_runner_may_not_send(state: State, msg: Message):
    conn = runner_in(state)
    with pytest.raises(UnexpectedMessage):
        conn.send(msg)
    assert conn.state is state  # a refused send changes nothing


@pytest.mark.parametrize(
    ("state", "msg"),
    [
        (State.IDLE, ExtraInfoResponse(b"x")),
        (State.IN_PREPARE_CONF, REQ_CALL),
        (State.IN_CALL, REQ_CALL),  # a second call while the runner owes an answer
        (State.IN_CALL, PREPARE),
        (State.IN_CALL, ExtraInfoResponse(b"x")),  # nobody asked
        (State.AWAIT_INFO, RESP_CALL),
    ],
    ids=repr,
)
def test_runner_rejects_receiving(state: State, msg: Message):
    conn = runner_in(state)
    conn.receive_data(encode_message(msg))
    with pytest.raises(UnexpectedMessage):
        conn.next_event()
    assert conn.state is State.ERROR


def test_runner_refuses_to_answer_a_resp_call_with_a_req_call_response():
    conn = Connection(Role.RUNNER)
    conn.receive_data(encode_message(RESP_CALL))
    conn.next_event()
    with pytest.raises(UnexpectedMessage, match="HTTPReqCallResponse"):
        conn.send(HTTPReqCallResponse(id=8))
    conn.send(RESP_ANSWER)
    assert conn.state is State.IDLE


@pytest.mark.parametrize(
    ("state", "msg"),
    [
        (State.IN_PREPARE_CONF, REQ_CALL),
        (State.IN_CALL, PREPARE),
        (State.IN_CALL, ExtraInfoResponse(b"x")),
        (State.AWAIT_INFO, REQ_CALL),
        (State.IDLE, ExtraInfoResponse(b"x")),
        (State.IDLE, STOP),  # APISIX never sends a runner's messages
    ],
    ids=repr,
)
def test_apisix_may_not_send(state: State, msg: Message):
    conn = apisix_in(state)
    with pytest.raises(UnexpectedMessage):
        conn.send(msg)
    assert conn.state is state


@pytest.mark.parametrize(
    ("state", "call", "msg"),
    [
        (State.IDLE, REQ_CALL, STOP),
        (State.IDLE, REQ_CALL, ErrorResponse(ErrorCode.BAD_REQUEST)),
        (State.IN_PREPARE_CONF, REQ_CALL, ExtraInfoRequest(Var("x"))),  # "unexpected type 3"
        (State.IN_PREPARE_CONF, REQ_CALL, STOP),
        (State.IN_CALL, REQ_CALL, RESP_ANSWER),
        (State.IN_CALL, RESP_CALL, STOP),
        (State.IN_CALL, REQ_CALL, PrepareConfResponse(1)),
        (State.AWAIT_INFO, REQ_CALL, STOP),
        (State.AWAIT_INFO, REQ_CALL, ExtraInfoRequest(ReqBody())),
    ],
    ids=repr,
)
def test_apisix_rejects_receiving(state: State, call: Message, msg: Message):
    conn = apisix_in(state, call)
    conn.receive_data(encode_message(msg))
    with pytest.raises(UnexpectedMessage, match=f"type {encode_message(msg)[0]}"):
        conn.next_event()
    assert conn.state is State.ERROR


# --- errors leave the connection in a defined state ---------------------------------------------


def test_reply_too_large_becomes_service_unavailable():
    conn = runner_in(State.IN_CALL)
    with pytest.raises(FrameTooLarge) as info:
        conn.send(HTTPReqCallResponse(id=7, action=Stop(body=bytes(MAX_PAYLOAD))))
    assert conn.state is State.IN_CALL
    frame = conn.send(ErrorResponse(info.value.error_code))
    assert frame[0] == 0
    assert conn.state is State.IDLE


def test_after_a_receive_error_the_connection_stays_broken():
    conn = Connection(Role.RUNNER)
    conn.receive_data(encode_frame(9, b"junk") + encode_message(PREPARE))
    with pytest.raises(MalformedFrame) as info:
        conn.next_event()
    assert info.value.error_code == ErrorCode.BAD_REQUEST
    with pytest.raises(MalformedFrame, match="already broken"):
        conn.next_event()
    # The runner may still say why before closing, but nothing else.
    assert conn.send(ErrorResponse(info.value.error_code))[0] == 0
    with pytest.raises(UnexpectedMessage):
        conn.send(PrepareConfResponse(1))


def test_apisix_side_sends_nothing_after_a_receive_error():
    conn = apisix_in(State.IN_PREPARE_CONF)
    conn.receive_data(b"\x01\x00\x00\x01\xff")
    with pytest.raises(MalformedFrame):
        conn.next_event()
    with pytest.raises(UnexpectedMessage):
        conn.send(PREPARE)


# --- EOF ----------------------------------------------------------------------------------------


def test_clean_eof_between_frames_is_connection_closed():
    conn = Connection(Role.RUNNER)
    conn.receive_data(encode_message(PREPARE))
    conn.receive_data(b"")
    assert conn.next_event() == PREPARE
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    assert conn.state is State.IN_PREPARE_CONF  # what was in progress stays visible


@pytest.mark.parametrize("partial", [b"\x02", b"\x02\x00\x00", b"\x02\x00\x00\x10abc"])
def test_eof_mid_frame_is_malformed(partial: bytes):
    conn = Connection(Role.RUNNER)
    conn.receive_data(partial)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(MalformedFrame, match="peer closed mid-frame"):
        conn.next_event()


def test_header_announcing_16_mib_then_10_bytes_waits_then_fails_on_eof():
    conn = Connection(Role.RUNNER)
    conn.receive_data(b"\x02\xff\xff\xff" + bytes(10))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(MalformedFrame, match="mid-frame"):
        conn.next_event()


def test_data_after_eof_is_a_caller_bug():
    conn = Connection(Role.APISIX)
    conn.receive_data(b"")
    conn.receive_data(b"")  # repeating EOF is harmless
    with pytest.raises(RuntimeError):
        conn.receive_data(b"x")


def test_zero_length_frame_is_malformed():
    conn = Connection(Role.APISIX)
    conn.send(REQ_CALL)
    conn.receive_data(b"\x02\x00\x00\x00")
    with pytest.raises(MalformedFrame, match="empty payload"):
        conn.next_event()


@pytest.mark.parametrize("frame_type", [0, 5, 255])
def test_runner_rejects_types_apisix_never_sends(frame_type: int):
    conn = Connection(Role.RUNNER)
    conn.receive_data(encode_frame(frame_type, encode_message(PREPARE)[4:]))
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert isinstance(info.value, MalformedFrame)
    assert info.value.error_code == ErrorCode.BAD_REQUEST


# --- large frames in random chunks --------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 64 * 1024, 1024 * 1024, int(15.9 * 1024 * 1024)],
    ids=["0B", "1B", "64KiB", "1MiB", "15.9MiB"],
)
def test_extra_info_bodies_arrive_intact_in_random_chunks(size: int):
    rng = random.Random(size)
    body = rng.randbytes(size)
    frame = encode_message(ExtraInfoResponse(body))
    conn = runner_in(State.AWAIT_INFO)
    pos = 0
    events = []
    while pos < len(frame):
        step = rng.choice([1, 7, 1000, 4096, 65536, 300_000])
        conn.receive_data(frame[pos : pos + step])
        pos += step
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [ExtraInfoResponse(body)]
    assert conn.state is State.IN_CALL
