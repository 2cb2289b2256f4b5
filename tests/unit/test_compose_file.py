"""examples/docker-compose.yml, read as docker compose reads it (no engine needed)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.docker_stack import COMPOSE_FILE, ETCD_IMAGE, KAFKA_IMAGE, MAX_MESSAGE_BYTES

CONFIG_YAML = COMPOSE_FILE.parent / "apisix" / "config.yaml"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}; defaults may nest.
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation, for the forms the file uses."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if operator in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if operator and operator.endswith("?"):
            raise KeyError(f"{name}: {argument}")
        return interpolate(argument, env) if operator else ""

    parts = value.split("$$")
    return "$".join(VARIABLE.sub(one, part) for part in parts)


def resolved(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolved(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolved(value, env) for key, value in node.items()}
    return node


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    result = resolved(raw, {"APISIX_ADMIN_KEY": "k0", **(env or {})})
    assert isinstance(result, dict)
    return result


def test_the_stack_has_its_four_services_in_dependency_order() -> None:
    services = compose()["services"]
    assert set(services) == {"etcd", "kafka", "kafka-init", "apisix"}
    assert services["kafka-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["apisix"]["depends_on"] == {
        "etcd": {"condition": "service_healthy"},
        "kafka-init": {"condition": "service_completed_successfully"},
    }
    for name in ("etcd", "kafka"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"


def test_the_pinned_images_agree_with_the_harness() -> None:
    services = compose()["services"]
    assert services["etcd"]["image"] == ETCD_IMAGE
    assert services["kafka"]["image"] == services["kafka-init"]["image"] == KAFKA_IMAGE
    assert services["apisix"]["image"] == "kafkaupstream:local"
    assert services["apisix"]["build"] == {"context": "..", "dockerfile": "Dockerfile"}


def test_defaults_publish_the_documented_ports_on_loopback_only() -> None:
    services = compose()["services"]
    assert services["apisix"]["ports"] == [
        "127.0.0.1:9080:9080",
        "127.0.0.1:9100:9100",
        "127.0.0.1:9180:9180",
    ]
    assert services["kafka"]["ports"] == ["127.0.0.1:29092:29092"]
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert listeners == "INTERNAL://kafka:9092,EXTERNAL://localhost:29092"


def test_the_admin_api_admits_the_stacks_own_subnet_by_default() -> None:
    stack = compose()
    subnet = stack["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert subnet == "10.231.0.0/24"
    assert stack["services"]["apisix"]["environment"]["APISIX_ADMIN_ALLOW"] == subnet
    moved = compose({"STACK_SUBNET": "10.231.7.0/24"})
    assert moved["services"]["apisix"]["environment"]["APISIX_ADMIN_ALLOW"] == "10.231.7.0/24"
    narrowed = compose({"STACK_SUBNET": "10.231.7.0/24", "APISIX_ADMIN_ALLOW": "192.0.2.4/32"})
    assert narrowed["services"]["apisix"]["environment"]["APISIX_ADMIN_ALLOW"] == "192.0.2.4/32"


def test_what_the_e2e_suite_sets_moves_ports_and_the_advertised_kafka_address() -> None:
    services = compose(
        {
            "STACK_PUBLISH_IP": "0.0.0.0",
            "STACK_GATEWAY_PORT": "",
            "STACK_ADMIN_PORT": "",
            "STACK_METRICS_PORT": "",
            "STACK_KAFKA_HOST": "192.0.2.9",
            "STACK_KAFKA_PORT": "41000",
            "KAFKAUPSTREAM_IMAGE": "kafkaupstream:e2e",
        }
    )["services"]
    # An empty host port is any free one (read back with `docker compose port`).
    assert services["apisix"]["ports"] == ["0.0.0.0::9080", "0.0.0.0::9100", "0.0.0.0::9180"]
    assert services["kafka"]["ports"] == ["0.0.0.0:41000:29092"]
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert listeners == "INTERNAL://kafka:9092,EXTERNAL://192.0.2.9:41000"
    assert services["apisix"]["image"] == "kafkaupstream:e2e"


def test_the_admin_key_has_no_default() -> None:
    with pytest.raises(KeyError, match="APISIX_ADMIN_KEY"):
        resolved(yaml.safe_load(COMPOSE_FILE.read_text()), {})


def test_kafka_takes_the_records_the_e2e_suite_sends() -> None:
    environment = compose()["services"]["kafka"]["environment"]
    assert int(environment["KAFKA_MESSAGE_MAX_BYTES"]) == MAX_MESSAGE_BYTES
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_every_runner_variable_the_stack_sets_reaches_the_runner() -> None:
    envs = yaml.safe_load(CONFIG_YAML.read_text())["nginx_config"]["envs"]
    apisix = compose()["services"]["apisix"]["environment"]
    assert {name for name in apisix if name.startswith("KAFKAUPSTREAM_")} <= set(envs)
    assert "KAFKAUPSTREAM_WORKERS" in envs


# -- the kafka-init job's script, run by /bin/sh as the container runs it --------------------


def run_init_script(tmp_path: Path, fail_on: str | None) -> tuple[int, list[str]]:
    """Run kafka-init's command with a fake kafka-topics.sh first on PATH; (status, calls)."""
    service = compose()["services"]["kafka-init"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "kafka-topics.sh"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        f'case "$*" in *"--topic {fail_on} "*) '
        'echo "Error while executing topic command" >&2; exit 1;; esac\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, timeout=30)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, lines


def test_the_init_job_creates_both_example_topics(tmp_path: Path) -> None:
    status, calls = run_init_script(tmp_path, fail_on=None)
    assert status == 0
    assert re.findall(r"--topic (\S+)", "\n".join(calls)) == ["kafkaupstream", "kafkaupstream2"]
    assert all("--partitions 3" in call and "--if-not-exists" in call for call in calls)


@pytest.mark.parametrize("topic", ["kafkaupstream", "kafkaupstream2"])
def test_the_init_job_fails_when_a_create_fails(tmp_path: Path, topic: str) -> None:
    status, calls = run_init_script(tmp_path, fail_on=topic)
    assert status != 0
    # set -e: nothing runs after the failed create.
    assert f"--topic {topic} " in calls[-1]


def test_the_image_build_context_leaves_out_the_harness_and_the_tests() -> None:
    ignored = set((COMPOSE_FILE.parents[1] / ".dockerignore").read_text().split())
    assert {"harness", "tests"} <= ignored
    assert "!examples/apisix/config.yaml" in ignored


def test_the_standalone_routes_carry_the_admin_api_routes_confs() -> None:
    standalone = {
        r["id"]: r
        for r in yaml.safe_load((COMPOSE_FILE.parent / "apisix.yaml").read_text())["routes"]
    }
    for name in ("open-route.json", "authenticated-route.json"):
        route = json.loads((COMPOSE_FILE.parent / "routes" / name).read_text())
        (phase,) = [p for p in route["plugins"] if p.startswith("ext-plugin")]
        conf = json.loads(route["plugins"][phase]["conf"][0]["value"])
        twin = json.loads(standalone[route["id"]]["plugins"][phase]["conf"][0]["value"])
        # Only the broker differs: kafka:9092 in compose, 127.0.0.1:9092 beside the demo.
        assert {**twin, "config": {**twin["config"], "bootstrap.servers": "kafka:9092"}} == conf
