"""examples/docker-compose.yml run for the e2e tests: the stack the README tells users to run.

:class:`DockerStack` starts the compose file through pytest-docker (``get_docker_services``: the
same ``docker compose up``/``down`` its ``docker_services`` fixture runs) and changes only what the
file's own variables set: free host ports, the address Kafka advertises to the test process, a
subnet of its own, the image and the Admin API key. The Docker SDK builds the image (the classic
builder: the Dockerfile avoids BuildKit-only syntax), reads the containers' logs when a start
fails, and gives the tests the containers for fault injection. Set ``KAFKAUPSTREAM_E2E_IMAGE`` to
use an image built elsewhere (e.g. by ``docker buildx`` in CI) instead of building one.

Where the test process reaches published ports: ``KAFKAUPSTREAM_E2E_HOST`` when set (a CI job in a
container sharing the host's engine: the host's address as the job sees it), else the host of a
``tcp://``/``ssh://`` ``DOCKER_HOST``, else 127.0.0.1. Off loopback the ports are published on
0.0.0.0 and the Admin API admits only this process's own address (``APISIX_ADMIN_ALLOW``
overrides it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from docker.errors import APIError, DockerException, ImageNotFound
from pytest_docker.plugin import DockerComposeExecutor, Services, get_docker_services

from harness import consume
from harness.broker import free_port

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "examples" / "docker-compose.yml"
LABEL = "kafkaupstream.e2e"
IMAGE_TAG = "kafkaupstream:e2e"
# The images examples/docker-compose.yml pins (a unit test checks they agree).
KAFKA_IMAGE = "apache/kafka:3.9.1"
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
#: The compose Kafka's message.max.bytes: bodies up to this size reach it.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
#: What pytest-docker runs to start and to remove the stack (its docker_setup/docker_cleanup).
UP = "up --detach --wait --wait-timeout 300 --no-build"
DOWN = "down --volumes --remove-orphans --timeout 5"
#: docker compose's words when a start lost a race for a host port or an address range.
CLASHES = ("port is already allocated", "address already in use", "Pool overlaps")


class StackError(RuntimeError):
    """The stack could not be built or started; the message carries the logs that say why."""


# -- the engine --------------------------------------------------------------------------------


def engine_unavailable_reason(timeout: float = 5.0) -> str | None:
    """None when a Docker engine answers a ping, else a sentence saying what failed.

    Only a failure to reach anything is "no engine"; an engine answering with an error, or the
    client failing before it sent a byte (docker 7.0.0 with requests >= 2.32 raised "Not
    supported URL scheme http+docker"), is reported as what it is.
    """
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return describe_engine_failure(exc, where)
    return None


def describe_engine_failure(exc: BaseException, where: str) -> str:
    """The skip reason for ``exc`` raised by ``docker.from_env().ping()`` against ``where``."""
    if any(isinstance(e, APIError) for e in _chain(exc)):
        return f"the Docker engine at {where} answered with an error: {exc}"
    if any(_is_unreachable(e) for e in _chain(exc)):
        return f"no Docker engine answered at {where} ({exc})"
    versions = f"docker {docker.__version__}, requests {requests.__version__}"
    return (
        f"the Docker client failed before reaching an engine at {where} ({versions}): "
        f"{type(exc).__name__}: {exc}; this is a client or DOCKER_HOST problem, not a missing "
        "engine"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.Timeout
        | ConnectionError
        | TimeoutError
        | FileNotFoundError,
    )


def compose_unavailable_reason(command: str = "docker compose") -> str | None:
    """None when ``docker compose version`` works (pytest-docker shells out to it)."""
    try:
        subprocess.run(
            f"{command} version", shell=True, check=True, capture_output=True, timeout=30
        )
    except (subprocess.SubprocessError, OSError) as exc:
        output = getattr(exc, "output", b"") or b""
        return (
            f"`{command} version` failed ({exc}; {output.decode(errors='replace').strip()}): "
            "the e2e tests need the docker CLI with its compose plugin"
        )
    return None


# -- where the stack is published ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the stack's ports are published and how the test process reaches them."""

    #: The address the test process uses for published ports (also what Kafka advertises).
    host: str
    #: The host IP the ports are published on.
    publish_ip: str
    #: APISIX_ADMIN_ALLOW for the stack; None keeps the compose file's (its own subnet).
    admin_allow: str | None


def placement(environ: Mapping[str, str] | None = None, host: str | None = None) -> Placement:
    """The placement the environment asks for (see the module docstring); ``host``, when given,
    is the address published ports are reached at (pytest-docker's ``docker_ip``)."""
    env = os.environ if environ is None else environ
    url = urllib.parse.urlparse(env.get("DOCKER_HOST", ""))
    remote = url.hostname if url.scheme in ("tcp", "ssh", "http", "https") else None
    host = host or env.get("KAFKAUPSTREAM_E2E_HOST", "").strip() or remote
    if not host or host in ("127.0.0.1", "localhost"):
        return Placement("127.0.0.1", "127.0.0.1", env.get("APISIX_ADMIN_ALLOW"))
    allow = env.get("APISIX_ADMIN_ALLOW") or f"{source_address(host)}/32"
    return Placement(host, "0.0.0.0", allow)


def source_address(host: str) -> str:
    """The local address this process sends from toward ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise StackError(
            f"cannot route to {host} ({exc}): set KAFKAUPSTREAM_E2E_HOST to the engine host's "
            "address, or APISIX_ADMIN_ALLOW to the address APISIX sees this process at"
        ) from None


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the test process reaches the stack."""

    gateway_url: str
    admin_url: str
    admin_key: str
    #: Kafka as the test process sees it (host:port of the published listener).
    kafka_bootstrap: str
    #: Kafka as the runner inside APISIX sees it (what route configs name).
    kafka_internal: str = "kafka:9092"


# -- the image ---------------------------------------------------------------------------------


def build_image(client: Any, tag: str = IMAGE_TAG) -> str:
    """``KAFKAUPSTREAM_E2E_IMAGE`` (pulled if missing), else the repository's Dockerfile built
    as ``tag`` with the SDK; the image's name. StackError with the build's tail on failure."""
    prebuilt = os.environ.get("KAFKAUPSTREAM_E2E_IMAGE")
    if prebuilt:
        try:
            client.images.get(prebuilt)
        except ImageNotFound:
            client.images.pull(prebuilt)
        return prebuilt
    log.info("event=e2e_build context=%s tag=%s", REPO_ROOT, tag)
    output: list[str] = []
    started = time.monotonic()
    for chunk in client.api.build(
        path=str(REPO_ROOT),
        dockerfile="Dockerfile",
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        labels={LABEL: "image"},
    ):
        if "stream" in chunk:
            output.append(chunk["stream"])
        if "error" in chunk:
            tail = "".join(output[-40:])
            raise StackError(f"docker build failed: {chunk['error']}\n{tail}")
    log.info("event=e2e_built tag=%s seconds=%.1f", tag, time.monotonic() - started)
    return tag


# -- the stack ---------------------------------------------------------------------------------


class DockerStack:
    """examples/docker-compose.yml as one compose project, for one test session."""

    def __init__(
        self,
        *,
        project: str,
        image: str,
        where: Placement,
        compose_command: str = "docker compose",
        compose_file: str | list[str] = str(COMPOSE_FILE),
        setup: Sequence[str] = (UP,),
        cleanup: Sequence[str] = (DOWN,),
        attempts: int = 3,
        start_timeout: float = 120.0,
        kafka_port: Callable[[], int] = free_port,
    ) -> None:
        self.project = project
        self.image = image
        self.where = where
        self._command = compose_command
        self._files = compose_file
        self._setup = list(setup)
        self._cleanup = list(cleanup)
        self.attempts = attempts
        self.start_timeout = start_timeout
        self._kafka_port = kafka_port
        self._saved: dict[str, str | None] = {}
        # A letter first: APISIX turns a substituted value that looks like a number into one.
        self.admin_key = f"e2e{secrets.token_hex(20)}"
        self._started: contextlib.ExitStack | None = None
        self._client: Any = None
        self._http = requests.Session()
        self.services: Services | None = None
        self.endpoints: Endpoints | None = None

    def __enter__(self) -> DockerStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DockerStack:
        """``docker compose up --wait`` (retried on a port or subnet clash), then the endpoints,
        read once every service is healthy, and a wait for the Admin API and Kafka."""
        self._client = docker.from_env(timeout=60)
        try:
            for attempt in range(1, self.attempts + 1):
                kafka_port = self._kafka_port()
                self._set_environment(kafka_port)
                started = contextlib.ExitStack()
                try:
                    self.services = started.enter_context(
                        get_docker_services(
                            self._command, self._files, self.project, self._setup, self._cleanup
                        )
                    )
                except Exception as exc:
                    output = str(exc)
                    report = self.failure_report()
                    self._compose_down()
                    if attempt < self.attempts and any(c in output for c in CLASHES):
                        log.warning("event=e2e_start_clash attempt=%d output=%r", attempt, output)
                        continue
                    raise StackError(f"docker compose up failed: {output}\n{report}") from None
                self._started = started
                break
            self.endpoints = self._endpoints(kafka_port)
            self._wait_until_usable()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """``docker compose down`` (pytest-docker's cleanup) and the environment restored."""
        if self._started is not None:
            with contextlib.suppress(Exception):
                self._started.close()
            self._started = None
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._http.close()
        self.services = None
        self.endpoints = None

    def _set_environment(self, kafka_port: int) -> None:
        """The compose file's variables for this attempt, in this process's environment: every
        compose command pytest-docker runs inherits it (``stop`` restores it)."""
        values = {
            "APISIX_ADMIN_KEY": self.admin_key,
            "KAFKAUPSTREAM_IMAGE": self.image,
            "STACK_PUBLISH_IP": self.where.publish_ip,
            # Empty: any free host port, read back with `docker compose port`.
            "STACK_GATEWAY_PORT": "",
            "STACK_ADMIN_PORT": "",
            "STACK_METRICS_PORT": "",
            # Kafka must advertise the published port, so that one is chosen here.
            "STACK_KAFKA_HOST": self.where.host,
            "STACK_KAFKA_PORT": str(kafka_port),
            # Not the file's default: the user's own stack may be up on this engine.
            "STACK_SUBNET": f"10.231.{random.randint(1, 254)}.0/24",
        }
        if self.where.admin_allow:
            values["APISIX_ADMIN_ALLOW"] = self.where.admin_allow
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _compose_down(self) -> None:
        """pytest-docker's cleanup commands, which it skips when its setup failed."""
        executor = DockerComposeExecutor(self._command, self._files, self.project)
        for subcommand in self._cleanup:
            with contextlib.suppress(Exception):
                executor.execute(subcommand)

    def _endpoints(self, kafka_port: int) -> Endpoints:
        assert self.services is not None
        host = self.where.host
        gateway = self.services.port_for("apisix", 9080)
        admin = self.services.port_for("apisix", 9180)
        return Endpoints(
            gateway_url=f"http://{host}:{gateway}",
            admin_url=f"http://{host}:{admin}/apisix/admin",
            admin_key=self.admin_key,
            kafka_bootstrap=f"{host}:{kafka_port}",
        )

    def _wait_until_usable(self) -> None:
        endpoints = self.ready
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                response = self._http.get(
                    f"{endpoints.admin_url}/routes",
                    headers={"X-API-KEY": endpoints.admin_key},
                    timeout=5,
                )
            except requests.RequestException as exc:
                last = str(exc)
            else:
                if response.status_code == 200:
                    break
                if response.status_code == 403:
                    raise StackError(
                        f"the Admin API at {endpoints.admin_url} refused this process's address "
                        f"({response.text.strip()}): set APISIX_ADMIN_ALLOW to the address "
                        "APISIX sees it at"
                    )
                last = f"{response.status_code} {response.text.strip()}"
            time.sleep(0.5)
        else:
            raise StackError(
                f"the Admin API at {endpoints.admin_url} did not answer in "
                f"{self.start_timeout:.0f} s ({last})\n{self.logs()}"
            )
        try:
            AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap}).list_topics(timeout=30)
        except KafkaException as exc:
            raise StackError(
                f"Kafka's published listener {endpoints.kafka_bootstrap} does not answer ({exc}): "
                "set KAFKAUPSTREAM_E2E_HOST to the engine host's address as this process sees it"
            ) from None

    # -- what a failed start leaves ----------------------------------------------------------

    def containers(self) -> list[Any]:
        """The project's containers (every state), through the SDK."""
        return list(
            self._client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={self.project}"}
            )
        )

    def container(self, service: str) -> Any:
        """One service's container, for fault injection (``pause()``, ``kill()``, ...)."""
        for candidate in self.containers():
            if candidate.labels.get("com.docker.compose.service") == service:
                return candidate
        raise StackError(f"no {service} container in project {self.project}")

    def failure_report(self, lines: int = 60) -> str:
        """Each container's state, and the log tail of those that exited or are unhealthy."""
        try:
            containers = self.containers()
        except DockerException as exc:
            return f"(could not list the containers: {exc})"
        report = []
        for container in containers:
            state = container.attrs.get("State", {})
            health = (state.get("Health") or {}).get("Status")
            service = container.labels.get("com.docker.compose.service", container.name)
            failed = (state.get("Status") == "exited" and state.get("ExitCode")) or (
                health == "unhealthy"
            )
            summary = f"{service}: {state.get('Status')} (exit code {state.get('ExitCode')}"
            summary += f", {health})" if health else ")"
            report.append(summary)
            if failed:
                report.append(f"--- last {lines} lines of {service} ---\n{_tail(container, lines)}")
        return "\n".join(report) or f"(no containers in project {self.project})"

    # -- what the tests use --------------------------------------------------------------------

    @property
    def ready(self) -> Endpoints:
        if self.endpoints is None:
            raise StackError("the stack is not started")
        return self.endpoints

    def logs(self, service: str = "apisix", lines: int = 80) -> str:
        """The last ``lines`` of a service's output (APISIX's error.log holds the runner's)."""
        try:
            return _tail(self.container(service), lines)
        except (StackError, DockerException) as exc:
            return f"(no {service} logs: {exc})"

    def admin(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One Admin API call (``path`` below /apisix/admin); the decoded answer, or StackError."""
        endpoints = self.ready
        response = self._http.request(
            method,
            f"{endpoints.admin_url}/{path.lstrip('/')}",
            headers={"X-API-KEY": endpoints.admin_key},
            data=None if body is None else json.dumps(body),
            timeout=10,
        )
        if response.status_code >= 300:
            raise StackError(f"Admin API {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def request(
        self,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> requests.Response:
        """One request through APISIX's port 9080."""
        return self._http.request(
            method,
            f"{self.ready.gateway_url}{path}",
            data=body,
            headers=dict(headers or {}),
            timeout=70,
        )

    def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create topics (name -> partitions) on the stack's broker and wait until they exist."""
        admin = AdminClient({"bootstrap.servers": self.ready.kafka_bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
            operation_timeout=10,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=15)
            except KafkaException as exc:
                raise StackError(f"could not create topic {name}: {exc}") from exc

    def read_records(
        self, topic: str, *, expected: int | None = None, timeout: float = 15.0
    ) -> list[consume.ConsumedRecord]:
        """Every record of ``topic`` (see :func:`harness.consume.read_records`)."""
        return consume.read_records(
            self.ready.kafka_bootstrap, topic, expected=expected, timeout=timeout
        )

    def record_count(self, topic: str) -> int:
        """How many records ``topic`` holds, from its watermarks (exact on a real Kafka)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.ready.kafka_bootstrap,
                "group.id": f"ku-e2e-count-{secrets.token_hex(4)}",
                "enable.auto.commit": False,
            }
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                raise StackError(f"topic {topic}: {metadata.error}")
            total = 0
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                total += high - low
            return total
        finally:
            consumer.close()


def _tail(container: Any, lines: int) -> str:
    with contextlib.suppress(DockerException):
        return str(container.logs(tail=lines).decode("utf-8", "replace"))
    return "(no logs)"
