"""Runs the load: C sequential connections, closed loop or at a fixed rate, warm-up then measure.

Fixed rate is open loop: request ``n`` is due at ``start + n / rate`` whether or not earlier ones
were answered, whichever connection is free takes it, and its latency counts from the due time, so
a stalled server shows up as latency instead of as fewer requests (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from harness.load.bodies import BodyTemplate
from harness.load.http import HTTPClient
from harness.load.rpc import RPC_FAILED_STATUS, ConfTokens, RouteConf, RPCClient, RPCFailure
from harness.load.stats import ACCEPTED, CPUWatch, Recorder

#: Event-loop timers have millisecond resolution (uvloop may fire ~1 ms early, asyncio ~1 ms
#: late), so fixed-rate sends aim this much early instead of spinning; an early send is timed
#: from when it was really sent (see Recorder.record), so nothing is under-reported.
TIMER_SLACK = 0.001


class SetupError(RuntimeError):
    """The run could not start (no server, PrepareConf refused...): nothing was measured."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """One run. Exactly one of ``socket`` / ``url``; ``duration`` or ``requests`` (measured)."""

    bodies: BodyTemplate
    socket: str | None = None
    url: str | None = None
    route: RouteConf | None = None
    path: str = "/kafkaupstream"
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 16
    rate: float | None = None
    warmup: float = 1.0
    duration: float | None = 10.0
    requests: int | None = None
    request_timeout: float = 60.0
    progress: bool = False
    watch: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    """The raw outcome handed to the report."""

    options: LoadOptions
    recorder: Recorder
    measure_start: float
    cpu: dict[str, float | None]
    prepares: int

    @property
    def window(self) -> float:
        """Seconds from the end of warm-up to the last measured answer."""
        return max(self.recorder.last_done - self.measure_start, 0.0)


class _Client(Protocol):
    async def request(self, n: int) -> int: ...

    def close(self) -> None: ...


class _Schedule:
    """Hands out request numbers with their due time and whether they are measured."""

    def __init__(self, options: LoadOptions, start: float) -> None:
        self.start = start
        self.measure_start = start + options.warmup
        self.measure_end = self.measure_start + (options.duration or math.inf)
        self.limit = options.requests
        self.interval = 1.0 / options.rate if options.rate else 0.0
        self.issued = 0
        self.measured = 0

    def next(self) -> tuple[int, float, bool] | None:
        n = self.issued
        due = self.start + n * self.interval if self.interval else time.perf_counter()
        measured = due >= self.measure_start
        if measured:
            if due >= self.measure_end or (self.limit is not None and self.measured >= self.limit):
                return None
            self.measured += 1
        self.issued = n + 1
        return n, due, measured


class _Worker:
    """One connection's loop; a watchdog may abort its in-flight request (as APISIX's timeout)."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.busy_since = 0.0
        self.timed_out = False

    async def run(self, schedule: _Schedule, rec: Recorder, fixed_rate: bool) -> None:
        clock = time.perf_counter
        while (ticket := schedule.next()) is not None:
            n, due, measured = ticket
            if fixed_rate and (delay := due - clock() - TIMER_SLACK) > 0:
                await asyncio.sleep(delay)
            sent = self.busy_since = clock()
            try:
                status = await self.client.request(n)
            except RPCFailure as exc:
                rec.fail("timeout" if self.timed_out else exc.label)
                self.timed_out = False
                status = RPC_FAILED_STATUS
                # A dead server fails without suspending: let the other tasks run.
                await asyncio.sleep(0)
            self.busy_since = 0.0
            rec.record(n, status, due, sent, clock(), measured, fixed_rate)
        self.client.close()

    def check(self, now: float, timeout: float) -> None:
        if self.busy_since and now - self.busy_since > timeout and not self.timed_out:
            self.timed_out = True
            self.client.close()


async def run_load(options: LoadOptions) -> RunResult:
    """Run the load described by ``options``; raises SetupError when nothing could start."""
    tokens: ConfTokens | None = None
    clients: list[_Client]
    if options.socket is not None:
        if options.route is None:
            raise SetupError("RPC mode needs a route (plugin name and conf value)")
        tokens = ConfTokens(options.socket, options.route)
        try:
            await tokens.refresh(None)
        except RPCFailure as exc:
            raise SetupError(f"PrepareConf on {options.socket} failed: {exc}") from exc
        clients = [
            RPCClient(
                tokens, options.bodies, call_id=i + 1, path=options.path, headers=options.headers
            )
            for i in range(options.connections)
        ]
    elif options.url is not None:
        clients = [
            HTTPClient(options.url, options.bodies, headers=options.headers)
            for _ in range(options.connections)
        ]
    else:
        raise SetupError("give a socket (RPC) or a URL (HTTP)")

    rec = Recorder()
    start = time.perf_counter()
    schedule = _Schedule(options, start)
    cpu = CPUWatch(options.watch)
    workers = [_Worker(c) for c in clients]
    fixed = options.rate is not None
    tasks = [asyncio.ensure_future(w.run(schedule, rec, fixed)) for w in workers]
    helpers = [
        asyncio.ensure_future(_start_cpu_watch(cpu, schedule.measure_start)),
        asyncio.ensure_future(_watchdog(workers, options.request_timeout)),
    ]
    if options.progress:
        helpers.append(asyncio.ensure_future(_progress(sys.stderr, schedule, rec, options)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        for task in tasks:
            task.cancel()
    if options.progress:
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()
    return RunResult(
        options, rec, schedule.measure_start, cpu.stop(), tokens.prepares if tokens else 0
    )


async def _start_cpu_watch(cpu: CPUWatch, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    cpu.start()


async def _watchdog(workers: list[_Worker], timeout: float) -> None:
    while True:
        await asyncio.sleep(min(1.0, timeout / 4))
        now = time.perf_counter()
        for worker in workers:
            worker.check(now, timeout)


async def _progress(out: TextIO, schedule: _Schedule, rec: Recorder, options: LoadOptions) -> None:
    """One status line, rewritten twice a second: a bar (by time or by count), rate, failures."""
    last_count, last_time = 0, time.perf_counter()
    while True:
        await asyncio.sleep(0.5)
        now = time.perf_counter()
        rate = (rec.sent_total - last_count) / (now - last_time)
        last_count, last_time = rec.sent_total, now
        if now < schedule.measure_start:
            phase = f"warm-up {schedule.measure_start - now:4.1f}s left"
        elif options.duration:
            elapsed = now - schedule.measure_start
            phase = f"{_bar(elapsed / options.duration)} {elapsed:5.1f}/{options.duration:g}s "
            phase += f"{rec.measured:>10,} measured"
        else:
            limit = options.requests or 1
            phase = f"{_bar(rec.measured / limit)} {rec.measured:>10,}/{limit:,} measured"
        rejected = sum(n for status, n in rec.statuses.items() if status not in ACCEPTED)
        out.write(
            f"\r\x1b[2K{phase} {rate:>9,.0f} req/s {rejected:,} not 2xx "
            f"({sum(rec.failures.values()):,} RPC failures)"
        )
        out.flush()


def _bar(done: float, width: int = 24) -> str:
    filled = int(min(1.0, max(0.0, done)) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {min(1.0, done):4.0%}"
