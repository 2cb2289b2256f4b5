"""The delivery-report bridge: every waiter settled on its loop, one wake-up per batch."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kafkaupstream.producers import Delivered, DeliveryTimeout
from kafkaupstream.producers.bridge import ReportBridge


class CountingLoop:
    """Wraps a loop to count the wake-ups the bridge asks for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wakeups = 0

    def call_soon_threadsafe(self, callback, *args):  # type: ignore[no-untyped-def]
        self.wakeups += 1
        return self.loop.call_soon_threadsafe(callback, *args)


def test_reports_from_another_thread_settle_every_waiter_with_its_own_outcome():
    asyncio.run(_test_reports_from_another_thread_settle_every_waiter_with_its_own_outcome())


async def _test_reports_from_another_thread_settle_every_waiter_with_its_own_outcome() -> None:
    loop = asyncio.get_running_loop()
    counting = CountingLoop(loop)
    bridge = ReportBridge(counting)  # type: ignore[arg-type]
    futures = [loop.create_future() for _ in range(500)]

    def poll_thread() -> None:  # one poll() serving every report at once
        for offset, future in enumerate(futures):
            bridge.settle(future, Delivered("t", 0, offset))

    thread = threading.Thread(target=poll_thread)
    thread.start()
    outcomes = await asyncio.wait_for(asyncio.gather(*futures), 5)
    thread.join()
    assert outcomes == [Delivered("t", 0, offset) for offset in range(500)]
    assert 1 <= counting.wakeups < 500


def test_a_report_after_a_drain_schedules_the_next_one():
    asyncio.run(_test_a_report_after_a_drain_schedules_the_next_one())


async def _test_a_report_after_a_drain_schedules_the_next_one() -> None:
    loop = asyncio.get_running_loop()
    bridge = ReportBridge(loop)
    for offset in range(3):
        future = loop.create_future()
        bridge.settle(future, Delivered("t", 1, offset))
        assert await asyncio.wait_for(future, 1) == Delivered("t", 1, offset)


def test_a_waiter_that_timed_out_is_left_as_it_is():
    asyncio.run(_test_a_waiter_that_timed_out_is_left_as_it_is())


async def _test_a_waiter_that_timed_out_is_left_as_it_is() -> None:
    loop = asyncio.get_running_loop()
    bridge = ReportBridge(loop)
    timed_out, waiting = loop.create_future(), loop.create_future()
    timed_out.set_result(DeliveryTimeout(0.1))
    cancelled = loop.create_future()
    cancelled.cancel()
    for future in (timed_out, cancelled, waiting):
        bridge.settle(future, Delivered("t", 0, 7))
    assert await asyncio.wait_for(waiting, 1) == Delivered("t", 0, 7)
    assert timed_out.result() == DeliveryTimeout(0.1)
    assert cancelled.cancelled()


def test_reports_for_a_closed_loop_are_dropped_without_raising():
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    loop.close()
    bridge = ReportBridge(loop)
    bridge.settle(future, Delivered("t", 0, 0))
    bridge.settle(future, Delivered("t", 0, 1))  # not stuck as "scheduled" after the first
    assert not future.done()
    assert not bridge._queue  # nothing piles up for a loop that will never drain it
    with pytest.raises(RuntimeError):
        loop.call_soon_threadsafe(print)
