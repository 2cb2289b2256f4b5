"""librdkafka's own log lines, routed into :mod:`logging` without flooding it.

A producer whose broker is down logs "Connect to ... failed" on every reconnect attempt, several
times a second for as long as the outage lasts. Lines that differ only in numbers are therefore
let through once per interval, the next one carrying how many were suppressed.
"""

from __future__ import annotations

import logging
import re
import threading
import time

_LOG = logging.getLogger(__name__)
_NUMBERS = re.compile(r"\d+")
#: Distinct line shapes remembered; beyond this the memory is reset rather than grown.
_MAX_KEYS = 256


class RateLimitedLog:
    """The ``logger`` confluent-kafka calls as ``log(level, fmt, *args)`` (from any thread)."""

    def __init__(self, client: str, interval_s: float = 30.0) -> None:
        self._client = client
        self._interval_s = interval_s
        self._lock = threading.Lock()
        # line shape -> (next time it may be logged, lines suppressed since)
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}

    def log(self, level: int, fmt: str, *args: object) -> None:
        """Log the line now, or count it when the same shape was logged less than interval ago."""
        if not _LOG.isEnabledFor(level):
            return
        line = fmt % args if args else fmt
        key = (level, _NUMBERS.sub("#", line))
        now = time.monotonic()
        with self._lock:
            allowed_at, suppressed = self._seen.get(key, (0.0, 0))
            if now < allowed_at:
                self._seen[key] = (allowed_at, suppressed + 1)
                return
            if len(self._seen) >= _MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now + self._interval_s, 0)
        if suppressed:
            _LOG.log(
                level,
                "producer=%s %s (%d similar lines suppressed)",
                self._client,
                line,
                suppressed,
            )
        else:
            _LOG.log(level, "producer=%s %s", self._client, line)
