"""Stand-ins for a Docker engine and the docker CLI, for testing the e2e fixtures without Docker.

:class:`FakeEngine` speaks the few Engine API endpoints docker-py uses here (``/version``,
``/_ping``, listing, inspecting and reading the logs of containers) on a unix socket; point
``DOCKER_HOST`` at it. :func:`install_fake_cli` puts a ``docker`` executable first on ``PATH``
that answers ``docker compose ...`` from a scenario and records every call.
"""

from __future__ import annotations

import json
import re
import socketserver
import stat
import struct
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class FakeContainer:
    id: str
    name: str
    labels: Mapping[str, str]
    status: str = "running"
    exit_code: int = 0
    health: str | None = None
    log: bytes = b""

    def inspect(self) -> dict[str, Any]:
        state: dict[str, Any] = {"Status": self.status, "ExitCode": self.exit_code}
        if self.health:
            state["Health"] = {"Status": self.health}
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "Config": {"Tty": False, "Labels": dict(self.labels)},
            "State": state,
        }


@dataclass
class FakeEngine:
    """The engine's answers; ``requests`` lists the paths asked for."""

    containers: Sequence[FakeContainer] = ()
    ping_status: int = 200
    requests: list[str] = field(default_factory=list)

    def answer(self, method: str, target: str) -> tuple[int, str, bytes]:
        url = urllib.parse.urlsplit(target)
        path = re.sub(r"^/v[\d.]+", "", url.path)
        query = urllib.parse.parse_qs(url.query)
        self.requests.append(f"{method} {path}")
        if path == "/version":
            return 200, "application/json", json.dumps({"ApiVersion": "1.45"}).encode()
        if path == "/_ping":
            return self.ping_status, "text/plain", b"OK" if self.ping_status == 200 else b"boom"
        if path == "/containers/json":
            wanted = json.loads(query.get("filters", ["{}"])[0]).get("label", [])
            listed = [
                {"Id": c.id, "Names": [f"/{c.name}"], "Labels": dict(c.labels)}
                for c in self.containers
                if set(wanted) <= {f"{k}={v}" for k, v in c.labels.items()}
            ]
            return 200, "application/json", json.dumps(listed).encode()
        found = re.fullmatch(r"/containers/([^/]+)/(json|logs)", path)
        container = next((c for c in self.containers if found and c.id == found[1]), None)
        if container is None:
            return 404, "application/json", b'{"message": "no such container"}'
        if found and found[2] == "json":
            return 200, "application/json", json.dumps(container.inspect()).encode()
        tail = int(query.get("tail", ["0"])[0] or 0)
        lines = container.log.splitlines(keepends=True)
        text = b"".join(lines[-tail:] if tail else lines)
        # Without a TTY, logs are frames: stream (2 = stderr), 3 zero bytes, big-endian length.
        return 200, "application/vnd.docker.raw-stream", struct.pack(">BxxxL", 2, len(text)) + text


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    engine: FakeEngine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UnixHTTPServer

    def do_GET(self) -> None:
        status, content_type, body = self.server.engine.answer("GET", self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on ``engine.requests`` instead."""


@contextmanager
def serve_engine(path: Path, engine: FakeEngine) -> Iterator[FakeEngine]:
    """Serve ``engine`` on the unix socket ``path`` until the block ends."""
    server = _UnixHTTPServer(str(path), _Handler)
    server.engine = engine
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


CLI = """\
import json, os, sys
args = sys.argv[1:]
scenario = json.load(open(os.environ["FAKE_DOCKER_SCENARIO"]))
if args[:2] == ["compose", "version"]:
    print("Docker Compose version v2.29.0")
    sys.exit(0)
# docker compose -f FILE ... -p PROJECT SUBCOMMAND ...
sub = args[args.index("-p") + 2:]
names = ("APISIX_ADMIN_KEY", "APISIX_ADMIN_ALLOW", "KAFKAUPSTREAM_IMAGE", "STACK_PUBLISH_IP",
         "STACK_KAFKA_HOST", "STACK_KAFKA_PORT", "STACK_SUBNET", "STACK_GATEWAY_PORT")
with open(os.environ["FAKE_DOCKER_CALLS"], "a") as calls:
    calls.write(json.dumps({"sub": sub, "env": {n: os.environ.get(n) for n in names}}) + "\\n")
if sub[0] == "up":
    ups = [json.loads(line) for line in open(os.environ["FAKE_DOCKER_CALLS"])]
    outcome = scenario["up"][sum(1 for c in ups if c["sub"][0] == "up") - 1]
    print(outcome["output"])
    sys.exit(outcome["code"])
if sub[0] == "port":
    print(scenario["ports"][sub[1] + ":" + sub[2]])
sys.exit(0)
"""


def install_fake_cli(directory: Path, scenario: Mapping[str, Any]) -> dict[str, str]:
    """Write the fake ``docker`` into ``directory``; the environment variables that select it."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"#!{sys.executable}\n{CLI}")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    (directory / "scenario.json").write_text(json.dumps(scenario))
    return {
        "PATH": str(bin_dir),
        "FAKE_DOCKER_SCENARIO": str(directory / "scenario.json"),
        "FAKE_DOCKER_CALLS": str(directory / "calls.jsonl"),
    }


def recorded_calls(environment: Mapping[str, str]) -> list[dict[str, Any]]:
    """What the fake CLI was asked, in order: ``{"sub": [...], "env": {...}}`` each."""
    path = Path(environment["FAKE_DOCKER_CALLS"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
