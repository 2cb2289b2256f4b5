"""The runner serves the same answers on uvloop and on asyncio's own loop, one worker or two."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from harness.runner_process import RunnerProcess

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
