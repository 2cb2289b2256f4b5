"""Delivery reports from the thread that polls librdkafka to the event loop, a batch at a time.

One ``Producer.poll()`` serves every report that is ready, calling back once per record. Handing
each one to the loop with its own ``call_soon_threadsafe`` costs a wake-up per record (with
asyncio's own loop, a write to its self-pipe each time). Here the first report of a batch
schedules one drain on the loop and the rest join a queue, so a poll's worth of reports costs the
loop one wake-up and one callback.
"""

from __future__ import annotations

import asyncio
from collections import deque

from kafkaupstream.producers.outcomes import DeliveryOutcome

_Waiter = asyncio.Future[DeliveryOutcome]


class ReportBridge:
    """Settles the futures of one event loop with outcomes reported from any thread."""

    __slots__ = ("_queue", "_scheduled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: deque[tuple[_Waiter, DeliveryOutcome]] = deque()
        # Set by the reporting thread, cleared by the loop before it drains: a report queued
        # after the clear either is drained by that pass or schedules the next one.
        self._scheduled = False

    def settle(self, future: _Waiter, outcome: DeliveryOutcome) -> None:
        """Any thread: ``future`` gets ``outcome`` on its loop, unless it is done by then."""
        self._queue.append((future, outcome))
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            self._queue.clear()
            self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue:
            future, outcome = queue.popleft()
            if not future.done():  # it may have timed out, or its request been cancelled
                future.set_result(outcome)
