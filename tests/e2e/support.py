"""What the e2e tests share: routes made through the Admin API, checks on the runner's answers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from harness.consume import ConsumedRecord
from harness.docker_stack import DockerStack

PRE_REQ = "ext-plugin-pre-req"
POST_REQ = "ext-plugin-post-req"
JSON = {"Content-Type": "application/json"}
#: How long a route or consumer may take to reach APISIX's workers through etcd.
SYNC_TIMEOUT = 30.0


def unique(prefix: str) -> str:
    """A name no other test uses (topics, route ids)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True, slots=True)
class E2ERoute:
    """One route on the real APISIX, answered by the runner."""

    stack: DockerStack
    id: str
    path: str
    conf: Mapping[str, Any]

    def post(
        self, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        return self.stack.request(self.path, body, headers)


def create_route(
    stack: DockerStack,
    conf: Mapping[str, Any],
    *,
    phase: str = PRE_REQ,
    key_auth: bool = False,
    ready: set[int] | None = None,
) -> E2ERoute:
    """PUT a route whose ext-plugin conf is ``conf`` (as the JSON string APISIX wants).

    ``config.bootstrap.servers`` defaults to the stack's Kafka. Returns once the route answers
    a probe whose body is not JSON with a status in ``ready``: by default the runner's 400 (or
    key-auth's 401).
    """
    conf = dict(conf)
    conf.setdefault("config", {"bootstrap.servers": stack.ready.kafka_internal})
    route_id = unique("r")
    plugins: dict[str, Any] = {
        phase: {"conf": [{"name": "kafkaupstream", "value": json.dumps(conf)}]},
    }
    if key_auth:
        plugins["key-auth"] = {}
    path = f"/e2e/{route_id}"
    stack.admin("PUT", f"routes/{route_id}", {"uri": path, "methods": ["POST"], "plugins": plugins})
    route = E2ERoute(stack, route_id, path, conf)
    wait_until_answered(route, ready or ({401} if key_auth else {400}))
    return route


def wait_until_answered(
    route: E2ERoute, statuses: set[int], headers: Mapping[str, str] | None = None
) -> requests.Response:
    """Probe ``route`` with a body that is not JSON until its status is one of ``statuses``.

    Before etcd's watch reaches the workers APISIX answers 404 (no such route) or 401 (no such
    consumer); before the runner listens, 503. The probe's body is refused before Kafka is used.
    """
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        response = route.post(b"{not json", {**JSON, **(headers or {})})
        if response.status_code in statuses:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{route.path} still answers {response.status_code} {response.text!r} after "
                f"{SYNC_TIMEOUT:.0f} s (wanted {sorted(statuses)})\n{route.stack.logs()}"
            )
        time.sleep(0.2)


def runner_answer(stack: DockerStack, response: requests.Response, status: int) -> dict[str, Any]:
    """The runner's JSON answer, after checking its status and ``Content-Type``."""
    context = f"{response.status_code} {response.headers} {response.text[:500]!r}"
    if response.status_code != status:
        raise AssertionError(f"wanted {status}, got {context}\n--- APISIX log ---\n{stack.logs()}")
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip() == "application/json", context
    answer = response.json()
    assert isinstance(answer, dict), context
    if status >= 400:
        assert set(answer) == {"error", "message"}, context
        assert isinstance(answer["message"], str) and answer["message"], context
    return answer


def error_code(stack: DockerStack, response: requests.Response, status: int) -> str:
    """The ``error`` code of the runner's error answer with ``status``."""
    return str(runner_answer(stack, response, status)["error"])


def produced(
    stack: DockerStack, topic: str, responses: list[requests.Response]
) -> list[ConsumedRecord]:
    """The record behind each 200 answer, in the same order, read back from Kafka."""
    answers = [runner_answer(stack, r, 200) for r in responses]
    for answer in answers:
        assert set(answer) == {"topic", "partition", "offset"}, answer
        assert answer["topic"] == topic, answer
    # A 200 means the record is in the log: the watermarks count it, and any record the topic
    # held before, so reading that many from the start finds every answer's record.
    records = stack.read_records(topic, expected=stack.record_count(topic))
    by_position = {(r.partition, r.offset): r for r in records}
    found = []
    for answer in answers:
        position = (answer["partition"], answer["offset"])
        assert position in by_position, f"no record at {position} in {topic}: {records}"
        found.append(by_position[position])
    return found


def produced_one(stack: DockerStack, topic: str, response: requests.Response) -> ConsumedRecord:
    return produced(stack, topic, [response])[0]
