"""Logging accepts refused at the open-files limit, on either event loop.

At ``RLIMIT_NOFILE`` the two loops fail differently and neither says so usefully: asyncio logs a
traceback through its exception handler on every retry (several a second) and leaves the
connections in the backlog; uvloop (libuv's "EMFILE trick") accepts and closes them at once and
logs nothing. So this process routes asyncio's report into one rate-limited line, and checks its
own descriptor count once a second, which catches the limit on both loops. The line names the
limit, so the operator knows what to raise.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from typing import Any

from kafkaupstream.logs import RateLimit, log_event

log = logging.getLogger(__name__)

#: At most one line per this many seconds; the next carries how many were folded into it.
LOG_EVERY_S = 10.0
CHECK_EVERY_S = 1.0
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
_FD_DIR = "/proc/self/fd"


class OpenFilesWatch:
    """Installed on a process's loop by the server; :meth:`close` stops the periodic check."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._limit = RateLimit(LOG_EVERY_S)
        self._handle: asyncio.TimerHandle | None = None
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_exception)
        if os.path.isdir(_FD_DIR):
            self._handle = loop.call_later(CHECK_EVERY_S, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def refused(self, cause: str) -> None:
        """One accept refused (or the limit reached); logged at most once per interval."""
        folded = self._limit.hit()
        if folded is None:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        log_event(
            log,
            logging.ERROR,
            "accept_refused",
            cause=cause,
            limit=soft,
            hard_limit=hard,
            similar_since_last=folded,
            hint="raise the open-files limit (ulimit -n, systemd LimitNOFILE)",
        )

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FILES:
            self.refused(errno.errorcode[exc.errno])
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def _check(self) -> None:
        self._handle = self._loop.call_later(CHECK_EVERY_S, self._check)
        if _at_limit():
            self.refused("EMFILE")


def _at_limit() -> bool:
    """Whether this process cannot open one more file (listing the fds needs one itself)."""
    try:
        return len(os.listdir(_FD_DIR)) - 1 >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except OSError as exc:
        return exc.errno in _OUT_OF_FILES
