"""Real APISIX + Kafka + etcd in Docker, driven by the Docker SDK, for the e2e tests.

:class:`DockerStack` builds the image from the repository's Dockerfile (or uses a prebuilt one),
starts etcd, a single-node KRaft Kafka and APISIX with our runner on a private network, and tears
everything down again. The runner inside reaches Kafka as ``kafka:9092`` (the examples' bootstrap
address); the test process reaches it through a published port. Every container, the network and
the image carry the label ``kafkaupstream.e2e`` so leftovers are easy to find::

    docker ps -a --filter label=kafkaupstream.e2e

The Docker SDK drives the classic builder (it has no BuildKit session), which is why the
Dockerfile avoids BuildKit-only syntax. Set ``KAFKAUPSTREAM_E2E_IMAGE`` to skip the build and use
an image built elsewhere (e.g. by ``docker buildx`` in CI).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import docker
import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from docker.errors import DockerException, ImageNotFound

from harness import consume
from harness.broker import free_port

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LABEL = "kafkaupstream.e2e"
IMAGE_TAG = "kafkaupstream:e2e"
# Same pins as examples/docker-compose.yml.
KAFKA_IMAGE = "apache/kafka:3.9.1"
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
#: Bodies up to this size must reach Kafka (the e2e tests send a few MiB through ExtraInfo).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

T = TypeVar("T")


class StackError(RuntimeError):
    """The stack could not be built or started; the message carries the logs that say why."""


def engine_unavailable_reason(timeout: float = 5.0) -> str | None:
    """None when a Docker engine answers a ping, else a sentence saying what failed."""
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (DockerException, requests.RequestException, OSError) as exc:
        return f"no Docker engine answered at {where} (docker.from_env().ping() failed: {exc})"
    return None


def _engine_host() -> tuple[str, str]:
    """(address the test process uses for published ports, host IP to publish them on)."""
    url = urllib.parse.urlparse(os.environ.get("DOCKER_HOST", ""))
    if url.scheme in ("tcp", "ssh", "http", "https") and url.hostname:
        return url.hostname, "0.0.0.0"
    # A local engine (unix socket, Docker Desktop): publish on loopback only.
    return "127.0.0.1", "127.0.0.1"


def _wait(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than None; StackError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result is not None:
                return result
        except StackError:
            raise
        except Exception as exc:  # a probe failing is what waiting is for; keep the last one
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise StackError(f"{what}: not ready after {timeout:.0f} s{detail}")
        time.sleep(interval)


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


class DockerStack:
    """etcd + KRaft Kafka + APISIX with our image, on one private network."""

    def __init__(
        self,
        *,
        image: str | None = None,
        build_timeout: float = 900.0,
        start_timeout: float = 180.0,
    ) -> None:
        self.prebuilt_image = image or os.environ.get("KAFKAUPSTREAM_E2E_IMAGE") or None
        self.build_timeout = build_timeout
        self.start_timeout = start_timeout
        self.session = f"{int(time.time())}-{secrets.token_hex(3)}"
        # A letter first: APISIX turns a substituted value that looks like a number into one.
        self.admin_key = f"e2e{secrets.token_hex(20)}"
        self._client: Any = None
        self._network: Any = None
        self._containers: dict[str, Any] = {}
        self._http = requests.Session()
        self.endpoints: Endpoints | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> DockerStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> DockerStack:
        """Build (or find) the image and bring up etcd, Kafka and APISIX; idempotent."""
        if self.endpoints is not None:
            return self
        # The build streams for minutes without a byte on some steps: a generous socket timeout.
        self._client = docker.from_env(timeout=max(self.build_timeout, 120.0))
        try:
            image = self._image()
            self._network = self._client.networks.create(
                f"ku-e2e-{self.session}", driver="bridge", labels={LABEL: self.session}
            )
            self._start_etcd()
            bootstrap = self._start_kafka()
            self.endpoints = self._start_apisix(image, bootstrap)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove every container and the network; safe to call twice."""
        for name, container in reversed(list(self._containers.items())):
            with contextlib.suppress(DockerException):
                container.remove(force=True, v=True)
            log.info("event=e2e_container_removed name=%s", name)
        self._containers.clear()
        if self._network is not None:
            with contextlib.suppress(DockerException):
                self._network.remove()
            self._network = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._http.close()
        self.endpoints = None

    # -- image ---------------------------------------------------------------------------------

    def _image(self) -> str:
        if self.prebuilt_image:
            try:
                self._client.images.get(self.prebuilt_image)
            except ImageNotFound:
                self._client.images.pull(self.prebuilt_image)
            return self.prebuilt_image
        log.info("event=e2e_build context=%s tag=%s", REPO_ROOT, IMAGE_TAG)
        output: list[str] = []
        started = time.monotonic()
        for chunk in self._client.api.build(
            path=str(REPO_ROOT),
            dockerfile="Dockerfile",
            tag=IMAGE_TAG,
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
        log.info("event=e2e_built tag=%s seconds=%.1f", IMAGE_TAG, time.monotonic() - started)
        return IMAGE_TAG

    # -- services ------------------------------------------------------------------------------

    def _run(self, name: str, image: str, **kwargs: Any) -> Any:
        network = self._network.name
        container = self._client.containers.run(
            image,
            name=f"ku-e2e-{name}-{self.session}",
            detach=True,
            labels={LABEL: self.session},
            network=network,
            # The short name ("etcd", "kafka", "apisix") is what the others resolve.
            networking_config={network: self._client.api.create_endpoint_config(aliases=[name])},
            **kwargs,
        )
        self._containers[name] = container
        return container

    def _start_etcd(self) -> None:
        etcd = self._run(
            "etcd",
            ETCD_IMAGE,
            command=[
                "etcd",
                "--name=etcd0",
                "--data-dir=/var/lib/etcd/data",
                "--listen-client-urls=http://0.0.0.0:2379",
                "--advertise-client-urls=http://etcd:2379",
            ],
        )

        def healthy() -> bool | None:
            code, _ = etcd.exec_run(
                ["etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"]
            )
            return True if code == 0 else None

        self._wait_for("etcd", healthy, etcd)

    def _start_kafka(self) -> str:
        host, bind_ip = _engine_host()
        port = free_port()
        kafka = self._run(
            "kafka",
            KAFKA_IMAGE,
            environment={
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_LISTENERS": "INTERNAL://:9092,EXTERNAL://:29092,CONTROLLER://:9093",
                # The published port must be advertised as the test process reaches it.
                "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://kafka:9092,EXTERNAL://{host}:{port}",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
                    "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
                ),
                "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
                # Tests create their topics: a typo must fail, not create a topic.
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
                "KAFKA_MESSAGE_MAX_BYTES": str(MAX_MESSAGE_BYTES),
                "KAFKA_HEAP_OPTS": "-Xmx512m -Xms512m",
            },
            ports={"29092/tcp": (bind_ip, port)},
        )
        bootstrap = f"{host}:{port}"

        def answers() -> bool | None:
            # log_level 0: connection refused is expected while the broker starts.
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            admin.list_topics(timeout=2)
            return True

        self._wait_for("kafka", answers, kafka)
        return bootstrap

    def _start_apisix(self, image: str, bootstrap: str) -> Endpoints:
        host, bind_ip = _engine_host()
        apisix = self._run(
            "apisix",
            image,
            environment={
                "APISIX_ADMIN_KEY": self.admin_key,
                # This stack lives for one test session, is published on loopback only and has
                # a random key; the address the Admin API sees for the test process differs
                # between engines (bridge gateway, Docker Desktop's VM, rootless port drivers).
                "APISIX_ADMIN_ALLOW": "0.0.0.0/0",
                "APISIX_ETCD_HOST": "http://etcd:2379",
                # Two workers: conf tokens must be shared between them through the shared dict.
                "APISIX_WORKER_PROCESSES": "2",
                "KAFKAUPSTREAM_LOG_LEVEL": "INFO",
            },
            ports={"9080/tcp": (bind_ip, None), "9180/tcp": (bind_ip, None)},
        )
        apisix.reload()
        ports = apisix.attrs["NetworkSettings"]["Ports"]
        endpoints = Endpoints(
            gateway_url=f"http://{host}:{ports['9080/tcp'][0]['HostPort']}",
            admin_url=f"http://{host}:{ports['9180/tcp'][0]['HostPort']}/apisix/admin",
            admin_key=self.admin_key,
            kafka_bootstrap=bootstrap,
        )
        # The image's own HEALTHCHECK: port 9080 and the runner's socket both accept.
        healthcheck = (self._client.images.get(image).attrs["Config"].get("Healthcheck") or {}).get(
            "Test"
        )
        if not healthcheck or healthcheck[0] != "CMD":
            raise StackError(f"{image} has no exec-form HEALTHCHECK (is it built from Dockerfile?)")

        def healthy() -> bool | None:
            code, _ = apisix.exec_run(healthcheck[1:])
            return True if code == 0 else None

        def admin_answers() -> bool | None:
            response = self._http.get(
                f"{endpoints.admin_url}/routes",
                headers={"X-API-KEY": self.admin_key},
                timeout=5,
            )
            return True if response.status_code == 200 else None

        self._wait_for("apisix (9080 and the runner socket)", healthy, apisix)
        self._wait_for("the APISIX Admin API", admin_answers, apisix)
        return endpoints

    def _wait_for(self, what: str, probe: Callable[[], bool | None], container: Any) -> None:
        def ready() -> bool | None:
            container.reload()
            if container.status in ("exited", "dead"):
                raise StackError(f"{what} exited:\n{self._tail(container)}")
            return probe()

        try:
            _wait(what, ready, self.start_timeout)
        except StackError as exc:
            if container.status in ("exited", "dead"):
                raise
            raise StackError(f"{exc}\n{self._tail(container)}") from None

    @staticmethod
    def _tail(container: Any, lines: int = 60) -> str:
        with contextlib.suppress(DockerException):
            return str(container.logs(tail=lines).decode("utf-8", "replace"))
        return "(no logs)"

    # -- what the tests use --------------------------------------------------------------------

    @property
    def ready(self) -> Endpoints:
        if self.endpoints is None:
            raise StackError("the stack is not started")
        return self.endpoints

    def logs(self, service: str = "apisix", lines: int = 80) -> str:
        """The last ``lines`` of a service's output (APISIX's error.log holds the runner's)."""
        container = self._containers.get(service)
        return self._tail(container, lines) if container is not None else f"(no {service})"

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
