"""Ask librdkafka whether it accepts a producer config, without contacting any broker.

librdkafka checks every property name and value when a client is created, and it only connects
to the bootstrap servers afterwards, from its own threads. Creating a throw-away producer with the
bootstrap list removed therefore validates everything (names, values, TLS files) and opens no
connection; it costs a few milliseconds, once per route configuration.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Producer

from kafkaupstream.producers.config import ConfigKey, scrub

_LOG = logging.getLogger(__name__)
_BOOTSTRAP = frozenset({"bootstrap.servers", "metadata.broker.list"})
#: librdkafka names the canonical property in its errors; users often write the Java alias.
_ALIASES = {
    "request.required.acks": "acks",
    "queue.buffering.max.ms": "linger.ms",
    "message.send.max.retries": "retries",
    "compression.codec": "compression.type",
    "max.in.flight.requests.per.connection": "max.in.flight",
    "message.timeout.ms": "delivery.timeout.ms",
    "sasl.mechanisms": "sasl.mechanism",
    "metadata.broker.list": "bootstrap.servers",
}
_PROPERTY_PATTERNS = (
    re.compile(r'property:? "([^"]+)"'),
    re.compile(r"^Failed to create producer: ([A-Za-z0-9._-]+) failed"),
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why librdkafka refused a config: the property (if it said which) and a value-free reason."""

    property: str | None
    reason: str
    #: librdkafka's own text with secret values blanked; for the runner's log only.
    detail: str


def check_producer_config(config: ConfigKey) -> Refusal | None:
    """None when librdkafka accepts ``config``; otherwise what it refused."""
    settings: dict[str, Any] = {name: value for name, value in config if name not in _BOOTSTRAP}
    settings["logger"] = _LOG
    settings["log_level"] = 0  # "no bootstrap servers configured" is expected here
    try:
        probe = Producer(settings)
    except KafkaException as exc:
        return _refusal(exc.args[0].str(), config)
    except (TypeError, ValueError) as exc:
        return _refusal(str(exc), config)
    probe.close()
    return None


def _refusal(text: str, config: ConfigKey) -> Refusal:
    names = {name for name, _ in config}
    found = None
    for pattern in _PROPERTY_PATTERNS:
        match = pattern.search(text)
        if match:
            found = match.group(1)
            break
    if found is not None and found not in names and _ALIASES.get(found) in names:
        found = _ALIASES[found]
    if text.startswith("No such configuration property"):
        reason = "librdkafka has no such property"
    elif text.startswith("Invalid value"):
        reason = "librdkafka refused its value"
    else:
        reason = "librdkafka refused it (the runner's log says why)"
    return Refusal(found, reason, scrub(text, config))
