"""The event loop a runner process serves on: uvloop when it is installed, else asyncio's own.

uvloop is a dependency, but the runner behaves the same on either loop and runs without it; on the
2-core dev machine uvloop carried the runner's throughput up by about a third (docs/benchmarks.md).
``KAFKAUPSTREAM_LOOP=asyncio`` keeps asyncio's loop even when uvloop is installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kafkaupstream.logs import log_event

log = logging.getLogger(__name__)

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The environment variable that picks the loop: ``uvloop`` (the default) or ``asyncio``.
LOOP_ENV = "KAFKAUPSTREAM_LOOP"


def loop_factory(choice: str | None = None) -> tuple[str, LoopFactory | None]:
    """(name, factory) of the loop to use; factory None means asyncio's default loop.

    ``choice`` defaults to ``$KAFKAUPSTREAM_LOOP``; an unknown value is ignored with a warning.
    """
    wanted = (choice if choice is not None else os.environ.get(LOOP_ENV, "")).strip().lower()
    if wanted not in ("", "uvloop", "asyncio"):
        log_event(
            log, logging.WARNING, "unknown_loop", variable=LOOP_ENV, value=wanted, using="default"
        )
        wanted = ""
    if wanted != "asyncio":
        try:
            import uvloop
        except ImportError:
            if wanted == "uvloop":
                log_event(log, logging.WARNING, "uvloop_missing", using="asyncio")
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    name, factory = loop_factory()
    log_event(log, logging.DEBUG, "event_loop", loop=name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
