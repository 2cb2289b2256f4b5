"""Write exchanges to a recording as they happen: the gateway's ``on_exchange`` hook.

Each exchange is one line, flushed at once, so a recording stopped by Ctrl-C (or a crash) holds
every exchange answered until then and is still valid.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from harness.replay.format import (
    Exchange,
    RecordedAnswer,
    RecordedRequest,
    dumps_line,
    exchange_to_json,
    header_line,
)
from harness.replay.redact import redact

if TYPE_CHECKING:
    from harness.gateway import ExchangeHook, Timing
    from harness.http11 import Request
    from harness.pipeline import Answer


class RecordingWriter:
    """A recording file open for appending exchanges; secrets redacted unless ``keep_secrets``."""

    def __init__(
        self, path: str | os.PathLike[str], *, source: str, keep_secrets: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self.keep_secrets = keep_secrets
        self.count = 0
        # The gateway calls from its event loop thread, a demo may stop from the main thread.
        self._lock = threading.Lock()
        self._file: TextIO | None = open(self.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._write_line(dumps_line(header_line(source, redacted=not keep_secrets)))

    def write(self, exchange: Exchange) -> None:
        if not self.keep_secrets:
            exchange = redact(exchange)
        self._write_line(dumps_line(exchange_to_json(exchange)))
        self.count += 1

    def _write_line(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                raise ValueError(f"recording {self.path} is closed")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def from_gateway(request: Request, answer: Answer, timing: Timing) -> Exchange:
    """What the gateway saw: the client's request as sent and the answer it was given."""
    path, sep, query = request.target.partition("?")
    return Exchange(
        RecordedRequest(
            request.method, path, query if sep else None, request.headers, request.body
        ),
        RecordedAnswer(answer.status, answer.headers, answer.body),
        started=timing.started,
        duration_ms=timing.total_ms,
    )


def recording_hook(
    writer: RecordingWriter, *, sources: frozenset[str] | None = None
) -> ExchangeHook:
    """An ``on_exchange`` hook writing every exchange (only answers from ``sources``, if given)."""

    def hook(request: Request, answer: Answer, timing: Timing) -> None:
        if sources is None or answer.source in sources:
            writer.write(from_gateway(request, answer, timing))

    return hook
