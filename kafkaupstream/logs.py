"""Logging: stderr (APISIX captures it), one line per event, text or JSON lines.

Every event is logged through :func:`log_event` as ``event=NAME key=value ...``. In JSON each line
also carries ``event`` and ``fields`` (the values as they were given, not parsed back from the
text), so a log shipper can filter on ``fields.producer`` without a regex. The parent and every
worker write to the same stderr, one whole line per write; ``pid`` tells them apart. Events that
can repeat thousands of times a second are let through by a :class:`RateLimit`, with a count.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

#: The LogRecord attributes :func:`log_event` sets for :class:`JsonLineFormatter`.
_EVENT = "kafkaupstream_event"
_FIELDS = "kafkaupstream_fields"
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/#,@[]+")


def render_value(value: object) -> str:
    """A field value as the text form writes it: plain tokens bare, other text quoted."""
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value if value and _PLAIN.issuperset(value) else repr(value)
    if value is None:
        return "-"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def render_event(event: str, fields: dict[str, object]) -> str:
    """``event=NAME key=value ...``: the text form of one event."""
    parts = [f"event={event}"]
    parts.extend(f"{key}={render_value(value)}" for key, value in fields.items())
    return " ".join(parts)


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    /,
    *,
    exc_info: Any = None,
    **fields: object,
) -> None:
    """Log one event: its text form as the message, its fields as they are for JSON lines."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "%s",
            render_event(event, fields),
            exc_info=exc_info,
            extra={_EVENT: event, _FIELDS: fields},
            stacklevel=2,
        )


class RateLimit:
    """Lets an event through at most once per interval (per key), counting what it held back.

    Any thread may call it. Distinct keys are remembered up to ``max_keys``; past that the
    memory is reset rather than grown.
    """

    def __init__(
        self,
        interval_s: float,
        *,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (when it may next be let through, how many were held back since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def hit(self, key: Hashable = None) -> int | None:
        """None: hold this one back. Else let it through: how many were held back before it."""
        now = self._clock()
        with self._lock:
            allowed_at, held = self._seen.get(key, (0.0, 0))
            if now < allowed_at:
                self._seen[key] = (allowed_at, held + 1)
                return None
            if len(self._seen) >= self._max_keys and key not in self._seen:
                self._seen.clear()
            self._seen[key] = (now + self._interval_s, 0)
        return held

    def log(
        self, logger: logging.Logger, level: int, event: str, /, *, counted: str, **fields: object
    ) -> None:
        """:func:`log_event` unless held back; ``counted`` names the field that says how many
        events the line stands for (this one and those held back before it)."""
        held = self.hit()
        if held is not None:
            log_event(logger, level, event, **fields, **{counted: held + 1})


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{moment}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        event = getattr(record, _EVENT, None)
        if event is not None:
            line["event"] = event
            fields = getattr(record, _FIELDS, None)
            if fields:
                line["fields"] = fields
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger to stderr; called once by the CLI (before any worker is forked).

    Python warnings and exceptions that escape a thread or the program go through logging too,
    so that with ``json`` every line on stderr is JSON.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_crash
    sys.excepthook = _log_crash


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log_event(
        logging.getLogger("kafkaupstream"),
        logging.CRITICAL,
        "thread_crashed",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        thread=name,
    )


def _log_crash(exc_type: Any, exc: BaseException, tb: Any) -> None:
    log_event(
        logging.getLogger("kafkaupstream"),
        logging.CRITICAL,
        "crashed",
        exc_info=(exc_type, exc, tb),
    )
