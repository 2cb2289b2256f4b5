"""What every long-running harness command shares: its log setup and its wait for Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys


def log_to_stderr(level: str) -> None:
    """The harness's own log lines, on stderr at ``level``."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


async def until_stopped() -> None:
    """Return once SIGINT (Ctrl-C) or SIGTERM arrives; the caller then shuts down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
