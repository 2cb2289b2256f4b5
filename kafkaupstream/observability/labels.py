"""Metric label values that stay bounded and secret-free, and the redacted bootstrap list.

Labels are derived only from what the operator controls (APISIX route ids, allow-listed topics,
librdkafka's error names, our own answer codes), never from client-chosen free text, and each
label set is capped per process: past the cap new values are counted as :data:`OTHER`.
"""

from __future__ import annotations

import re

#: A PrepareConf whose key names no conf type and id (keyless, or not APISIX's format).
UNKNOWN = "_unknown"
#: Values past a label's cap (see :class:`BoundedLabels`).
OTHER = "_other"
#: APISIX ids are at most 64 characters of ``[a-zA-Z0-9-_.]``; conf types are short words.
_MAX_LABEL_CHARS = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:#&-]")
#: One bootstrap entry: ``[scheme://][userinfo@]host[:port]``; anything after is dropped.
_HOST_PORT = re.compile(r"[A-Za-z0-9._:\[\]-]*")
_MAX_BOOTSTRAP_ENTRIES = 10


def route_label(key: str) -> str:
    """The route a PrepareConf key names: ``route#<id>#<plugin>#<version>`` -> ``<id>``.

    APISIX's key is ``<conf_type>#<conf_id>#<plugin>#<version>``. A route merged with its service
    or consumer has the conf type ``route&service`` and the id ``<route id>&<other id>``: the
    label is still the route id (consumer names are not route labels). Other conf types
    (``global_rule``, ``service``, ...) keep their type: ``global_rule#1``. The version is
    dropped, so a route keeps its label across updates.
    """
    parts = key.split("#")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return UNKNOWN
    conf_type, conf_id = parts[0], parts[1]
    if conf_type == "route" or conf_type.startswith("route&"):
        label = conf_id.split("&", 1)[0]
    else:
        label = f"{conf_type.split('&', 1)[0]}#{conf_id.split('&', 1)[0]}"
    return _UNSAFE.sub("_", label)[:_MAX_LABEL_CHARS] or UNKNOWN


class BoundedLabels:
    """Admits at most ``limit`` distinct values; later newcomers become :data:`OTHER`.

    Used on the event loop thread only: delivery reports are queued by the poll threads and
    labelled when the loop folds them in (``recorder.py``).
    """

    __slots__ = ("_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def admit(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


def redact_bootstrap(servers: str) -> list[str]:
    """``bootstrap.servers`` as it may be shown: scheme and host:port only, at most 10 entries.

    Drops user info (``user:password@``) and anything after the port, which librdkafka would not
    accept anyway but a careless config might carry.
    """
    shown: list[str] = []
    entries = [entry.strip() for entry in servers.split(",") if entry.strip()]
    for entry in entries[:_MAX_BOOTSTRAP_ENTRIES]:
        scheme, sep, rest = entry.rpartition("://")
        host_port = _HOST_PORT.match(rest.rsplit("@", 1)[-1])
        address = host_port.group(0) if host_port else ""
        shown.append(f"{_UNSAFE.sub('_', scheme)}://{address}" if sep else address)
    if len(entries) > _MAX_BOOTSTRAP_ENTRIES:
        shown.append(f"(+{len(entries) - _MAX_BOOTSTRAP_ENTRIES} more)")
    return shown
