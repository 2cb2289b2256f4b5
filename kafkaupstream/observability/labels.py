"""Metric label values that stay bounded and secret-free.

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
