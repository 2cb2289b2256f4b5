"""The shared conf-token registry: the parent's table, its wire, and the workers' caches."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kafkaupstream.api import Answer, HTTPRequest, Plugin
from kafkaupstream.server import tokens as tokens_module
from kafkaupstream.server.confs import (
    ConfList,
    LocalTokenStore,
    PreparedConfs,
    StoreUnavailable,
)
from kafkaupstream.server.token_client import RemoteTokenStore, flush_interval
from kafkaupstream.server.token_service import Channel, TokenService
from kafkaupstream.server.token_wire import MessageBuffer, WireError, encode
from kafkaupstream.server.tokens import ConfTokenRegistry, Lease


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(Plugin):
    """Counts prepares: each process must prepare a shared conf list once, and again on change."""

    name = "rec"

    def __init__(self) -> None:
        self.prepared: list[str] = []

    def prepare(self, value: str) -> Any:
        self.prepared.append(value)
        return value

    async def handle(self, state: Any, request: HTTPRequest) -> Answer | None:
        return None


class CountingStore(LocalTokenStore):
    """A local store that counts lookups: the hot path must not reach the store."""

    def __init__(self, registry: ConfTokenRegistry[ConfList]) -> None:
        super().__init__(registry)
        self.lookups = 0

    async def lookup(self, token: int) -> Lease[ConfList] | None:
        self.lookups += 1
        return await super().lookup(token)


def run(coro):
    return asyncio.run(coro)


CONF: ConfList = (("rec", "a"),)

# --- the registry (the one authoritative table) -------------------------------------------------


def test_tokens_count_up_from_the_first_token_and_a_known_key_keeps_its_token():
    reg: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, first_token=1)
    assert [reg.register(k, CONF).token for k in ("a", "b", "a", "", "")] == [1, 2, 1, 3, 4]


def test_each_registry_starts_its_token_space_at_a_random_point():
    # One per runner start: a stale token of the previous runner must be unknown to the next.
    starts = {ConfTokenRegistry[str](10).register("route#1#x#1", "A").token for _ in range(8)}
    assert len(starts) == 8 and 1 not in starts


def test_the_random_start_is_never_0_and_wraps_past_2_32_minus_1_to_1(monkeypatch):
    monkeypatch.setattr(tokens_module.secrets, "randbelow", lambda n: 0)
    assert ConfTokenRegistry[str](10).register("a", "A").token == 1
    monkeypatch.setattr(tokens_module.secrets, "randbelow", lambda n: n - 1)
    top = ConfTokenRegistry[str](10)
    assert [top.register(k, k).token for k in ("a", "b")] == [0xFFFFFFFF, 1]
    with pytest.raises(ValueError):
        ConfTokenRegistry[str](10, first_token=0)


def test_lookup_refreshes_and_expiry_is_1_2_times_the_conf_expire_time():
    clock = Clock()
    reg: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    token = reg.register("k", CONF).token
    clock.now += 11.9
    lease = reg.lookup(token)
    assert lease is not None and lease.expires_at == clock.now + 12
    clock.now += 12
    assert reg.lookup(token) is None
    assert reg.register("k", CONF).token == 2  # an expired key gets a new token


def test_late_touch_extends_from_the_time_of_use_but_never_revives():
    clock = Clock()
    reg: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    token = reg.register("k", CONF).token  # expires at 1012
    reg.touch(token, used_at=1011.0)  # a use at 1011, reported whenever
    assert reg.peek_key("k") == Lease(token, CONF, 1023.0)
    reg.touch(token, used_at=1001.0)  # an older report never shortens the lease
    assert reg.peek_key("k") == Lease(token, CONF, 1023.0)
    reg.touch(token, used_at=1024.0)  # used after it had expired: does not count
    clock.now = 1024.0
    assert reg.lookup(token) is None


def test_peek_key_is_not_a_use():
    clock = Clock()
    reg: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    reg.register("k", CONF)
    clock.now += 11
    assert reg.peek_key("k") == Lease(1, CONF, 1012.0)
    assert reg.peek_key("") is None and reg.peek_key("other") is None


# --- the parent's service and the wire ----------------------------------------------------------


def test_service_answers_register_lookup_and_reports_a_changed_conf_list():
    service = TokenService(ConfTokenRegistry(10, first_token=1))
    reply, changed = service.handle(
        {"op": "register", "id": 7, "key": "k", "confs": [["rec", "a"]]}
    )
    assert reply is not None and (reply["id"], reply["lease"]["token"], changed) == (7, 1, None)
    _, changed = service.handle({"op": "register", "id": 8, "key": "k", "confs": [["rec", "a"]]})
    assert changed is None
    other, changed = service.handle(
        {"op": "register", "id": 9, "key": "k", "confs": [["rec", "b"]]}
    )
    assert other is not None and other["lease"]["token"] == 1 and changed == 1
    found, _ = service.handle({"op": "lookup", "id": 10, "token": 1})
    assert found is not None and found["lease"]["confs"] == [["rec", "b"]]
    missing, _ = service.handle({"op": "lookup", "id": 11, "token": 99})
    assert missing == {"id": 11, "lease": None}


@pytest.mark.parametrize(
    "message",
    [
        {"op": "nope"},
        {"op": "register", "id": 1, "key": "k", "confs": [["rec"]]},
        {"op": "register", "id": 1, "key": "k", "confs": "rec"},
        {"op": "lookup", "id": 1},
        {"op": "touch", "uses": [[1]]},
    ],
)
def test_service_refuses_malformed_messages(message):
    with pytest.raises(WireError):
        TokenService(ConfTokenRegistry(10, first_token=1)).handle(message)


def test_wire_reassembles_split_messages_and_keeps_undecodable_bytes():
    value = b"\xff\xfe".decode("utf-8", "surrogateescape") + "é"
    data = encode({"op": "x", "v": value}) + encode({"op": "y"})
    buffer = MessageBuffer()
    out = [m for i in range(len(data)) for m in buffer.feed(data[i : i + 1])]
    assert out == [{"op": "x", "v": value}, {"op": "y"}]


@pytest.mark.parametrize("data", [b"\xff\xff\xff\xff", b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x01{"])
def test_wire_refuses_oversized_or_non_object_messages(data):
    with pytest.raises(WireError):
        MessageBuffer().feed(data)


# --- a worker's cache in front of the store ------------------------------------------------------


def test_local_hit_does_not_reach_the_store_but_refreshes_it():
    clock = Clock()
    registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    store = CountingStore(registry)
    confs = PreparedConfs({"rec": Recorder()}, store, clock=clock)
    token = run(confs.register("k", CONF))
    for _ in range(5):
        clock.now += 11
        assert confs.get(token) is not None
    assert store.lookups == 0
    assert registry.peek_key("k") == Lease(token, CONF, clock.now + 12)


def test_token_registered_by_one_process_is_prepared_once_by_another():
    clock = Clock()
    registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    a_plugin, b_plugin = Recorder(), Recorder()
    a = PreparedConfs({"rec": a_plugin}, LocalTokenStore(registry), clock=clock)
    b_store = CountingStore(registry)
    b = PreparedConfs({"rec": b_plugin}, b_store, clock=clock)
    token = run(a.register("k", CONF))
    assert b.get(token) is None
    prepared = run(b.resolve(token))
    assert prepared is not None and [p.state for p in prepared] == ["a"]
    assert run(b.resolve(token)) is prepared and b_store.lookups == 1
    assert (a_plugin.prepared, b_plugin.prepared) == (["a"], ["a"])


def test_lapsed_local_copy_is_kept_when_the_shared_conf_list_did_not_change():
    clock = Clock()
    registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    a = PreparedConfs({"rec": Recorder()}, LocalTokenStore(registry), clock=clock)
    b_plugin = Recorder()
    b = PreparedConfs({"rec": b_plugin}, LocalTokenStore(registry), clock=clock)
    token = run(a.register("k", CONF))
    run(b.resolve(token))
    for _ in range(3):  # only `a` uses it; `b`'s copy lapses, the shared one does not
        clock.now += 8
        assert a.get(token) is not None
    assert b.get(token) is None
    assert run(b.resolve(token)) is not None
    assert b_plugin.prepared == ["a"]


def test_changed_conf_list_is_prepared_again_and_expiry_is_everywhere():
    clock = Clock()
    registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(10, clock=clock, first_token=1)
    a = PreparedConfs({"rec": Recorder()}, LocalTokenStore(registry), clock=clock)
    b_plugin = Recorder()
    b = PreparedConfs({"rec": b_plugin}, LocalTokenStore(registry), clock=clock)
    token = run(a.register("k", CONF))
    run(b.resolve(token))
    assert run(a.register("k", (("rec", "z"),))) == token
    b.invalidate(token)  # what the parent's "changed" message does
    prepared = run(b.resolve(token))
    assert prepared is not None and [p.state for p in prepared] == ["z"]
    clock.now += 12.5
    assert (run(a.resolve(token)), run(b.resolve(token))) == (None, None)


def test_unknown_plugins_are_skipped_and_empty_lists_still_get_tokens():
    confs = PreparedConfs({"rec": Recorder()}, LocalTokenStore(ConfTokenRegistry(10)))
    token = run(confs.register("k", (("nosuch", "x"), ("rec", "b"))))
    prepared = confs.get(token)
    assert prepared is not None and [p.state for p in prepared] == ["b"]
    empty = run(confs.register("", ()))
    assert confs.get(empty) == ()


# --- the real channel: RemoteTokenStore <-> TokenService over socketpairs ------------------------


class ParentThread:
    """Plays the supervisor's channel loop for two workers, in a thread."""

    def __init__(self, service: TokenService, socks: list[socket.socket]) -> None:
        self.service = service
        self.channels = [Channel(s) for s in socks]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            for channel in self.channels:
                sel.register(channel.sock, selectors.EVENT_READ, channel)
            while not self.stop.is_set():
                for key, _ in sel.select(0.01):
                    channel = key.data
                    for message in channel.receive() or ():
                        reply, changed = self.service.handle(message)
                        if changed is not None:
                            for other in self.channels:
                                if other is not channel:
                                    other.send({"op": "changed", "token": changed})
                        if reply is not None:
                            channel.send(reply)


@pytest.fixture
def parent_and_two_ends() -> Iterator[tuple[ParentThread, socket.socket, socket.socket]]:
    pairs = [socket.socketpair() for _ in range(2)]
    parent = ParentThread(TokenService(ConfTokenRegistry(1, first_token=1)), [p for p, _ in pairs])
    parent.thread.start()
    yield parent, pairs[0][1], pairs[1][1]
    parent.stop.set()
    parent.thread.join()


def test_remote_stores_share_tokens_changes_and_batched_uses(parent_and_two_ends):
    parent, a_sock, b_sock = parent_and_two_ends
    registry = parent.service.registry

    async def scenario():
        a, b = RemoteTokenStore(a_sock, registry.ttl_s), RemoteTokenStore(b_sock, registry.ttl_s)
        await a.connect()
        await b.connect()
        changed: list[int] = []
        b.subscribe(changed.append)
        first = await a.register("k", CONF)
        found = await b.lookup(first.token)
        many = await asyncio.gather(*(b.lookup(first.token) for _ in range(20)))
        await a.register("k", (("rec", "z"),))
        await asyncio.sleep(0.05)
        before = registry.peek_key("k")
        used_at = asyncio.get_running_loop().time()
        a.touch(first.token, used_at)
        await asyncio.sleep(flush_interval(registry.ttl_s) + 0.05)
        after = registry.peek_key("k")
        missing = await b.lookup(12345)
        a.close()
        b.close()
        return first, found, many, changed, before, after, used_at, missing

    first, found, many, changed, before, after, used_at, missing = run(scenario())
    assert first.token == 1 and found == Lease(1, CONF, found.expires_at)
    assert all(lease is not None and lease.token == 1 for lease in many)
    assert changed == [1]
    assert before is not None and after is not None
    assert after.expires_at == pytest.approx(used_at + registry.ttl_s)
    assert missing is None


def test_lost_channel_fails_requests_and_tells_the_worker():
    ours, theirs = socket.socketpair()
    lost: list[bool] = []

    async def scenario():
        store = RemoteTokenStore(ours, 1.2, on_lost=lambda: lost.append(True))
        await store.connect()
        pending = asyncio.ensure_future(store.lookup(1))
        await asyncio.sleep(0.01)
        theirs.close()  # the parent died
        with pytest.raises(StoreUnavailable):
            await pending
        with pytest.raises(StoreUnavailable):
            await store.register("k", CONF)

    run(scenario())
    assert lost == [True]


def test_silent_parent_times_out_as_unavailable():
    ours, theirs = socket.socketpair()

    async def scenario():
        store = RemoteTokenStore(ours, 1.2, timeout_s=0.05)
        await store.connect()
        with pytest.raises(StoreUnavailable):
            await store.lookup(1)
        store.close()

    run(scenario())
    theirs.close()


def test_tokens_wrap_at_uint32_past_tokens_still_in_use() -> None:
    registry: ConfTokenRegistry[str] = ConfTokenRegistry(3600, first_token=1)
    first = registry.register("a", "A").token
    registry._next_token = 0xFFFFFFFF  # as after four billion PrepareConfs
    assert registry.register("b", "B").token == 0xFFFFFFFF
    # 1 still belongs to "a": the allocator skips it instead of overwriting it.
    assert registry.register("c", "C").token == first + 1
    lease = registry.lookup(first)
    assert lease is not None and lease.value == "A"
