"""Producer configs as pool keys, and their redacted form for logs.

Two routes share a producer exactly when their configs mean the same thing to librdkafka, which
reads every property as text: so the key is the flattened config with values in librdkafka's
spelling (``True`` -> ``"true"``, ``5`` -> ``"5"``), sorted.
"""

from __future__ import annotations

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


def redact(config: ConfigKey | Mapping[str, str]) -> dict[str, str]:
    """A copy safe to log: secret values replaced by ``***``."""
    items = config.items() if isinstance(config, Mapping) else config
    return {name: REDACTED if is_secret(name) else value for name, value in items}


def scrub(text: str, config: ConfigKey) -> str:
    """``text`` (e.g. a librdkafka error) with every secret value of ``config`` blanked out."""
    for name, value in config:
        if value and is_secret(name):
            text = text.replace(value, REDACTED)
    return text
