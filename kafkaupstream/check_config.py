"""``kafkaupstream check-config``: validate a route configuration before APISIX ever sends it.

Accepts the conf ``value`` itself, a conf entry (``{"name": "kafkaupstream", "value": "..."}``)
or a whole Admin API route (every ``kafkaupstream`` entry of its ``ext-plugin-*`` plugins), as
text, ``@file`` or ``-`` for standard input. Prints the effective settings with secrets
redacted, exactly as the runner will use them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from confluent_kafka import KafkaException, Producer

from kafkaupstream.plugin.config import RouteConfig, RouteConfigError, describe, parse_route_config
from kafkaupstream.plugin.kafka_plugin import KafkaUpstreamPlugin

_EXT_PLUGINS = ("ext-plugin-pre-req", "ext-plugin-post-req", "ext-plugin-post-resp")


def read_argument(argument: str, stdin: TextIO = sys.stdin) -> str:
    """The text behind ``argument``: itself, ``@path`` or ``-`` (standard input)."""
    if argument == "-":
        return stdin.read()
    if argument.startswith("@"):
        with open(argument[1:], encoding="utf-8") as handle:
            return handle.read()
    return argument


def conf_values(text: str) -> Iterator[tuple[str, str]]:
    """(where, conf value) for each kafkaupstream configuration found in ``text``."""
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        yield "value", text  # let the route-config parser say what is wrong with it
        return
    if isinstance(parsed, dict) and isinstance(parsed.get("plugins"), dict):
        for plugin_name in _EXT_PLUGINS:
            for index, entry in enumerate(parsed["plugins"].get(plugin_name, {}).get("conf", [])):
                if isinstance(entry, dict) and entry.get("name") == KafkaUpstreamPlugin.name:
                    yield f"plugins.{plugin_name}.conf[{index}]", _entry_value(entry)
        return
    if isinstance(parsed, dict) and set(parsed) == {"name", "value"}:
        yield "value", _entry_value(parsed)
        return
    yield "value", text


def _entry_value(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    if not isinstance(value, str):
        # APISIX's schema refuses it too: the value must be a JSON *string*.
        raise RouteConfigError("value", "must be a string holding JSON, not a JSON object")
    return value


def reachable(config: RouteConfig, timeout: float) -> str | None:
    """None when a broker answers a metadata request in time; else librdkafka's error name."""
    settings: dict[str, Any] = dict(config.producer_config)
    settings["log_level"] = 0
    producer = Producer(settings)
    try:
        producer.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc.args[0].name())
    finally:
        producer.close()
    return None


def check(argument: str, *, connect: bool, timeout: float, out: TextIO, err: TextIO) -> int:
    """Exit code 0 when every configuration found is valid (and reachable with ``connect``)."""
    try:
        found = list(conf_values(read_argument(argument)))
    except (OSError, RouteConfigError) as exc:
        print(f"invalid: {exc}", file=err)
        return 1
    if not found:
        print("invalid: no kafkaupstream configuration in this route", file=err)
        return 1
    status = 0
    for where, value in found:
        try:
            config = parse_route_config(value)
        except RouteConfigError as exc:
            print(f"invalid: {where}: {exc.field}: {exc.reason}", file=err)
            status = 1
            continue
        report: dict[str, Any] = {"where": where, "valid": True, "effective": describe(config)}
        if connect:
            problem = reachable(config, timeout)
            report["reachable"] = problem is None
            if problem is not None:
                report["connect_error"] = problem
                status = 1
        print(json.dumps(report, indent=2, ensure_ascii=False), file=out)
    return status
