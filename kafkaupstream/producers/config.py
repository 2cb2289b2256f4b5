"""Producer configs as pool keys, and their redacted form for logs.

Two routes share a producer exactly when their configs mean the same thing to librdkafka, which
reads every property as text: so the key is the flattened config with values in librdkafka's
spelling (``True`` -> ``"true"``, ``5`` -> ``"5"``), sorted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

ConfigValue: TypeAlias = str | int | float | bool
#: A route's ``config``: librdkafka properties, optionally nested (``{"sasl": {"username": ..}}``).
ProducerConfig: TypeAlias = Mapping[str, "ConfigValue | ProducerConfig"]
#: The canonical, hashable form: sorted (property, text value) pairs.
ConfigKey: TypeAlias = tuple[tuple[str, str], ...]

#: confluent-kafka takes Python callables under these names; a route must never set them.
_RESERVED = frozenset(
    {
        "logger",
        "error_cb",
        "stats_cb",
        "throttle_cb",
        "oauth_cb",
        "on_delivery",
        "on_commit",
        "dr_cb",
        "dr_msg_cb",
    }
)
#: Property-name fragments whose values are never printed.
_SECRET_MARKERS = (
    "password",
    "secret",
    "token",
    "passphrase",
    "key.pem",
    "private.key",
    "ssl_key",
    "sasl.oauthbearer.config",
)

REDACTED = "***"
#: Properties holding the broker list, whose entries may carry ``user:password@``.
BOOTSTRAP_PROPERTIES = ("bootstrap.servers", "metadata.broker.list")
#: One bootstrap entry: ``[scheme://][userinfo@]host[:port]``; anything after is dropped.
_HOST_PORT = re.compile(r"[A-Za-z0-9._:\[\]-]*")
_SCHEME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
_MAX_BOOTSTRAP_ENTRIES = 10
#: librdkafka's default ``message.max.bytes``.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
#: How C's ``strtol(value, &end, 0)`` reads an integer property: sign, then hex, octal or decimal.
_STRTOL = re.compile(r"[ \t\n\r\f\v]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")


class ProducerConfigError(ValueError):
    """A producer config librdkafka (or we) cannot accept; the message names the property only."""


def is_secret(name: str) -> bool:
    """True for properties whose values must never appear in logs or answers."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def canonical_config(config: ProducerConfig) -> ConfigKey:
    """The pool key of ``config``: flattened, values as librdkafka text, sorted by name."""
    flat: dict[str, str] = {}
    _flatten("", config, flat)
    return tuple(sorted(flat.items()))


def _flatten(prefix: str, config: ProducerConfig, out: dict[str, str]) -> None:
    for name, value in config.items():
        if not isinstance(name, str) or not name:
            raise ProducerConfigError(f"property names must be non-empty strings, got {name!r}")
        full = f"{prefix}{name}"
        if isinstance(value, Mapping):
            _flatten(f"{full}.", value, out)
            continue
        if full in _RESERVED:
            raise ProducerConfigError(f"property {full!r} is reserved for the runner")
        if full in out:
            raise ProducerConfigError(f"property {full!r} is given twice (nested and dotted)")
        out[full] = _as_text(full, value)
        if not (_is_utf8(full) and _is_utf8(out[full])):
            # confluent-kafka crashes the process (SIGSEGV) on such a name: refuse it here.
            raise ProducerConfigError(f"property {full!r} is not valid UTF-8 (a lone surrogate)")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ProducerConfigError(
        f"property {name!r} must be a string, number or boolean, not {type(value).__name__}"
    )


def message_max_bytes(config: ConfigKey) -> int | None:
    """``message.max.bytes`` as librdkafka reads it (``strtol`` base 0), None if unreadable.

    librdkafka refuses at produce time a record whose value, key and headers exceed it; the
    plugin checks the value against it before spending anything on the body.
    """
    text = dict(config).get("message.max.bytes")
    if text is None:
        return DEFAULT_MESSAGE_MAX_BYTES
    match = _STRTOL.match(text)
    if match is None:
        return None
    sign, hexadecimal, octal, decimal = match.groups()
    if hexadecimal:
        value = int(hexadecimal, 16)
    elif octal:
        value = int(octal, 8)
    else:
        value = int(decimal)
    return -value if sign == "-" else value


def redact(config: ConfigKey | Mapping[str, str]) -> dict[str, str]:
    """A copy safe to log: secret values replaced by ``***``, broker lists by their hosts."""
    items = config.items() if isinstance(config, Mapping) else config
    return {name: _redacted_value(name, value) for name, value in items}


def _redacted_value(name: str, value: str) -> str:
    if is_secret(name):
        return REDACTED
    if name in BOOTSTRAP_PROPERTIES:
        return ",".join(redact_bootstrap(value))
    return value


def scrub(text: str, config: ConfigKey) -> str:
    """``text`` (e.g. a librdkafka error or log line) with every secret of ``config`` blanked:
    secret values, and the user info (and its password alone) of broker-list entries."""
    for name, value in config:
        if not value:
            continue
        if is_secret(name):
            text = text.replace(value, REDACTED)
        elif name in BOOTSTRAP_PROPERTIES:
            for userinfo in _userinfos(value):
                text = text.replace(userinfo, REDACTED)
                password = userinfo.partition(":")[2]
                if password:
                    text = text.replace(password, REDACTED)
    return text


def redact_bootstrap(servers: str) -> list[str]:
    """``bootstrap.servers`` as it may be shown: scheme and host:port only, at most 10 entries.

    Drops user info (``user:password@``) and anything after the port, which librdkafka would not
    accept anyway but a careless config might carry. The one redaction of broker lists: logs,
    ``check-config``, metrics and ``/health`` all show this.
    """
    shown: list[str] = []
    entries = [entry.strip() for entry in servers.split(",") if entry.strip()]
    for entry in entries[:_MAX_BOOTSTRAP_ENTRIES]:
        scheme, sep, rest = entry.rpartition("://")
        host_port = _HOST_PORT.match(rest.rsplit("@", 1)[-1])
        address = host_port.group(0) if host_port else ""
        shown.append(f"{_SCHEME_UNSAFE.sub('_', scheme)}://{address}" if sep else address)
    if len(entries) > _MAX_BOOTSTRAP_ENTRIES:
        shown.append(f"(+{len(entries) - _MAX_BOOTSTRAP_ENTRIES} more)")
    return shown


def _userinfos(servers: str) -> list[str]:
    """The ``user:password`` parts of a broker list's entries, longest first."""
    found = {
        entry.rpartition("://")[2].rpartition("@")[0]
        for entry in servers.split(",")
        if "@" in entry
    }
    return sorted((info for info in found if info), key=len, reverse=True)
