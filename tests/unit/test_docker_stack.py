"""The e2e fixtures' own failure paths, against a fake engine and a fake docker CLI."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.errors import DockerException

from harness.broker import EmbeddedBroker, free_port
from harness.docker_stack import (
    DockerStack,
    Placement,
    StackError,
    compose_unavailable_reason,
    describe_engine_failure,
    engine_unavailable_reason,
    placement,
)
from tests.unit.fake_docker import (
    FakeContainer,
    FakeEngine,
    install_fake_cli,
    recorded_calls,
    serve_engine,
)

PROJECT = "kafkaupstream-e2e-test"
LOCAL = Placement("127.0.0.1", "127.0.0.1", None)
CLASH = (
    "Error response from daemon: driver failed programming external connectivity on endpoint "
    "kafkaupstream-e2e-test-kafka-1: Bind for 0.0.0.0:29092 failed: port is already allocated"
)


def labels(service: str) -> dict[str, str]:
    return {"com.docker.compose.project": PROJECT, "com.docker.compose.service": service}


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """A fake engine with a healthy etcd and an APISIX that died at once; DOCKER_HOST points
    at it."""
    socket_path = tmp_path / "docker.sock"
    fake = FakeEngine(
        containers=[
            FakeContainer("e1", f"{PROJECT}-etcd-1", labels("etcd"), health="healthy"),
            FakeContainer(
                "a1",
                f"{PROJECT}-apisix-1",
                labels("apisix"),
                status="exited",
                exit_code=1,
                log=b"starting\nnginx: [emerg] failed to handle configuration: can't find "
                b"environment variable APISIX_ADMIN_KEY\n",
            ),
            FakeContainer("o1", "someone-elses", {"com.docker.compose.project": "other"}),
        ]
    )
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    with serve_engine(socket_path, fake):
        yield fake


def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scenario: Any) -> dict[str, str]:
    environment = install_fake_cli(tmp_path, scenario)
    monkeypatch.setenv("PATH", f"{environment['PATH']}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_DOCKER_SCENARIO", environment["FAKE_DOCKER_SCENARIO"])
    monkeypatch.setenv("FAKE_DOCKER_CALLS", environment["FAKE_DOCKER_CALLS"])
    return environment


def stack(tmp_path: Path, **options: Any) -> DockerStack:
    return DockerStack(
        project=PROJECT,
        image="kafkaupstream:e2e",
        where=options.pop("where", LOCAL),
        compose_file=str(tmp_path / "docker-compose.yml"),
        start_timeout=options.pop("start_timeout", 5.0),
        **options,
    )


# -- is there an engine? ----------------------------------------------------------------------


def test_an_engine_that_answers_the_ping_is_available(engine: FakeEngine) -> None:
    assert engine_unavailable_reason() is None
    assert "GET /_ping" in engine.requests


def test_no_socket_is_reported_as_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    reason = engine_unavailable_reason()
    assert reason is not None
    assert reason.startswith(f"no Docker engine answered at unix://{tmp_path}/absent.sock")


def test_a_refused_tcp_connection_is_reported_as_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    reason = engine_unavailable_reason()
    assert reason is not None
    assert reason.startswith("no Docker engine answered at tcp://127.0.0.1:")


def test_an_engine_answering_with_an_error_is_not_called_missing(
    engine: FakeEngine,
) -> None:
    engine.ping_status = 500
    reason = engine_unavailable_reason()
    assert reason is not None
    assert reason.startswith("the Docker engine at unix://")
    assert "answered with an error" in reason


def test_a_bad_docker_host_is_a_client_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "carrier-pigeon://loft")
    reason = engine_unavailable_reason()
    assert reason is not None
    assert reason.startswith("the Docker client failed before reaching an engine")
    assert "not a missing engine" in reason


def test_docker_7_0_with_requests_2_32_is_a_client_problem() -> None:
    # What docker 7.0.0 raised from APIClient() with requests >= 2.32 (docker-py #3256).
    try:
        try:
            raise requests.exceptions.InvalidSchema("Not supported URL scheme http+docker")
        except requests.exceptions.InvalidSchema as inner:
            raise DockerException(f"Error while fetching server API version: {inner}") from inner
    except DockerException as exc:
        reason = describe_engine_failure(exc, "the default socket")
    assert "Not supported URL scheme http+docker" in reason
    assert reason.startswith("the Docker client failed before reaching an engine")
    assert "no Docker engine" not in reason


def test_a_missing_compose_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = compose_unavailable_reason()
    assert reason is not None
    assert "`docker compose version` failed" in reason
    assert "compose plugin" in reason


# -- where the ports are ----------------------------------------------------------------------


def test_a_local_engine_publishes_on_loopback_and_keeps_the_files_allow_list() -> None:
    assert placement({}) == Placement("127.0.0.1", "127.0.0.1", None)
    assert placement({"DOCKER_HOST": "unix:///run/docker.sock"}).host == "127.0.0.1"


def test_a_remote_engine_admits_only_this_process_to_the_admin_api() -> None:
    where = placement({"DOCKER_HOST": "tcp://127.0.0.2:2376"})
    assert where == Placement("127.0.0.2", "0.0.0.0", "127.0.0.1/32")
    assert placement({"DOCKER_HOST": "ssh://ci@127.0.0.3"}).host == "127.0.0.3"


def test_the_host_override_wins_and_an_explicit_allow_list_is_kept() -> None:
    environ = {"DOCKER_HOST": "tcp://192.0.2.1:2376", "KAFKAUPSTREAM_E2E_HOST": "127.0.0.5"}
    assert placement(environ) == Placement("127.0.0.5", "0.0.0.0", "127.0.0.1/32")
    environ["APISIX_ADMIN_ALLOW"] = "10.1.0.0/16"
    assert placement(environ).admin_allow == "10.1.0.0/16"


# -- a failed start ---------------------------------------------------------------------------


def test_a_container_that_dies_at_once_fails_the_start_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine
) -> None:
    cli = fake_cli(
        tmp_path,
        monkeypatch,
        up=[{"code": 1, "output": f"container {PROJECT}-apisix-1 exited (1)"}],
    )
    before = dict(os.environ)
    with pytest.raises(StackError) as failure:
        stack(tmp_path).start()
    message = str(failure.value)
    assert f"container {PROJECT}-apisix-1 exited (1)" in message
    assert "apisix: exited (exit code 1)" in message
    assert "can't find environment variable APISIX_ADMIN_KEY" in message
    assert "etcd: running (exit code 0, healthy)" in message
    assert "someone-elses" not in message
    # Not retried; cleaned up although pytest-docker's setup failed; environment restored.
    assert [call["sub"][0] for call in recorded_calls(cli)] == ["up", "down"]
    assert dict(os.environ) == before


def test_a_port_clash_is_retried_with_another_kafka_port_until_attempts_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine
) -> None:
    cli = fake_cli(tmp_path, monkeypatch, up=[{"code": 1, "output": CLASH}] * 2)
    ports = iter([41001, 41002])
    with pytest.raises(StackError, match="port is already allocated"):
        stack(tmp_path, attempts=2, kafka_port=lambda: next(ports)).start()
    calls = recorded_calls(cli)
    assert [call["sub"][0] for call in calls] == ["up", "down", "up", "down"]
    assert [call["env"]["STACK_KAFKA_PORT"] for call in calls if call["sub"][0] == "up"] == [
        "41001",
        "41002",
    ]


class _AdminAPI(http.server.BaseHTTPRequestHandler):
    """Answers GET /apisix/admin/routes like APISIX: 200 with the right key, else 401."""

    key = ""

    def do_GET(self) -> None:
        ok = self.path == "/apisix/admin/routes" and self.headers.get("X-API-KEY") == self.key
        body = b'{"list": [], "total": 0}' if ok else b'{"error_msg": "failed to check token"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_a_start_after_a_clash_reads_the_published_ports_and_reaches_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AdminAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    admin_port = server.server_address[1]
    gateway_port = free_port()
    cli = fake_cli(
        tmp_path,
        monkeypatch,
        up=[{"code": 1, "output": CLASH}, {"code": 0, "output": ""}],
        ports={"apisix:9080": f"0.0.0.0:{gateway_port}", "apisix:9180": f"0.0.0.0:{admin_port}"},
    )
    monkeypatch.setenv("STACK_SUBNET", "mine")
    before = dict(os.environ)
    try:
        with EmbeddedBroker({}) as broker:
            ports = iter([free_port(), broker.port])
            running = stack(tmp_path, kafka_port=lambda: next(ports))
            _AdminAPI.key = running.admin_key
            with running:
                assert running.ready.gateway_url == f"http://127.0.0.1:{gateway_port}"
                assert running.ready.admin_url == f"http://127.0.0.1:{admin_port}/apisix/admin"
                assert running.ready.kafka_bootstrap == f"127.0.0.1:{broker.port}"
                assert os.environ["APISIX_ADMIN_KEY"] == running.admin_key
                assert os.environ["STACK_KAFKA_PORT"] == str(broker.port)
                assert running.logs("apisix").endswith("APISIX_ADMIN_KEY\n")
    finally:
        server.shutdown()
        server.server_close()
    calls = recorded_calls(cli)
    subs = [call["sub"][0] for call in calls]
    # The ports are asked for only after the successful `up --wait`; `down` at the end.
    assert subs == ["up", "down", "up", "port", "port", "down"]
    up = calls[2]
    assert up["sub"][:4] == ["up", "--detach", "--wait", "--wait-timeout"]
    assert up["env"]["STACK_KAFKA_HOST"] == "127.0.0.1"
    assert up["env"]["STACK_PUBLISH_IP"] == "127.0.0.1"
    assert up["env"]["STACK_GATEWAY_PORT"] == ""
    assert up["env"]["KAFKAUPSTREAM_IMAGE"] == "kafkaupstream:e2e"
    assert up["env"]["APISIX_ADMIN_ALLOW"] is None
    assert up["env"]["STACK_SUBNET"].startswith("10.231.")
    assert dict(os.environ) == before


def test_an_admin_api_that_refuses_this_address_says_which_setting_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine
) -> None:
    class Refusing(_AdminAPI):
        def do_GET(self) -> None:
            body = b'{"error_msg": "IP address not allowed"}'
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    cli = fake_cli(
        tmp_path,
        monkeypatch,
        up=[{"code": 0, "output": ""}],
        ports={"apisix:9080": f"0.0.0.0:{port}", "apisix:9180": f"0.0.0.0:{port}"},
    )
    where = Placement("127.0.0.1", "0.0.0.0", "192.0.2.7/32")
    try:
        with pytest.raises(StackError, match="set APISIX_ADMIN_ALLOW"):
            stack(tmp_path, where=where).start()
    finally:
        server.shutdown()
        server.server_close()
    calls = recorded_calls(cli)
    assert calls[0]["env"]["APISIX_ADMIN_ALLOW"] == "192.0.2.7/32"
    assert calls[0]["env"]["STACK_PUBLISH_IP"] == "0.0.0.0"
    assert calls[-1]["sub"][0] == "down"
