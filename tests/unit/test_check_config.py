"""``kafkaupstream check-config``: exit codes, effective settings, redaction, input forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kafkaupstream.cli import main

SECRET = "p4ss-w0rd-XYZ"
VALUE = json.dumps(
    {
        "config": {
            "bootstrap.servers": "kafka:9092",
            "sasl": {"username": "alice", "password": SECRET},
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
        },
        "Topic": "events",
        "jsonkey": "user.id",
        "headerprefix": "X-Kafka-",
    }
)


def test_valid_config_prints_effective_settings_with_secrets_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", VALUE]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    report = json.loads(out)
    effective = report["effective"]
    assert report["valid"] is True
    assert effective["config"]["sasl.password"] == "***"
    assert effective["config"]["sasl.username"] == "alice"
    assert effective["topic"] == "events"
    assert effective["headers"]["topic"] == "x-kafka-topic"
    assert effective["delivery"] == "sync"
    assert effective["partition"] == -1


def test_invalid_config_exits_1_naming_the_field_without_the_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = json.dumps({"config": {"bootstrap.servers": "k:9092", "acks": SECRET}, "topic": "t"})
    assert main(["check-config", bad]) == 1
    captured = capsys.readouterr()
    assert "config.acks" in captured.err
    assert SECRET not in captured.err + captured.out


def test_a_whole_admin_api_route_file_is_checked_entry_by_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    route = {
        "uri": "/k",
        "plugins": {
            "key-auth": {},
            "ext-plugin-post-req": {
                "conf": [{"name": "other", "value": "x"}, {"name": "kafkaupstream", "value": VALUE}]
            },
        },
    }
    path = tmp_path / "route.json"
    path.write_text(json.dumps(route))
    assert main(["check-config", f"@{path}"]) == 0
    assert json.loads(capsys.readouterr().out)["where"] == "plugins.ext-plugin-post-req.conf[1]"


def test_a_conf_value_that_is_an_object_is_refused_like_apisix_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = json.dumps({"name": "kafkaupstream", "value": json.loads(VALUE)})
    assert main(["check-config", entry]) == 1
    assert "must be a string" in capsys.readouterr().err


def test_route_without_a_kafkaupstream_entry_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", json.dumps({"uri": "/x", "plugins": {}})]) == 1
    assert "no kafkaupstream configuration" in capsys.readouterr().err


def test_connect_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    value = json.dumps({"config": {"bootstrap.servers": "127.0.0.1:1"}, "topic": "t"})
    assert main(["check-config", "--connect", "--timeout", "0.5", value]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["reachable"] is False
    assert report["connect_error"]


@pytest.mark.parametrize("connect", [False, True])
def test_user_info_in_bootstrap_servers_is_redacted_in_both_outputs(
    connect: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    servers = f"user:{SECRET}@127.0.0.1:1,SASL_SSL://bob:{SECRET}@kafka:9093"
    value = json.dumps({"config": {"bootstrap.servers": servers}, "topic": "t"})
    options = ["--connect", "--timeout", "0.5"] if connect else []
    assert main(["check-config", *options, value]) == (1 if connect else 0)
    captured = capfd.readouterr()  # librdkafka writes to the file descriptors itself
    report = json.loads(captured.out)
    assert report["effective"]["config"]["bootstrap.servers"] == "127.0.0.1:1,SASL_SSL://kafka:9093"
    assert SECRET not in captured.out + captured.err
    assert "user:" not in captured.out + captured.err


def test_standard_input_is_read_with_a_dash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kafkaupstream", "check-config", "-"],
        input=VALUE,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["effective"]["jsonkey"] == "user.id"


def test_check_config_validates_the_schema_and_prints_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}}
    value = json.dumps({"config": {"bootstrap.servers": "k:9092"}, "topic": "t", "schema": schema})
    assert main(["check-config", value]) == 0
    effective = json.loads(capsys.readouterr().out)["effective"]
    assert effective["schema"] == schema
    assert effective["schema_draft"] == "2020-12"
    assert effective["schema_checks_per_value"] == 1
    remote = json.dumps(
        {"config": {"bootstrap.servers": "k:9092"}, "topic": "t", "schema": {"$ref": "http://x/"}}
    )
    assert main(["check-config", remote]) == 1
    assert "value: schema: a $ref" in capsys.readouterr().err


@pytest.mark.parametrize(
    "route", sorted((Path(__file__).resolve().parents[2] / "examples" / "routes").glob("*.json"))
)
def test_every_example_route_passes_check_config(
    route: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", f"@{route}"]) == 0, capsys.readouterr()
