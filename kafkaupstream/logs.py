"""Logging setup: stderr (APISIX captures it), one line per event, text or JSON lines.

Every event is logged as ``event=NAME key=value ...``. In JSON each line also carries ``event``
and ``fields`` (those pairs parsed back: quoted values unquoted, JSON values decoded), so a log
shipper can filter on ``fields.producer`` without a regex. The parent and every worker write to
the same stderr, one whole line per write; ``pid`` tells them apart.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import threading
import time
from typing import Any

_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z_][\w.]*)=")
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
_TOKEN = re.compile(r"\S*")
_JSON = json.JSONDecoder()


def message_fields(message: str) -> dict[str, Any]:
    """The ``key=value`` pairs of a log message; text around them is ignored."""
    fields: dict[str, Any] = {}
    pos = 0
    while (key := _KEY.search(message, pos)) is not None:
        start = key.end()
        value: Any
        quoted = _QUOTED.match(message, start)
        if quoted is not None:
            value, pos = _unquote(quoted.group(0)), quoted.end()
        else:
            value, pos = None, start
            if message[start : start + 1] in ("{", "["):
                try:
                    value, pos = _JSON.raw_decode(message, start)
                except ValueError:
                    value = None
            if value is None:
                token = _TOKEN.match(message, start)
                assert token is not None  # \S* always matches
                value, pos = token.group(0), token.end()
        fields[key.group(1)] = value
    return fields


def _unquote(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return literal
    return value if isinstance(value, str) else literal


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{moment}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": message,
        }
        fields = message_fields(message)
        if "event" in fields:
            line["event"] = fields.pop("event")
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
    logging.getLogger("kafkaupstream").critical(
        "event=thread_crashed thread=%s",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def _log_crash(exc_type: Any, exc: BaseException, tb: Any) -> None:
    logging.getLogger("kafkaupstream").critical("event=crashed", exc_info=(exc_type, exc, tb))
