"""librdkafka's own log lines, routed into :mod:`logging` without flooding it.

A producer whose broker is down logs "Connect to ... failed" on every reconnect attempt, several
times a second for as long as the outage lasts. Lines that differ only in numbers are therefore
let through once per interval, the next one carrying how many were suppressed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from kafkaupstream.logs import RateLimit, log_event

_LOG = logging.getLogger(__name__)
_NUMBERS = re.compile(r"\d+")


class RateLimitedLog:
    """The ``logger`` confluent-kafka calls as ``log(level, fmt, *args)`` (from any thread)."""

    def __init__(
        self,
        client: str,
        interval_s: float = 30.0,
        *,
        scrub: Callable[[str], str] = str,
    ) -> None:
        """``scrub`` blanks the producer's secrets in a line (librdkafka prints what it was given,
        user info of a broker address included)."""
        self._client = client
        self._scrub = scrub
        self._limit = RateLimit(interval_s)

    def log(self, level: int, fmt: str, *args: object) -> None:
        """Log the line now, or count it when the same shape was logged less than interval ago."""
        if not _LOG.isEnabledFor(level):
            return
        line = self._scrub(fmt % args if args else fmt)
        suppressed = self._limit.hit((level, _NUMBERS.sub("#", line)))
        if suppressed is None:
            return
        if suppressed:
            log_event(
                _LOG, level, "librdkafka", producer=self._client, line=line, suppressed=suppressed
            )
        else:
            log_event(_LOG, level, "librdkafka", producer=self._client, line=line)
