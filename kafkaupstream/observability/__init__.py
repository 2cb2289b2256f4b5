"""Prometheus metrics, ``/health`` and ``/ready`` for the whole runner (``--metrics-listen``).

Design, for N worker processes forked by one parent:

- **Counters and the delivery histogram** are prometheus_client's multiprocess mode: the parent
  creates a private directory (``files.py``) and sets ``PROMETHEUS_MULTIPROC_DIR`` before it
  forks, each worker writes its own mmap files (``recorder.py``: one write per request, the
  delivery reports folded in every 0.1 s), and the parent's endpoint sums them all with a
  ``MultiProcessCollector``. When a worker dies its files are kept (merged into one archive
  file, so restarts do not pile up files): no count is lost.
- **Gauges are not mmap gauges.** Producer names are per worker process and producers get
  replaced; a multiprocess gauge cannot forget a label set, so a replaced producer's queue depth
  would stay exported forever. Instead every worker writes a small JSON report each second
  (``monitor.py``: in-flight requests, per-producer queue depth and broker reachability), the
  parent exports the gauges from the reports of the workers alive now, and deletes a dead
  worker's report when it reaps it: no stale gauge. The same reports answer ``/health``.
- **HTTP** is one server (``http.py``): the parent runs it on its existing poll loop (no thread
  and no asyncio in a process that forks); with ``--workers 1`` there is no fork and no parent,
  and the process runs it in a thread of its own, from the same directory.
- **Labels** never carry secrets or client-chosen text (``labels.py``): routes are APISIX route
  ids from the PrepareConf key, topics are the allow-listed ones actually produced to, errors
  are our answer codes and librdkafka's error names; routes and topics are capped per process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafkaupstream.observability.files import MetricsDir
from kafkaupstream.observability.http import Address, parse_address
from kafkaupstream.observability.report import RunnerStatus, RunnerView, WorkerState

if TYPE_CHECKING:
    from kafkaupstream.observability.monitor import Monitor, TelemetrySource
    from kafkaupstream.observability.recorder import Recorder


@dataclass(frozen=True, slots=True)
class MetricsSetup:
    """What ``--metrics-listen`` gives the runner's top process."""

    address: Address
    directory: MetricsDir


#: How often queued delivery reports are counted (see ``recorder.py``).
FOLD_EVERY_S = 0.1
#: Records pending this long without one successful delivery: ``/health`` is degraded.
STALL_AFTER_S = 10.0


class Telemetry:
    """One worker's metrics: made in the worker (after the fork), run by its server.

    The server counts every answer (:attr:`recorder`), starts the monitor when it starts and
    stops it around the plugins' close; the plugin's producer pool hands its delivery reports to
    :meth:`Recorder.delivery` so that they are counted too.
    """

    def __init__(self, directory: MetricsDir, *, stall_after_s: float = STALL_AFTER_S) -> None:
        """``stall_after_s``: records pending this long without a successful delivery make
        ``/health`` degraded (``--stall-after``)."""
        from kafkaupstream.observability.recorder import Recorder

        self.directory = directory
        self.stall_after_s = stall_after_s
        self.recorder: Recorder = Recorder()
        self._source: TelemetrySource | None = None
        self._monitor: Monitor | None = None
        self._folding: asyncio.TimerHandle | None = None

    def watch(self, source: TelemetrySource) -> None:
        """The plugin whose in-flight count, producers and refusals the monitor reports."""
        self._source = source

    def start(self) -> None:
        """On the worker's loop: start reporting and probing."""
        from kafkaupstream.observability.monitor import Monitor

        if self._source is not None:
            self._monitor = Monitor(
                self._source, self.directory, self.recorder, stall_after_s=self.stall_after_s
            )
            self._monitor.start()
        self._fold_later()

    async def stop(self) -> None:
        """Before the producers are flushed: no more probes; reports are still counted."""
        if self._monitor is not None:
            await self._monitor.stop()

    def close(self) -> None:
        """After the producers are flushed: count their last reports and refusals."""
        if self._folding is not None:
            self._folding.cancel()
            self._folding = None
        if self._monitor is not None:
            self._monitor.count_totals()
        self.recorder.fold()

    def _fold_later(self) -> None:
        self._folding = asyncio.get_running_loop().call_later(FOLD_EVERY_S, self._fold)

    def _fold(self) -> None:
        try:
            self.recorder.fold()
        finally:
            self._fold_later()


__all__ = [
    "STALL_AFTER_S",
    "Address",
    "MetricsDir",
    "MetricsSetup",
    "RunnerStatus",
    "RunnerView",
    "Telemetry",
    "WorkerState",
    "parse_address",
]
