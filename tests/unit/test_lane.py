"""The compiled lane against the handler it stands in for: same bytes in, same bytes out.

Each case runs one scripted APISIX conversation (or a raw byte stream, chunked at random) twice,
once through :class:`ApisixConnection` (the reference: the sans-IO Connection and the plugin's
``handle``) and once through :class:`LaneConnection`, each over a fake transport with the same
prepared routes and a fake producer, and requires identical written bytes, identical records,
the same close and the same plugin counters. Under ``make test`` the lane is the compiled
extension; under ``KAFKAUPSTREAM_NO_EXTENSIONS=1`` it is its own source, interpreted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream import core as core_module
from kafkaupstream.api import PreparedConf
from kafkaupstream.builtin import StopPlugin
from kafkaupstream.plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    KafkaRecord,
    Queued,
)
from kafkaupstream.protocol import (
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    MessageType,
    PrepareConfRequest,
    Stop,
    TextEntry,
    encode_message,
)
from kafkaupstream.protocol._stopframes import StopFrames
from kafkaupstream.server import lane as lane_module
from kafkaupstream.server.confs import LocalTokenStore, PreparedConfs
from kafkaupstream.server.handler import ApisixConnection, RunnerState
from kafkaupstream.server.lane import LaneConnection, eligible
from kafkaupstream.server.tokens import ConfTokenRegistry

from .fuzzing import fuzz

FIRST_TOKEN = 77
ROUTE_KEY = "route#r1#ext-plugin-pre-req#1"


class FakeProducer:
    """Records what it is given; answers as the route's scripted outcome says."""

    def __init__(self, outcome: str, produced: list[KafkaRecord]) -> None:
        self._outcome = outcome
        self._produced = produced

    async def produce(self, record: KafkaRecord, *, wait: bool, timeout: float) -> DeliveryOutcome:
        self._produced.append(record)
        if self._outcome == "backpressure":
            return Backpressure(1.5)
        if not wait:
            return Queued(record.topic)
        await asyncio.sleep(0)  # a delivery report comes later, on another loop iteration
        if self._outcome == "timeout":
            return DeliveryTimeout(timeout)
        return Delivered(record.topic, max(record.partition, 0), len(self._produced))


class FakePool:
    def __init__(self, outcome: str, produced: list[KafkaRecord]) -> None:
        self._producer = FakeProducer(outcome, produced)

    def get_canonical(self, key: object) -> FakeProducer:
        return self._producer

    async def close(self, timeout: float) -> None:
        return None


class FakeTransport:
    """Keeps what the runner writes; closing tells the protocol, as a real transport does."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class Outcome:
    written: bytes
    records: list[tuple[Any, ...]]
    closed: bool
    counters: tuple[int, int, int]
    connections_left: int = field(default=0)


def _state(plugin: KafkaUpstreamPlugin) -> RunnerState:
    plugins = {plugin.name: plugin}
    store = LocalTokenStore(ConfTokenRegistry(3600, first_token=FIRST_TOKEN))
    return RunnerState(plugins=plugins, confs=PreparedConfs(plugins, store))


async def _converse(
    protocol_class: type,
    route: dict[str, Any],
    script: Sequence[Any],
    outcome: str,
    cap: int | None,
) -> Outcome:
    """Feed ``script`` (bytes to send, or "wait": until the runner wrote something new)."""
    produced: list[KafkaRecord] = []
    plugin = KafkaUpstreamPlugin(lambda: FakePool(outcome, produced), max_in_flight=cap)  # type: ignore[arg-type, return-value]
    state = _state(plugin)
    token = await state.confs.register(ROUTE_KEY, (("kafkaupstream", json.dumps(route)),))
    assert token == FIRST_TOKEN
    protocol = protocol_class(state)
    transport = FakeTransport(protocol)
    protocol.connection_made(transport)
    seen = 0
    for step in script:
        if step == "wait":
            for _ in range(50):
                await asyncio.sleep(0)
                if len(transport.written) > seen or transport.closed:
                    break
            seen = len(transport.written)
        elif step == "eof":
            if not transport.closed:
                protocol.eof_received()
        elif step == "pause":
            protocol.pause_writing()
        elif step == "resume":
            protocol.resume_writing()
        elif not transport.closed:
            protocol.data_received(step)
    for _ in range(50):
        await asyncio.sleep(0)
    records = [(r.topic, r.value, r.key, r.partition, r.headers) for r in produced]
    counters = (plugin.in_flight, plugin.refused_queue_full, plugin.refused_in_flight_cap)
    return Outcome(bytes(transport.written), records, transport.closed, counters)


def both(
    route: dict[str, Any], script: Sequence[Any], outcome: str = "ok", cap: int | None = None
) -> Outcome:
    reference = asyncio.run(_converse(ApisixConnection, route, script, outcome, cap))
    fast = asyncio.run(_converse(LaneConnection, route, script, outcome, cap))
    assert fast == reference
    return fast


def call(
    call_id: int, headers: Sequence[tuple[str, str | None]], token: int = FIRST_TOKEN
) -> bytes:
    entries = tuple(TextEntry(n, v) for n, v in headers)
    return encode_message(HTTPReqCallRequest(call_id, token, 2, "/k", b"\x7f\0\0\1", (), entries))


def body(data: bytes | None) -> bytes:
    return encode_message(ExtraInfoResponse(data))


ROUTE = {"config": {"bootstrap.servers": "unused:9092"}, "topic": "t", "delivery": "async"}
JSON = ("content-type", "application/json")


# --- examples -------------------------------------------------------------------------------


def test_an_async_request_is_answered_202_by_both_with_the_compacted_record() -> None:
    out = both(ROUTE, [call(1, [JSON]), "wait", body(b'{ "a" : 1 }'), "wait"])
    assert out.records == [("t", b'{"a":1}', None, -1, ())]
    assert b'"status": "queued"' in out.written
    assert not out.closed


def test_sync_requests_back_to_back_on_one_connection() -> None:
    route = {**ROUTE, "delivery": "sync", "jsonkey": "id"}
    script: list[Any] = []
    for n in range(1, 4):
        script += [call(n, [JSON]), "wait", body(b'{"id": %d}' % n), "wait"]
    out = both(route, script)
    assert [r[2] for r in out.records] == [b"1", b"2", b"3"]


def test_a_refused_header_a_full_queue_and_the_cap() -> None:
    both(ROUTE, [call(1, [("topic", "other")]), "wait"])
    both(ROUTE, [call(2, [JSON]), "wait", body(b"{}"), "wait"], outcome="backpressure")
    both({**ROUTE, "delivery": "sync"}, [call(3, [JSON]), "wait", body(b"{}"), "wait"], "timeout")
    both(ROUTE, [call(4, [JSON]), "wait", body(b"{"), "wait"])  # invalid JSON
    both(ROUTE, [call(5, []), "wait", body(None), "wait"])  # no body


def test_a_peer_that_reads_nothing_gets_its_body_read_but_no_new_exchange() -> None:
    sync = {**ROUTE, "delivery": "sync"}
    first = [call(1, [JSON]), "wait", "pause", body(b"{}"), "wait"]
    held = both(sync, [*first, call(2, [JSON]), "wait", body(b"[]"), "wait"])
    assert len(held.records) == 1  # the second call waits for the peer to read
    served = both(sync, [*first, call(2, [JSON]), "wait", "resume", "wait", body(b"[]"), "wait"])
    assert len(served.records) == 2


def test_prepare_conf_and_unknown_tokens_go_through_the_handler_and_come_back() -> None:
    prepare = encode_message(PrepareConfRequest((TextEntry("kafkaupstream", json.dumps(ROUTE)),)))
    out = both(
        ROUTE,
        [
            prepare,
            "wait",
            call(1, [JSON], token=5),  # unknown: CONF_TOKEN_NOT_FOUND from the handler
            "wait",
            call(2, [JSON]),
            "wait",
            body(b"[1, 2]"),
            "wait",
        ],
    )
    assert out.records == [("t", b"[1,2]", None, -1, ())]


def test_broken_streams_get_the_handlers_error_and_close() -> None:
    both(ROUTE, [call(1, [JSON]), "wait", b"\x02\x00\x00\x04abcd", "wait"])  # a call, not info
    both(ROUTE, [call(1, [JSON]), "wait", b"\x03\x00\x00", "eof", "wait"])  # cut mid-header
    both(ROUTE, [call(1, [JSON]), "wait", "eof", "wait"])  # closed while the body was awaited
    both(ROUTE, [b"\x02\x00\x00\x00", "wait"])  # an empty payload
    both(ROUTE, [call(1, [JSON])[:9], "eof", "wait"])


def test_routes_the_lane_does_not_know_are_the_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = KafkaUpstreamPlugin()
    plain = plugin.prepare(json.dumps(ROUTE))
    other = plugin.prepare(json.dumps({**ROUTE, "topic": "u"}))
    assert eligible(PreparedConf(plugin, plain))  # every field the lane does not know: default
    assert not eligible(PreparedConf(plugin, plugin.prepare("{}")))  # an invalid route
    assert not eligible(PreparedConf(StopPlugin(), plain))
    # Were "topic" a field the lane does not know, with default "t": only a route leaving it so.
    monkeypatch.setattr(lane_module, "_OTHER_FIELDS", (("topic", "t"),))
    assert eligible(PreparedConf(plugin, plain))
    assert not eligible(PreparedConf(plugin, other))


def test_the_core_in_use_is_named() -> None:
    assert core_module.core() in ("compiled", "python")
    if core_module.forced_python():
        assert core_module.core() == "python"
        assert lane_module.__file__ is not None and lane_module.__file__.endswith(".py")


# --- properties -----------------------------------------------------------------------------

_NAMES = st.sampled_from(
    ["topic", "partition", "key", "x-topic", "x-key", "x-partition", "content-type", "x-trace"]
)
_VALUES = st.one_of(
    st.sampled_from(["t", "u", "t2", "0", "1", "-1", "99999999999", "application/json", "k"]),
    st.text(max_size=6),
    st.none(),
)
_ROUTES = st.fixed_dictionaries(
    {"config": st.just({"bootstrap.servers": "unused:9092"})},
    optional={
        "topic": st.sampled_from(["t", "u"]),
        "partition": st.sampled_from([0, 3, -1]),
        "key": st.sampled_from(["k1", ""]),
        "jsonkey": st.sampled_from(["id", "a.b", "items[0]", "length(@)"]),
        "headerprefix": st.sampled_from(["x-", ""]),
        "delivery": st.sampled_from(["sync", "async"]),
        "allowed_topics": st.sampled_from([["t*"], ["u", "t2"]]),
        "forward_headers": st.sampled_from([["x-trace"], ["x-*"]]),
        "max_body_bytes": st.sampled_from([8, 100]),
    },
)
_JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(), inner)),
    max_leaves=6,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["json", "raw", "none"]))
    if kind == "none":
        return None
    if kind == "raw":
        return draw(st.binary(max_size=40))
    text = json.dumps(draw(_JSONISH), indent=draw(st.sampled_from([None, 1, 2])))
    if draw(st.booleans()):
        text = text.replace(",", " ,\n ")
    return text.encode()


@fuzz(150)
@given(
    route=_ROUTES,
    requests=st.lists(
        st.tuples(st.lists(st.tuples(_NAMES, _VALUES), max_size=5), bodies()),
        min_size=1,
        max_size=3,
    ),
    outcome=st.sampled_from(["ok", "ok", "timeout", "backpressure"]),
)
def test_random_conversations_are_the_same_bytes_on_both_paths(
    route: dict[str, Any],
    requests: list[tuple[list[tuple[str, str | None]], bytes | None]],
    outcome: str,
) -> None:
    script: list[Any] = []
    for n, (headers, data) in enumerate(requests, start=1):
        script += [call(n, headers), "wait", body(data), "wait"]
    both(route, script, outcome)


@fuzz(150)
@given(
    route=_ROUTES,
    frames=st.lists(
        st.one_of(
            st.builds(lambda h: call(9, h), st.lists(st.tuples(_NAMES, _VALUES), max_size=3)),
            bodies().map(body),
            st.binary(min_size=1, max_size=12),
            st.sampled_from([b"\x01\x00\x00\x00", b"\x04\x00\x00\x01x", b"\x00\x00\x00\x01\x00"]),
        ),
        max_size=4,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=6),
    eof=st.booleans(),
)
def test_random_byte_streams_in_random_chunks_get_the_same_answers(
    route: dict[str, Any], frames: list[bytes], cuts: list[int], eof: bool
) -> None:
    stream = b"".join(frames)
    script: list[Any] = []
    at = 0
    for cut in cuts:
        if at >= len(stream):
            break
        script += [stream[at : at + cut], "wait"]
        at += cut
    if at < len(stream):
        script += [stream[at:], "wait"]
    if eof:
        script += ["eof", "wait"]
    both(route, script)


def test_message_types_used_here_are_the_protocols() -> None:
    assert (MessageType.HTTP_REQ_CALL, MessageType.EXTRA_INFO) == (2, 3)


@fuzz(200)
@given(
    call_id=st.one_of(st.just(0), st.integers(1, 2**32 - 1)),
    status=st.sampled_from([200, 202, 400, 503, 0]),
    headers=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3),
    data=st.binary(max_size=40),
    stops=st.just(None).map(lambda _: StopFrames()),
)
def test_stop_answers_from_header_pairs_are_the_codecs_bytes(
    call_id: int, status: int, headers: list[tuple[str, str]], data: bytes, stops: StopFrames
) -> None:
    pairs = tuple(headers)
    entries = tuple(TextEntry(n, v) for n, v in pairs)
    expected = encode_message(HTTPReqCallResponse(call_id, Stop(status, entries, data)))
    for _ in range(2):  # learnt, then from the template
        assert stops.encode_answer(call_id, status, pairs, data) == expected
