"""A worker's watch on its producers: every second a report for the parent, probes, state logs.

Each cycle takes every producer's queue depth and counters (``PooledProducer.stats()``), probes
the brokers of the producers that are due (``PooledProducer.reachable()``, a metadata request off
the event loop), logs a producer's broker going down or coming back once per transition, and
rewrites this worker's health report (``files.py``), from which the parent serves ``/health``
and the gauges.

Probes: every 5 s while a producer's brokers answer, every cycle while they do not (or are not
known yet, or deliveries failed since the last cycle). Two failed probes in a row make a producer
unreachable, one answer makes it reachable again, so a slow first connection does not flap.

Brokers that answer metadata are not enough: a producer can be connected and still deliver
nothing (an idempotent producer the broker lost track of). So a producer that has had records
pending for ``stall_after_s`` without one successful delivery is reported stalled (its pool
samples that, ``PooledProducer.sample_progress``), logged once when it stalls and once when it
delivers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kafkaupstream.logs import log_event
from kafkaupstream.observability.files import MetricsDir
from kafkaupstream.observability.recorder import Recorder
from kafkaupstream.producers import PooledProducer, ProducerPool, ProducerStats, redact_bootstrap

if TYPE_CHECKING:
    from kafkaupstream.spool import Spool

log = logging.getLogger(__name__)

CYCLE_S = 1.0
PROBE_EVERY_S = 5.0
#: A broker that does not answer metadata this fast counts as unreachable. Short, because a
#: probe holds the producer's client lock, which the shutdown flush also needs.
PROBE_TIMEOUT_S = 0.5
FAILURES_TO_DOWN = 2


class TelemetrySource(Protocol):
    """What the monitor watches: the plugin's request counts, producer pool and refusals."""

    @property
    def in_flight(self) -> int: ...

    @property
    def awaiting_body(self) -> int: ...

    @property
    def producer_pool(self) -> ProducerPool | None: ...

    @property
    def spool(self) -> Spool | None: ...

    #: ``503 backpressure`` answers since start, by reason.
    refused_queue_full: int
    refused_in_flight_cap: int
    refused_awaiting_body_cap: int


@dataclass(slots=True)
class _Watch:
    """What the monitor remembers about one producer between cycles."""

    bootstrap: list[str]
    reachable: bool | None = None
    since: float = 0.0
    failures: int = 0
    last_probe: float = float("-inf")
    failed_seen: int = 0
    suspect: bool = False
    stalled: bool = False


class Monitor:
    """Runs on the worker's event loop from the plugin's start() to its close()."""

    def __init__(
        self,
        source: TelemetrySource,
        metrics_dir: MetricsDir,
        recorder: Recorder,
        *,
        cycle_s: float = CYCLE_S,
        stall_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._stall_after_s = stall_after_s
        self._dir = metrics_dir
        self._recorder = recorder
        self._cycle_s = cycle_s
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._replaced_seen = 0
        self._released_seen = 0
        self._refused_seen = {
            "queue_full": 0,
            "in_flight_cap": 0,
            "awaiting_body_cap": 0,
            "spool_full": 0,
        }
        self._spool_seen: dict[str, int] = {}
        self._forwarded_at: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pid = os.getpid()

    def start(self) -> None:
        self._pid = os.getpid()  # the worker's, not the parent's that built the plugin
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Before the producers are flushed: no probe starts after this."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log_event(log, logging.ERROR, "monitor_cycle_failed", exc_info=True, action="retry")
            await asyncio.sleep(self._cycle_s)

    async def cycle(self) -> None:
        """One look at every producer, then this worker's report."""
        pool = self._source.producer_pool
        producers = pool.producers if pool is not None else ()
        self.count_totals()
        now = self._clock()
        results = await asyncio.gather(*(self._observe(p, now) for p in producers))
        entries = [
            self._entry(producer, stats, reached, now)
            for producer, (stats, reached) in zip(producers, results, strict=True)
        ]
        for gone in self._watches.keys() - {p.name for p in producers}:
            del self._watches[gone]
        # After the stats: every delivery they count is counted in the metrics too.
        self._recorder.fold()
        report = {
            "pid": self._pid,
            "at": time.time(),
            "in_flight": self._source.in_flight,
            "awaiting_body": self._source.awaiting_body,
            "producers": entries,
        }
        if self._source.spool is not None:
            report["spool"] = self._spool_entry(self._source.spool, now)
        await asyncio.to_thread(self._dir.write_report, self._pid, report)

    def count_totals(self) -> None:
        """Count what the plugin and its pool added to their totals since the last look."""
        source = self._source
        pool = source.producer_pool
        if pool is not None and pool.replaced > self._replaced_seen:
            self._recorder.producers_replaced(pool.replaced - self._replaced_seen)
            self._replaced_seen = pool.replaced
        if pool is not None and pool.released > self._released_seen:
            self._recorder.producers_released(pool.released - self._released_seen)
            self._released_seen = pool.released
        spool = source.spool
        spool_counts = spool.counters() if spool is not None else {}
        totals = (
            ("queue_full", source.refused_queue_full),
            ("in_flight_cap", source.refused_in_flight_cap),
            ("awaiting_body_cap", source.refused_awaiting_body_cap),
            ("spool_full", spool_counts.pop("refused_full", 0)),
        )
        for name, total in spool_counts.items():
            seen = self._spool_seen.get(name, 0)
            if total > seen:
                self._recorder.spool_counted(name, total - seen)
                self._spool_seen[name] = total
        for reason, total in totals:
            if total > self._refused_seen[reason]:
                self._recorder.refused(reason, total - self._refused_seen[reason])
                self._refused_seen[reason] = total

    def _spool_entry(self, spool: Spool, now: float) -> dict[str, Any]:
        """The spool's gauges for the report: its files, and the forward rate since last time."""
        wall = time.time()
        forwarded = spool.counters()["forwarded"]
        rate = None
        if self._forwarded_at is not None and now > self._forwarded_at[0]:
            rate = round((forwarded - self._forwarded_at[1]) / (now - self._forwarded_at[0]), 1)
        self._forwarded_at = (now, forwarded)
        files = []
        for stats in spool.stats():
            oldest = stats.oldest_created
            files.append(
                {
                    "file": stats.file,
                    "own": stats.own,
                    "available": stats.available,
                    "records": stats.records,
                    "bytes": stats.bytes,
                    "oldest_age_s": None if oldest is None else round(max(0.0, wall - oldest), 1),
                    "dead_letters": stats.dead_letters,
                }
            )
        return {
            "directory": spool.settings.directory,
            "max_bytes": spool.settings.max_bytes,
            "max_age_s": spool.settings.max_age_s,
            "unavailable": spool.unavailable,
            "forwarded_per_s": rate,
            "files": files,
        }

    async def _observe(
        self, producer: PooledProducer, now: float
    ) -> tuple[ProducerStats, bool | None]:
        watch = self._watches.get(producer.name)
        if watch is None:
            servers = dict(producer.config).get("bootstrap.servers", "")
            watch = self._watches[producer.name] = _Watch(redact_bootstrap(servers), since=now)
        reached: bool | None = None
        if self._probe_due(watch, now):
            watch.last_probe = now
            reached = await producer.reachable(PROBE_TIMEOUT_S)
        # stats() takes the client lock a probe may hold: never on the loop.
        return await asyncio.to_thread(producer.stats), reached

    def _probe_due(self, watch: _Watch, now: float) -> bool:
        if watch.reachable is not True or watch.suspect:
            return now - watch.last_probe >= self._cycle_s * 0.9
        return now - watch.last_probe >= PROBE_EVERY_S

    def _entry(
        self, producer: PooledProducer, stats: ProducerStats, reached: bool | None, now: float
    ) -> dict[str, Any]:
        watch = self._watches[producer.name]
        watch.suspect = stats.failed > watch.failed_seen
        watch.failed_seen = stats.failed
        if reached is True:
            watch.failures = 0
            if watch.reachable is not True:
                self._log_up(producer.name, watch, now)
        elif reached is False:
            watch.failures += 1
            if watch.reachable is not False and watch.failures >= FAILURES_TO_DOWN:
                self._log_down(producer.name, watch, stats, now)
        stalled = stats.stalled_s >= self._stall_after_s
        if stalled != watch.stalled:
            self._log_stall(producer.name, watch, stats, stalled)
        return {
            "name": producer.name,
            "bootstrap": watch.bootstrap,
            "reachable": watch.reachable,
            "for_s": round(now - watch.since, 1),
            "queue_depth": stats.queue_depth,
            "waiters": stats.waiters,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "last_error": stats.last_error,
            "dead": producer.dead,
            "pending": stats.pending,
            "stalled": stalled,
            "stalled_s": round(stats.stalled_s, 1),
            "last_delivery_error": stats.last_delivery_error,
            "stall_cause": _stall_cause(stats) if stalled else None,
        }

    def _log_stall(self, name: str, watch: _Watch, stats: ProducerStats, stalled: bool) -> None:
        watch.stalled = stalled
        if stalled:
            log_event(
                log,
                logging.WARNING,
                "delivery_stalled",
                producer=name,
                bootstrap=",".join(watch.bootstrap),
                pending=stats.pending,
                stalled_s=round(stats.stalled_s, 1),
                cause=_stall_cause(stats),
            )
        else:
            log_event(log, logging.INFO, "delivery_resumed", producer=name)

    def _log_up(self, name: str, watch: _Watch, now: float) -> None:
        # After an outage, say how long it lasted; the first verdict has nothing to add.
        down = {"down_s": round(now - watch.since, 1)} if watch.reachable is False else {}
        bootstrap = ",".join(watch.bootstrap)
        log_event(log, logging.INFO, "broker_reachable", producer=name, bootstrap=bootstrap, **down)
        watch.reachable = True
        watch.since = now

    def _log_down(self, name: str, watch: _Watch, stats: ProducerStats, now: float) -> None:
        log_event(
            log,
            logging.WARNING,
            "broker_unreachable",
            producer=name,
            bootstrap=",".join(watch.bootstrap),
            cause=stats.last_error or f"no_metadata_within_{PROBE_TIMEOUT_S}s",
            probes_failed=watch.failures,
        )
        watch.reachable = False
        watch.since = now


def _stall_cause(stats: ProducerStats) -> str:
    """What a stalled producer last heard: a delivery report's error, else the client's own."""
    return stats.last_delivery_error or stats.last_error or "no_delivery_report"
