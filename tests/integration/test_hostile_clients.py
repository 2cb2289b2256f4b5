"""Hostile peers against the real runner process: stalls, floods, half-closes, idle hordes.

Each test prints its figures (connections, bytes, fds, RSS, latencies); none asserts a time
tighter than "answers within seconds" (a loaded CI machine is slow, not broken).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import stat
import time
from collections.abc import Iterator

import pytest

from harness.hostile import connect_unix, exchange_raw, good_exchange, open_fds, rss_bytes
from harness.runner_process import RunnerProcess
from kafkaupstream.protocol import (
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    Stop,
    TextEntry,
    decode_runner_message,
    encode_message,
)
from tests.integration.test_runner_rpc import prepare_raw, raw_connect, read_frame

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    # One process: a stall that held its worker would stall every other connection.
    with RunnerProcess(args=["--test-plugins"], workers=1) as proc:
        yield proc


def settle(pid: int, baseline: int, timeout: float = 10.0) -> int:
    """The fd count of ``pid`` once it is back within a few of ``baseline`` (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        count = open_fds(pid)
        if count <= baseline + 2 or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def assert_no_traceback(proc: RunnerProcess) -> None:
    logs = proc.logs()
    assert "Traceback" not in logs and "Task exception" not in logs, logs[-4000:]


def stop_token(path: str, conf: str, key: str) -> int:
    return prepare_raw(path, (TextEntry("stop", conf),), key=key)


# --- stalls --------------------------------------------------------------------------------------


def test_frames_claiming_16_mib_then_stalling_hold_no_worker_hostage(runner: RunnerProcess):
    baseline_fds, baseline_rss = open_fds(runner.pid), rss_bytes(runner.pid)
    stalled = [raw_connect(runner.socket_path) for _ in range(50)]
    for sock in stalled:
        sock.sendall(b"\x02\xff\xff\xff" + b"0123456789")
    latencies = [good_exchange(runner.socket_path) for _ in range(20)]
    held_fds, held_rss = open_fds(runner.pid), rss_bytes(runner.pid)
    for sock in stalled:
        sock.close()
    after_fds = settle(runner.pid, baseline_fds)
    print(
        f"\nstalled=50 good_exchanges=20 max_latency_ms={max(latencies) * 1000:.1f} "
        f"fds={baseline_fds}->{held_fds}->{after_fds} "
        f"rss_mib={baseline_rss / MiB:.1f}->{held_rss / MiB:.1f}"
    )
    assert max(latencies) < 2.0
    assert held_fds >= baseline_fds + 48  # the stalled connections were really open
    assert held_rss - baseline_rss < 32 * MiB  # a claimed length reserves nothing
    assert after_fds <= baseline_fds + 2
    assert good_exchange(runner.socket_path) < 2.0
    assert "event=malformed_frame" in runner.logs()
    assert_no_traceback(runner)


def test_thousands_of_silent_connections_leave_the_service_answering(tmp_path):
    wanted = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    # Raised for this process and so for the runner it spawns (children inherit it).
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        with RunnerProcess(args=["--test-plugins"], workers=1) as proc:
            good_exchange(proc.socket_path)
            baseline_fds, baseline_rss = open_fds(proc.pid), rss_bytes(proc.pid)
            silent = []
            try:
                for _ in range(wanted):
                    silent.append(connect_unix(proc.socket_path))
                latencies = [good_exchange(proc.socket_path) for _ in range(20)]
                deadline = time.monotonic() + 10
                while (
                    open_fds(proc.pid) < baseline_fds + wanted - 2 and time.monotonic() < deadline
                ):
                    time.sleep(0.05)  # the backlog drains into accepted connections
                held_fds, held_rss = open_fds(proc.pid), rss_bytes(proc.pid)
            finally:
                for sock in silent:
                    sock.close()
            after_fds = settle(proc.pid, baseline_fds)
            after_rss = rss_bytes(proc.pid)
            print(
                f"\nsilent={wanted} good_exchanges=20 max_latency_ms={max(latencies) * 1000:.1f}"
                f" fds={baseline_fds}->{held_fds}->{after_fds}"
                f" rss_mib={baseline_rss / MiB:.1f}->{held_rss / MiB:.1f}->{after_rss / MiB:.1f}"
                f" rss_per_connection_kib={(held_rss - baseline_rss) / wanted / 1024:.1f}"
            )
            assert max(latencies) < 2.0
            assert held_fds >= baseline_fds + wanted - 2
            assert after_fds <= baseline_fds + 2
            assert good_exchange(proc.socket_path) < 2.0
            assert_no_traceback(proc)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- half-closed sockets -------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("delay_ms", [0, 100])
def test_request_then_shutdown_write_still_gets_its_answer(workers: int, delay_ms: int):
    # workers=2: a PrepareConf goes to the parent's token store, so its answer comes after the
    # EOF was read; delay_ms: so does the answer of the call.
    with RunnerProcess(args=["--test-plugins"], workers=workers) as proc:
        with raw_connect(proc.socket_path) as sock:
            sock.sendall(encode_message(PrepareConfRequest((TextEntry("stop", "{}"),), "k#1")))
            sock.shutdown(socket.SHUT_WR)
            reply = decode_runner_message(*read_frame(sock))
            assert isinstance(reply, PrepareConfResponse)
            assert sock.recv(1) == b""
        conf = f'{{"status": 201, "delay_ms": {delay_ms}}}'
        token = stop_token(proc.socket_path, conf, "k#2")
        with raw_connect(proc.socket_path) as sock:
            sock.sendall(encode_message(HTTPReqCallRequest(id=5, conf_token=token)))
            sock.shutdown(socket.SHUT_WR)
            answer = decode_runner_message(*read_frame(sock))
            assert isinstance(answer, HTTPReqCallResponse) and answer.id == 5
            assert isinstance(answer.action, Stop) and answer.action.status == 201
            assert sock.recv(1) == b""
        assert_no_traceback(proc)


@pytest.mark.parametrize("cut", [1, 3, 4, 7])
def test_shutdown_write_mid_frame_drops_the_connection_cleanly(runner: RunnerProcess, cut: int):
    frame = encode_message(PrepareConfRequest((TextEntry("stop", "{}"),), "k#mid"))
    baseline = open_fds(runner.pid)
    result = exchange_raw(runner.socket_path, frame[:cut])
    # Dropped, with or without saying why first (the peer half-closed, so it may still read).
    assert result.ending == "eof" and not result.trailing
    assert [decode_runner_message(*f) for f in result.frames] in (
        [],
        [ErrorResponse(ErrorCode.BAD_REQUEST)],
    )
    assert settle(runner.pid, baseline) <= baseline + 2
    assert good_exchange(runner.socket_path) < 2.0
    assert_no_traceback(runner)


def test_shutdown_write_while_the_runner_awaits_extra_info_drops_the_exchange(
    runner: RunnerProcess,
):
    token = stop_token(runner.socket_path, '{"echo_body": true}', "k#echo")
    with raw_connect(runner.socket_path) as sock:
        sock.sendall(encode_message(HTTPReqCallRequest(id=1, conf_token=token)))
        assert decode_runner_message(*read_frame(sock)) == ExtraInfoRequest(ReqBody())
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
    assert good_exchange(runner.socket_path) < 2.0
    assert_no_traceback(runner)


# --- a peer that never reads ------------------------------------------------------------------


def test_a_peer_that_never_reads_cannot_grow_the_runners_memory(runner: RunnerProcess):
    # Each pipelined unit is a call plus its ExtraInfo answer: the echo plugin answers every
    # one with the 64 KiB body, and the peer reads none of those answers.
    token = stop_token(runner.socket_path, '{"echo_body": true}', "k#flood")
    unit = encode_message(HTTPReqCallRequest(id=1, conf_token=token)) + encode_message(
        ExtraInfoResponse(os.urandom(64 * 1024))
    )
    limit, budget_s = 512 * MiB, 4.0
    baseline_rss, baseline_fds = rss_bytes(runner.pid), open_fds(runner.pid)
    peak_rss, sent, stalled_s, checks = baseline_rss, 0, 0.0, 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(runner.socket_path)
        sock.setblocking(False)
        pending = memoryview(unit)
        started = time.monotonic()
        while sent < limit and time.monotonic() - started < budget_s:
            try:
                n = sock.send(pending)
            except BlockingIOError:
                time.sleep(0.01)
                stalled_s += 0.01
                peak_rss = max(peak_rss, rss_bytes(runner.pid))
                if int(stalled_s * 10) > checks:  # other connections keep being served
                    checks += 1
                    assert good_exchange(runner.socket_path) < 2.0
                continue
            sent += n
            pending = pending[n:] if n < len(pending) else memoryview(unit)
        peak_rss = max(peak_rss, rss_bytes(runner.pid))
    after_fds = settle(runner.pid, baseline_fds)
    print(
        f"\nflood_sent_mib={sent / MiB:.1f} of {limit / MiB:.0f} in {budget_s:.0f}s"
        f" stalled_s={stalled_s:.1f} good_exchanges_meanwhile={checks}"
        f" rss_mib={baseline_rss / MiB:.1f}->{peak_rss / MiB:.1f}"
        f" fds={baseline_fds}->{after_fds}"
    )
    # Without flow control the runner reads all it is sent and buffers every answer.
    assert peak_rss - baseline_rss < 64 * MiB
    assert sent < 128 * MiB
    assert checks >= 1
    assert after_fds <= baseline_fds + 2
    assert good_exchange(runner.socket_path) < 2.0
    assert_no_traceback(runner)


# --- the socket file ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o022])
@pytest.mark.parametrize("dir_mode", [0o700, 0o750, 0o755])
def test_socket_is_mode_0766_and_its_directory_is_left_alone(tmp_path, umask: int, dir_mode: int):
    directory = tmp_path / "conf"
    directory.mkdir()
    directory.chmod(dir_mode)
    before = os.stat(directory)
    path = str(directory / "apisix-1.sock")
    old_umask = os.umask(umask)  # inherited by the runner, as it would inherit nginx's
    try:
        proc = RunnerProcess(socket_path=path, args=["--test-plugins"], workers=1).start()
    finally:
        os.umask(old_umask)
    with contextlib.closing(proc):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o766
        after = os.stat(directory)
        assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (
            dir_mode,
            before.st_uid,
            before.st_gid,
        )
        assert good_exchange(path) < 2.0
    assert stat.S_IMODE(os.stat(directory).st_mode) == dir_mode
