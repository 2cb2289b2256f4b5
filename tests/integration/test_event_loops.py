"""The runner serves the same answers on uvloop and on asyncio's own loop, one worker or two."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import os
import resource
import socket
import time
from pathlib import Path

import pytest

from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from harness.runner_process import RunnerProcess
from kafkaupstream.protocol import PrepareConfRequest, encode_message

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="no uvloop")),
]


def _loaded_uvloop(pid: int) -> bool:
    return "/uvloop/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("workers", [1, 2])
def test_body_echo_round_trip_on_each_loop(loop: str, workers: int):
    conf = PluginConf(conf=(("stop", json.dumps({"echo_body": True, "status": 201})),))
    body = b'{"hello": "world"}' * 100
    env = {"KAFKAUPSTREAM_LOOP": loop}
    with RunnerProcess(args=["--test-plugins"], env=env, workers=workers) as runner:

        async def exchange() -> list[tuple[int, bytes]]:
            async with FakeApisix(runner.socket_path) as apisix:
                answers = await asyncio.gather(
                    *(apisix.request(conf, ClientRequest(body=body)) for _ in range(20))
                )
            return [(answer.status, answer.body) for answer in answers]

        assert asyncio.run(exchange()) == [(201, body)] * 20
        if workers == 1 and Path("/proc").is_dir():
            assert _loaded_uvloop(runner.pid) is (loop == "uvloop")


def _answer(sock: socket.socket, timeout: float = 0.2) -> str:
    sock.settimeout(timeout)
    try:
        return "answered" if sock.recv(8) else "closed"
    except TimeoutError:
        return "waiting"  # still in the listen backlog (asyncio retries the accept each second)
    except OSError:
        return "reset"  # accepted and closed at once (libuv's EMFILE trick)


@pytest.mark.parametrize("loop", LOOPS)
def test_accepts_refused_at_the_open_files_limit_are_logged_once_with_the_limit(loop: str):
    env = {"KAFKAUPSTREAM_LOOP": loop}
    with RunnerProcess(args=["--test-plugins"], env=env, workers=1) as runner:
        started = time.monotonic()
        soft, hard = resource.prlimit(runner.pid, resource.RLIMIT_NOFILE)
        limit = len(os.listdir(f"/proc/{runner.pid}/fd")) + 4
        resource.prlimit(runner.pid, resource.RLIMIT_NOFILE, (limit, hard))
        socks = []
        try:
            for _ in range(limit):  # far more connections than descriptors left
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(1.5)
                sock.connect(runner.socket_path)
                sock.sendall(encode_message(PrepareConfRequest(None, "k#fd")))
                socks.append(sock)
            time.sleep(2.5)  # two checks of the descriptor count, many accept retries
            outcomes = collections.Counter(_answer(sock) for sock in socks)
        finally:
            for sock in socks:
                sock.close()
            resource.prlimit(runner.pid, resource.RLIMIT_NOFILE, (soft, hard))
        refused = [line for line in runner.logs().splitlines() if "event=accept_refused" in line]
        elapsed = time.monotonic() - started
        print(
            f"\n{loop}: {len(socks)} connections at limit {limit}: {dict(outcomes)}; "
            f"{len(refused)} log lines in {elapsed:.1f} s"
        )
        assert outcomes["answered"] < len(socks)
        assert 1 <= len(refused) <= 1 + elapsed // 10, refused  # rate-limited: one per 10 s
        assert f"cause=EMFILE limit={limit} hard_limit={hard}" in refused[0]
        assert "Traceback" not in runner.logs()
        time.sleep(1.2)  # asyncio re-adds its accept after 1 s
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as again:
            again.settimeout(2)
            again.connect(runner.socket_path)
            again.sendall(encode_message(PrepareConfRequest(None, "k#fd")))
            assert _answer(again, timeout=2.0) == "answered"  # serving again, descriptors free
