"""The runner process over a real unix socket, driven by the fake APISIX (issue: runner core)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import stat
import struct
import time

import pytest

from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from harness.runner_process import RunnerProcess
from kafkaupstream.protocol import (
    Connection,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    Role,
    Stop,
    TextEntry,
    decode_runner_message,
    encode_message,
)


def stop_conf(version: int = 1, **fields: object) -> PluginConf:
    return PluginConf(conf=(("stop", json.dumps(fields)),), version=version)


@pytest.fixture
def runner():
    with RunnerProcess(args=["--test-plugins"]) as proc:
        yield proc


def run(coro):
    return asyncio.run(coro)


# --- raw-socket helpers: bytes on the wire, no fake APISIX in between ---------------------------


def raw_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exactly(sock, 4)
    length = struct.unpack(">I", b"\x00" + header[1:])[0]
    return header[0], _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def prepare_raw(path: str, conf: tuple[TextEntry, ...] | None, key: str = "route#1#x#1") -> int:
    with raw_connect(path) as sock:
        sock.sendall(encode_message(PrepareConfRequest(conf, key)))
        frame_type, payload = read_frame(sock)
    reply = decode_runner_message(frame_type, payload)
    assert isinstance(reply, PrepareConfResponse)
    return reply.conf_token


# --- conf tokens --------------------------------------------------------------------------------


def test_tokens_count_up_from_a_random_start_and_same_key_gets_same_token(runner):
    stop = (TextEntry("stop", "{}"),)
    first = prepare_raw(runner.socket_path, stop, key="route#1#ext-plugin-pre-req#1")
    again = prepare_raw(runner.socket_path, stop, key="route#1#ext-plugin-pre-req#1")
    other = prepare_raw(runner.socket_path, stop, key="route#2#ext-plugin-pre-req#1")
    assert again == first and other == first % 0xFFFFFFFF + 1
    with RunnerProcess(args=["--test-plugins"]) as second:
        restarted = prepare_raw(second.socket_path, stop, key="route#1#ext-plugin-pre-req#1")
    assert restarted not in (first, other)  # a new runner start never reuses the old tokens


def test_absent_and_empty_conf_lists_still_get_tokens(runner):
    assert prepare_raw(runner.socket_path, None, key="route#1#a#1") >= 1
    assert prepare_raw(runner.socket_path, (), key="route#1#b#1") >= 1


def test_unknown_plugin_is_skipped_with_one_log_line(runner):
    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            conf = PluginConf(conf=(("nosuch", "{}"), ("stop", '{"status": 418}')))
            return await apisix.request(conf, ClientRequest())

    answer = run(scenario())
    assert answer.status == 418
    lines = [line for line in runner.logs().splitlines() if "unknown_plugins" in line]
    assert len(lines) == 1 and "nosuch" in lines[0]


def test_unknown_token_is_answered_with_rpc_error_code_2_in_a_type_0_frame(runner):
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(encode_message(HTTPReqCallRequest(id=7, conf_token=999)))
        frame_type, payload = read_frame(sock)
    assert frame_type == 0
    assert decode_runner_message(frame_type, payload) == ErrorResponse(
        ErrorCode.CONF_TOKEN_NOT_FOUND
    )


def test_expired_token_gets_code_2_and_apisix_retry_succeeds():
    # APISIX_CONF_EXPIRE_TIME=1 -> the runner keeps a token 1.2 s after its last use.
    with RunnerProcess(args=["--test-plugins"], conf_expire="1") as proc:

        async def scenario():
            async with FakeApisix(proc.socket_path) as apisix:
                conf = stop_conf(status=201)
                first = await apisix.request(conf, ClientRequest())
                await asyncio.sleep(1.6)  # APISIX's own caches (3600 s) still hold the token
                second = await apisix.request(conf, ClientRequest())
                return first, second, apisix.prepare_count, apisix.retry_count

        first, second, prepares, retries = run(scenario())
    assert (first.status, second.status) == (201, 201)
    assert (prepares, retries) == (2, 1)


def test_token_used_within_its_ttl_keeps_living():
    with RunnerProcess(args=["--test-plugins"], conf_expire="1") as proc:

        async def scenario():
            async with FakeApisix(proc.socket_path) as apisix:
                conf = stop_conf(status=202)
                for _ in range(5):  # 5 x 0.5 s > 1.2 s TTL, but each use refreshes it
                    assert (await apisix.request(conf, ClientRequest())).status == 202
                    await asyncio.sleep(0.5)
                return apisix.retry_count

        assert run(scenario()) == 0


# --- the nested PrepareConf and concurrency ------------------------------------------------------


def test_nested_prepare_conf_on_second_connection_does_not_deadlock(runner):
    async def scenario():
        # read timeout 5 s: a runner that serves one connection at a time would hang here.
        async with FakeApisix(runner.socket_path, read_timeout_s=5) as apisix:
            started = time.monotonic()
            answer = await apisix.request(stop_conf(status=403), ClientRequest())
            return answer, time.monotonic() - started, apisix.prepare_count

    answer, elapsed, prepares = run(scenario())
    assert answer.status == 403 and answer.action == "stop"
    assert prepares == 1
    assert elapsed < 2


def test_garbage_on_one_connection_does_not_disturb_fifty_others(runner):
    async def scenario():
        async with FakeApisix(runner.socket_path, workers=4) as apisix:
            conf = stop_conf(echo_body=True, delay_ms=20)
            await apisix.prepare(conf)

            async def one(i: int):
                body = f"request-{i}".encode() * (i + 1)
                answer = await apisix.request(conf, ClientRequest(body=body))
                return answer.status, answer.body == body

            def garbage() -> tuple[int, bytes, bytes]:
                with raw_connect(runner.socket_path) as sock:
                    # a valid header announcing a payload that is not a FlatBuffer
                    sock.sendall(b"\x02\x00\x00\x08" + b"\xff" * 8)
                    frame_type, payload = read_frame(sock)
                    rest = sock.recv(10)  # the runner closed this connection
                return frame_type, payload, rest

            results = await asyncio.gather(*(one(i) for i in range(50)), asyncio.to_thread(garbage))
            return results[:50], results[50]

    answers, (frame_type, payload, rest) = run(scenario())
    assert answers == [(200, True)] * 50
    assert frame_type == 0
    assert decode_runner_message(frame_type, payload) == ErrorResponse(ErrorCode.BAD_REQUEST)
    assert rest == b""


def test_unknown_frame_type_gets_bad_request(runner):
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(b"\x09\x00\x00\x04abcd")
        frame_type, payload = read_frame(sock)
        assert sock.recv(1) == b""
    assert decode_runner_message(frame_type, payload) == ErrorResponse(ErrorCode.BAD_REQUEST)


def test_frame_claiming_16_mib_then_close_leaves_runner_serving(runner):
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(b"\x01\xff\xff\xff" + b"0123456789")
    # the runner is still serving other connections
    assert prepare_raw(runner.socket_path, (TextEntry("stop", "{}"),), key="k#after") >= 1


# --- ExtraInfo ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 64 * 1024, 1024 * 1024, int(15.9 * 1024 * 1024)], ids=lambda n: f"{n}B"
)
def test_bodies_arrive_intact_through_extra_info(runner, size):
    body = random.Random(size).randbytes(size)

    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            return await apisix.request(stop_conf(echo_body=True), ClientRequest(body=body))

    answer = run(scenario())
    assert answer.status == 200
    assert answer.body == body


def test_body_sent_in_arbitrary_chunks_arrives_intact(runner):
    body = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
    token = prepare_raw(runner.socket_path, (TextEntry("stop", '{"echo_body": true}'),), "k#c")
    codec = Connection(Role.APISIX)
    rng = random.Random(1)
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(codec.send(HTTPReqCallRequest(id=1, conf_token=token)))
        kind, payload = read_frame(sock)
        codec.receive_data(bytes([kind]) + len(payload).to_bytes(3, "big") + payload)
        assert codec.next_event() == ExtraInfoRequest(ReqBody())
        frame = codec.send(ExtraInfoResponse(body))
        pos = 0
        while pos < len(frame):
            step = rng.choice([1, 3, 4, 5, 1000, 65536, 300_000])
            sock.sendall(frame[pos : pos + step])
            pos += step
            if rng.random() < 0.01:
                time.sleep(0.001)
        kind, payload = read_frame(sock)
    reply = decode_runner_message(kind, payload)
    assert isinstance(reply, HTTPReqCallResponse) and isinstance(reply.action, Stop)
    assert reply.action.body == body


def test_reply_over_16_mib_is_refused_with_an_rpc_error(runner):
    # The largest body an ExtraInfo answer can carry; the Stop echoing it needs more room.
    overhead = len(encode_message(ExtraInfoResponse(b""))) - 4
    body = b"x" * (16_777_215 - overhead - 8)

    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            return await apisix.request(stop_conf(echo_body=True), ClientRequest(body=body))

    answer = run(scenario())
    assert answer.status == 503
    assert "service unavailable" in answer.error


def test_vars_are_fetched_through_extra_info(runner):
    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            conf = stop_conf(echo_vars=["remote_addr", "route_id", "nope"])
            client = ClientRequest(vars={"remote_addr": b"127.0.0.1", "route_id": b"1"})
            return await apisix.request(conf, client)

    answer = run(scenario())
    assert answer.header("X-Var-remote_addr") == "127.0.0.1"
    assert answer.header("X-Var-route_id") == "1"
    assert answer.header("X-Var-nope") == "<nil>"


def test_stop_answer_keeps_duplicate_headers_and_status(runner):
    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            return await apisix.request(
                stop_conf(status=405, body="cat", headers={"X-Resp": "foo"}), ClientRequest()
            )

    answer = run(scenario())
    assert (answer.status, answer.body, answer.header("x-resp")) == (405, b"cat", "foo")


# --- process lifecycle ------------------------------------------------------------------------


def test_socket_is_world_connectable_and_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "r.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on, as a crashed runner leaves behind
    with RunnerProcess(socket_path=path, args=["--test-plugins"]) as proc:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o766
        assert prepare_raw(proc.socket_path, None, "k#1") >= 1
        assert proc.stop() == 0
    assert not os.path.exists(path)


def test_socket_of_a_newer_runner_is_not_unlinked_on_exit(tmp_path):
    path = str(tmp_path / "r.sock")
    old = RunnerProcess(socket_path=path, args=["--test-plugins"]).start()
    new = RunnerProcess(socket_path=path, args=["--test-plugins"]).start()  # a reload
    try:
        assert old.stop() == 0
        assert os.path.exists(path)
        assert prepare_raw(path, None, "k#new") >= 1  # the new runner still answers
    finally:
        new.close()


def test_missing_listen_address_exits_with_a_clear_error():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "APISIX_LISTEN_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "kafkaupstream", "run"], env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 2
    assert b"APISIX_LISTEN_ADDRESS" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_during_traffic_exits_zero_within_one_second_answering_in_flight(runner, sig):
    async def scenario():
        async with FakeApisix(runner.socket_path, workers=4) as apisix:
            conf = stop_conf(status=200, echo_body=True, delay_ms=150)
            await apisix.prepare(conf)
            tasks = [
                asyncio.create_task(apisix.request(conf, ClientRequest(body=b"%d" % i)))
                for i in range(40)
            ]
            await asyncio.sleep(0.05)  # every exchange is now inside the plugin's delay
            started = time.monotonic()
            runner.send_signal(sig)
            code = await asyncio.to_thread(runner.proc.wait, 5)
            elapsed = time.monotonic() - started
            answers = await asyncio.gather(*tasks)
            return code, elapsed, answers

    code, elapsed, answers = run(scenario())
    assert code == 0
    assert elapsed < 1.0
    assert [(a.status, a.body) for a in answers] == [(200, b"%d" % i) for i in range(40)]
    assert not os.path.exists(runner.socket_path)


def test_sighup_stops_the_single_process_runner_cleanly_removing_its_socket():
    with RunnerProcess(args=["--test-plugins"], workers=1) as proc:
        assert prepare_raw(proc.socket_path, None, "k#hup") >= 1
        assert proc.stop(signal.SIGHUP) == 0
        assert not os.path.exists(proc.socket_path)
        assert "event=stopped" in proc.logs()


def test_sigterm_cuts_off_an_exchange_longer_than_the_budget_with_an_answer(runner):
    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            conf = stop_conf(delay_ms=5000)
            await apisix.prepare(conf)
            task = asyncio.create_task(apisix.request(conf, ClientRequest()))
            await asyncio.sleep(0.1)
            runner.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(runner.proc.wait, 5)
            return code, await task

    code, answer = run(scenario())
    assert code == 0
    assert answer.status == 503
    assert json.loads(answer.body)["error"] == "shutting_down"


def test_idle_pooled_connection_is_closed_on_shutdown_without_error(runner):
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(encode_message(PrepareConfRequest(None, "k#idle")))
        read_frame(sock)
        assert runner.stop() == 0
        assert sock.recv(1) == b""


def test_on_sigterm_idle_connections_close_before_the_drain_so_nginx_drops_them_early(runner):
    # nginx removes an idle pooled connection from its pool when it sees it close; closing the
    # idle ones first (before in-flight exchanges drain) narrows the reuse race of a restart.
    async def scenario():
        async with FakeApisix(runner.socket_path) as apisix:
            slow = stop_conf(status=201, delay_ms=400)
            await apisix.prepare(slow)
            reader, writer = await asyncio.open_unix_connection(runner.socket_path)
            writer.write(encode_message(PrepareConfRequest(None, "k#idle")))
            header = await reader.readexactly(4)
            await reader.readexactly(struct.unpack(">I", b"\x00" + header[1:])[0])
            in_flight = asyncio.create_task(apisix.request(slow, ClientRequest()))
            await asyncio.sleep(0.1)
            runner.send_signal(signal.SIGTERM)
            eof = await asyncio.wait_for(reader.read(1), 0.3)
            early = (runner.proc.poll() is None, in_flight.done())
            writer.close()
            return eof, early, await in_flight

    eof, (running, answered), answer = run(scenario())
    assert eof == b"" and running and not answered
    assert answer.status == 201


def test_a_request_on_a_dead_pooled_connection_after_a_restart_is_503_and_not_retried():
    # What APISIX does when a pooled connection's close races with its reuse: the request fails
    # ("failed to send RPC_HTTP_REQ_CALL"), only CONF_TOKEN_NOT_FOUND is retried.
    with RunnerProcess(args=["--test-plugins"]) as first:

        async def scenario():
            async with FakeApisix(first.socket_path) as apisix:
                conf = stop_conf(status=201)
                before = await apisix.request(conf, ClientRequest())
                first.stop(signal.SIGKILL)  # the loop is blocked: the pool cannot notice
                with RunnerProcess(socket_path=first.socket_path, args=["--test-plugins"]):
                    dead = await apisix.request(conf, ClientRequest())
                    retries = apisix.retry_count
                    # Each dead connection still pooled fails one request; then a fresh one.
                    after = [await apisix.request(conf, ClientRequest()) for _ in range(3)]
                return before, dead, retries, after

        before, dead, retries, after = run(scenario())
    assert (before.status, dead.status, retries) == (201, 503, 0)
    assert dead.error.startswith("failed to send") or dead.error.endswith("closed")
    assert after[-1].status == 201 and {a.status for a in after} <= {201, 503}


# --- what one PrepareConf may carry --------------------------------------------------------------


def test_a_prepare_conf_with_20000_entries_is_refused_at_once_and_the_loop_keeps_serving(runner):
    many = tuple(TextEntry("stop", '{"status": 201}') for _ in range(20_000))
    ok = prepare_raw(runner.socket_path, many[:64], "route#64#x#1")  # the limit itself is fine
    started = time.monotonic()
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(encode_message(PrepareConfRequest(many, "route#big#x#1")))
        frame_type, payload = read_frame(sock)
    refused_s = time.monotonic() - started
    assert decode_runner_message(frame_type, payload) == ErrorResponse(ErrorCode.BAD_REQUEST)

    async def served_meanwhile():
        async with FakeApisix(runner.socket_path) as apisix:
            return await apisix.request(stop_conf(status=202), ClientRequest())

    assert ok >= 1 and run(served_meanwhile()).status == 202
    print(f"\n20,000-entry PrepareConf refused in {refused_s * 1000:.0f} ms")
    assert refused_s < 1.0
    lines = [line for line in runner.logs().splitlines() if "event=prepare_conf_refused" in line]
    assert len(lines) == 1 and "20000 entries (at most 64)" in lines[0]


def test_a_prepare_conf_over_1_mib_is_refused_before_it_is_decoded(runner):
    big = (TextEntry("stop", "x" * (1 << 20)),)
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(encode_message(PrepareConfRequest(big, "route#huge#x#1")))
        frame_type, payload = read_frame(sock)
        assert sock.recv(1) == b""  # and the connection closed: its stream is not trusted
    assert decode_runner_message(frame_type, payload) == ErrorResponse(ErrorCode.BAD_REQUEST)
    lines = [line for line in runner.logs().splitlines() if "event=prepare_conf_refused" in line]
    assert len(lines) == 1 and "(at most 1048576)" in lines[0]
