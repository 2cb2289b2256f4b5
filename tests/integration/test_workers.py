"""``kafkaupstream run --workers N``: one socket, N processes, one set of conf tokens.

Which worker serves a connection is the kernel's choice; to put a connection on a given worker
the tests stop the others (SIGSTOP) until that worker has accepted it, and every answer names
the process that gave it (the stop plugin's ``echo_pid``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.runner_process import RunnerProcess
from kafkaupstream.protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    ErrorResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    PrepareConfRequest,
    PrepareConfResponse,
    Role,
    Stop,
    TextEntry,
)
from tests.integration.workerkit import only_running, process_state
from tests.waiting import eventually

UNUSED_TOKEN = 0  # never a token (the space skips 0): always CONF_TOKEN_NOT_FOUND


def stop_entry(**fields: object) -> tuple[TextEntry, ...]:
    return (TextEntry("stop", json.dumps({"echo_pid": True, **fields})),)


class RawConn:
    """One APISIX connection, frames on a blocking socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.codec = Connection(Role.APISIX)

    def exchange(self, message: object) -> object:
        self.sock.sendall(self.codec.send(message))  # type: ignore[arg-type]
        while True:
            event = self.codec.next_event()
            if event is not NEED_DATA:
                return event
            self.codec.receive_data(self.sock.recv(1 << 16))

    def prepare(self, conf: tuple[TextEntry, ...] | None, key: str) -> int:
        reply = self.exchange(PrepareConfRequest(conf, key))
        assert isinstance(reply, PrepareConfResponse), reply
        return reply.conf_token

    def call(self, token: int, request_id: int = 1) -> HTTPReqCallResponse | ErrorResponse:
        reply = self.exchange(HTTPReqCallRequest(id=request_id, conf_token=token))
        assert isinstance(reply, HTTPReqCallResponse | ErrorResponse), reply
        return reply

    def close(self) -> None:
        self.sock.close()


def answered(reply: object) -> tuple[int, int]:
    """(status, pid of the worker) of a Stop answer from the stop plugin with ``echo_pid``."""
    assert isinstance(reply, HTTPReqCallResponse) and isinstance(reply.action, Stop), reply
    pid = next(e.value for e in reply.action.headers if e.name == "X-Worker-Pid")
    assert pid is not None
    return reply.action.status, int(pid)


def connect_to(proc: RunnerProcess, pid: int) -> RawConn:
    """A connection that worker ``pid`` accepted (proved by an exchange while it ran alone)."""
    with only_running(proc, pid):
        conn = RawConn(proc.socket_path)
        reply = conn.call(UNUSED_TOKEN)
    assert reply == ErrorResponse(ErrorCode.CONF_TOKEN_NOT_FOUND)
    return conn


def log_lines(proc: RunnerProcess, event: str) -> list[str]:
    return [line for line in proc.logs().splitlines() if f"event={event} " in line]


@contextlib.contextmanager
def runner(workers: int | None, conf_expire: str = "3600") -> Iterator[RunnerProcess]:
    """A runner with the stop plugin; its log is printed (shown by pytest if the test fails)."""
    proc = RunnerProcess(args=["--test-plugins"], conf_expire=conf_expire, workers=workers)
    try:
        with proc:
            yield proc
    finally:
        print(proc.logs())


@pytest.fixture
def two_workers():
    with runner(2) as proc:
        assert len(proc.worker_pids()) == 2
        yield proc


# --- tokens across workers -----------------------------------------------------------------------


def test_token_prepared_in_one_worker_is_honoured_by_another(two_workers):
    first, second = two_workers.worker_pids()
    on_first = connect_to(two_workers, first)
    token = on_first.prepare(stop_entry(status=201), "route#1#ext-plugin-pre-req#1")
    on_second = connect_to(two_workers, second)
    assert answered(on_second.call(token)) == (201, second)
    assert answered(on_first.call(token)) == (201, first)
    prepared_in = [
        re.search(r" pid=(\d+) ", line) for line in log_lines(two_workers, "conf_prepared")
    ]
    assert [int(m.group(1)) for m in prepared_in if m] == [first]  # no PrepareConf reached `second`


def test_same_key_gets_the_same_token_in_every_worker(two_workers):
    pids = two_workers.worker_pids()
    tokens = []
    for pid in pids + pids:
        conn = connect_to(two_workers, pid)
        tokens.append(conn.prepare(stop_entry(), "route#1#ext-plugin-pre-req#1"))
        assert answered(conn.call(tokens[-1]))[1] == pid
    other = connect_to(two_workers, pids[1]).prepare(stop_entry(), "route#2#ext-plugin-pre-req#1")
    keyless = connect_to(two_workers, pids[0]).prepare(None, "")
    first = tokens[0]
    # One allocator (the parent's), counting up from this runner's random start, 0 skipped.
    assert tokens == [first] * 4
    assert (other, keyless) == (first % 0xFFFFFFFF + 1, (first + 1) % 0xFFFFFFFF + 1)


def test_expired_token_is_code_2_in_every_worker():
    # APISIX_CONF_EXPIRE_TIME=0.5 -> tokens live 0.6 s after their last use.
    with runner(3, conf_expire="0.5") as proc:
        used_a, used_b, never = (connect_to(proc, pid) for pid in proc.worker_pids())
        token = used_a.prepare(stop_entry(), "route#1#ext-plugin-pre-req#1")
        assert answered(used_b.call(token))[0] == 200  # now cached in two workers
        time.sleep(0.9)
        replies = [conn.call(token) for conn in (used_a, used_b, never)]
    assert replies == [ErrorResponse(ErrorCode.CONF_TOKEN_NOT_FOUND)] * 3


def test_use_in_one_worker_keeps_the_token_alive_in_the_others():
    with runner(2, conf_expire="0.5") as proc:
        busy_pid, idle_pid = proc.worker_pids()
        busy, idle = connect_to(proc, busy_pid), connect_to(proc, idle_pid)
        token = busy.prepare(stop_entry(), "route#1#ext-plugin-pre-req#1")
        assert answered(idle.call(token)) == (200, idle_pid)
        for _ in range(6):  # 1.2 s of local hits in `busy`, twice the TTL
            time.sleep(0.2)
            assert answered(busy.call(token)) == (200, busy_pid)
        # `idle`'s own copy lapsed long ago; the shared entry was kept alive by `busy`'s uses.
        assert answered(idle.call(token)) == (200, idle_pid)


def test_conf_replaced_under_the_same_key_is_prepared_again_in_other_workers(two_workers):
    first, second = two_workers.worker_pids()
    on_first, on_second = connect_to(two_workers, first), connect_to(two_workers, second)
    token = on_first.prepare(stop_entry(status=201), "route#1#x#1")
    assert answered(on_second.call(token)) == (201, second)
    assert on_first.prepare(stop_entry(status=202), "route#1#x#1") == token
    assert answered(on_second.call(token)) == (202, second)


# --- lifecycle -----------------------------------------------------------------------------------


def test_default_is_one_worker_per_cpu_and_one_means_no_fork():
    cpus = os.cpu_count() or 1
    with runner(None) as default:
        assert len(default.worker_pids()) == (cpus if cpus > 1 else 0)
    with runner(1) as single:
        assert single.worker_pids() == []
        conn = RawConn(single.socket_path)
        token = conn.prepare(stop_entry(), "k#1")
        assert answered(conn.call(token)) == (200, single.pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_with_workers_under_traffic_exits_zero_within_one_second(two_workers, sig):
    pids = two_workers.worker_pids()
    token = connect_to(two_workers, pids[0]).prepare(stop_entry(delay_ms=150), "route#1#x#1")
    conns = [connect_to(two_workers, pid) for pid in pids for _ in range(10)]
    with ThreadPoolExecutor(len(conns)) as pool:
        calls = [pool.submit(conn.call, token, i) for i, conn in enumerate(conns)]
        time.sleep(0.05)  # every exchange is now inside the plugin's delay
        started = time.monotonic()
        two_workers.send_signal(sig)
        code = two_workers.proc.wait(5)
        elapsed = time.monotonic() - started
        answers = [answered(call.result()) for call in calls]
    assert code == 0
    assert elapsed < 1.0
    assert answers == [(200, pid) for pid in pids for _ in range(10)]
    assert not os.path.exists(two_workers.socket_path)


def test_wedged_worker_is_killed_at_the_budget_and_the_runner_still_exits_zero(two_workers):
    wedged, healthy = two_workers.worker_pids()
    os.kill(wedged, signal.SIGSTOP)  # cannot act on SIGTERM, as if stuck in a C call
    started = time.monotonic()
    two_workers.send_signal(signal.SIGTERM)
    code = two_workers.proc.wait(5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert 0.7 < elapsed < 1.0  # the whole 0.8 s budget, then SIGKILL, then exit
    assert process_state(wedged) in ("", "Z") and process_state(healthy) in ("", "Z")
    assert "event=shutdown_killed_workers count=1" in two_workers.logs()


@pytest.mark.parametrize(
    ("sig", "cause"),
    [(signal.SIGKILL, "killed by SIGKILL"), (signal.SIGHUP, "exit status 0")],
    ids=["SIGKILL", "SIGHUP"],  # a SIGHUP (a hangup of the process group) is a clean stop
)
def test_killed_worker_is_replaced_and_its_tokens_survive(two_workers, sig, cause):
    victim, survivor = two_workers.worker_pids()
    token = connect_to(two_workers, victim).prepare(stop_entry(status=203), "route#1#x#1")
    os.kill(victim, sig)
    eventually(
        lambda: len(log_lines(two_workers, "worker_ready")) == 3,
        timeout=5.0,
        what="a new worker",
        interval=0.01,
    )
    (died,) = log_lines(two_workers, "worker_died")
    assert f"pid={victim} " in died and cause in died
    replacement = next(p for p in two_workers.worker_pids() if p != survivor)
    assert replacement != victim
    # The replacement never saw the PrepareConf; the token lives in the parent.
    assert answered(connect_to(two_workers, replacement).call(token)) == (203, replacement)
    assert answered(connect_to(two_workers, survivor).call(token)) == (203, survivor)


def test_parent_sigkill_leaves_no_worker_behind(two_workers):
    workers = two_workers.worker_pids()
    two_workers.send_signal(signal.SIGKILL)
    two_workers.proc.wait(5)
    eventually(
        lambda: all(process_state(pid) in ("", "Z") for pid in workers),
        timeout=3,
        what="the workers to die with their parent",
        interval=0.01,
    )


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_workers_must_be_a_whole_number_of_at_least_one(tmp_path, value):
    env = {**os.environ, "APISIX_LISTEN_ADDRESS": f"unix:{tmp_path / 'r.sock'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "kafkaupstream", "run", "--workers", value],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert b"--workers" in proc.stderr
    assert not (tmp_path / "r.sock").exists()
