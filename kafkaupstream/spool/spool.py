"""One worker's spool: its own slot's file, the files it took over, their forwarders.

Opened when the worker starts (records spooled before a crash or a restart are forwarded without
waiting for traffic). A file that cannot be opened (locked by a runner still shutting down, a
directory that fails) is tried again every :data:`MAINTAIN_EVERY_S`; meanwhile spool routes are
answered ``503 spool_unavailable`` and every other route is served as usual.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kafkaupstream.logs import RateLimit, log_event
from kafkaupstream.producers import ConfigKey, KafkaRecord, ProducerPool
from kafkaupstream.spool.file import SpoolFile
from kafkaupstream.spool.forwarder import Forwarder
from kafkaupstream.spool.outcomes import (
    SpoolClosedError,
    SpoolFileStats,
    SpoolFull,
    SpoolOutcome,
    SpoolUnavailable,
)
from kafkaupstream.spool.slots import SlotLock, db_path, orphan_slots, remove_files
from kafkaupstream.spool.store import SpoolStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Per worker: what its own file may hold (records and dead letters, counted as key + value +
#: headers + topic bytes) before spool routes get ``503 backpressure``.
DEFAULT_MAX_BYTES = 1 << 30
#: ``/health`` is degraded while a spool's oldest record is older than this.
DEFAULT_MAX_AGE_S = 60.0
MAINTAIN_EVERY_S = 1.0
RETRY_AFTER_S = 1.0
_LOG_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    """``--spool-dir`` and its limits, plus this worker's slot among ``slots`` workers."""

    directory: str
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_s: float = DEFAULT_MAX_AGE_S
    slot: int = 0
    slots: int = 1


class Spool:
    """Made in the worker (after any fork), started on its loop, closed at shutdown."""

    def __init__(self, settings: SpoolSettings, pool: Callable[[], ProducerPool]) -> None:
        """``pool`` gives the plugin's producer pool (made on first use, in the worker)."""
        self.settings = settings
        self._pool = pool
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"kafkaupstream-spool-{settings.slot}"
        )
        self._own: SpoolFile | None = None
        self._files: dict[int, SpoolFile] = {}
        self._forwarders: dict[int, tuple[Forwarder, asyncio.Task[None]]] = {}
        self._unavailable = "not opened yet"
        self._maintenance: asyncio.Task[None] | None = None
        self._closing = False
        #: Counters of the taken-over files already drained and closed (see :meth:`counters`).
        self._retired = _Counters()
        self._open_log = RateLimit(_LOG_INTERVAL_S)
        self._full_log = RateLimit(_LOG_INTERVAL_S)

    async def start(self) -> None:
        """Open this slot's file and the orphans it takes over; keep trying what fails."""
        try:
            await self._maintain()
        except Exception:  # the runner serves its other routes whatever the spool does
            log_event(log, logging.ERROR, "spool_maintenance_failed", exc_info=True)
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain_forever())

    # -- requests --------------------------------------------------------------------------------

    async def append(self, config: ConfigKey, record: KafkaRecord) -> SpoolOutcome:
        """Spool a record; :class:`Spooled` once it is on disk. Raises SpoolClosedError."""
        if self._closing:
            raise SpoolClosedError("the spool is closing")
        own = self._own
        if own is None:
            return SpoolUnavailable(self._unavailable)
        if own.failing is not None and not own.idle:
            # A commit is failing: do not pile more requests onto it.
            return SpoolUnavailable(own.failing)
        if own.held_bytes >= self.settings.max_bytes:
            own.refused_full += 1
            self._full_log.log(
                log,
                logging.WARNING,
                "spool_full",
                counted="refused",
                file=own.name,
                bytes=own.held_bytes,
                max_bytes=self.settings.max_bytes,
            )
            return SpoolFull(RETRY_AFTER_S)
        return await own.append(config, record)

    # -- files -----------------------------------------------------------------------------------

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            try:
                await self._maintain()
            except Exception:
                log_event(log, logging.ERROR, "spool_maintenance_failed", exc_info=True)

    async def _maintain(self) -> None:
        settings = self.settings
        if self._own is None:
            self._own = await self._open(settings.slot, own=True)
        orphans = await asyncio.to_thread(
            orphan_slots, settings.directory, settings.slot, settings.slots
        )
        for slot in orphans:
            if slot not in self._files:
                await self._open(slot, own=False)
        for slot, (_forwarder, task) in list(self._forwarders.items()):
            # A drained taken-over file with dead letters stays open (and locked): its dead
            # letters stay in the gauges, and it is not opened again every second.
            if task.done() and slot != settings.slot and not self._files[slot].dead_letters:
                await self._retire(slot)

    async def _open(self, slot: int, *, own: bool) -> SpoolFile | None:
        directory = self.settings.directory
        lock = SlotLock(directory, slot)
        path = db_path(directory, slot)
        try:
            if own:
                await asyncio.to_thread(os.makedirs, directory, 0o700, True)
            if not lock.acquire():
                self._cannot_open(slot, own, "locked by another process")
                return None
            store = await self._run(SpoolStore, path)
        except (OSError, sqlite3.Error) as exc:
            lock.release()
            self._cannot_open(slot, own, str(exc))
            return None
        try:
            file = await self._run(SpoolFile, path, lock, store, self._executor, own=own)
        except (OSError, sqlite3.Error) as exc:  # not a database, or unreadable
            await self._run(store.close)
            lock.release()
            self._cannot_open(slot, own, str(exc))
            return None
        self._files[slot] = file
        log_event(
            log,
            logging.WARNING if file.possible_duplicates else logging.INFO,
            "spool_opened",
            file=file.name,
            own=own,
            records=file.records,
            bytes=file.bytes,
            dead_letters=file.dead_letters,
            possible_duplicates=file.possible_duplicates,
        )
        forwarder = Forwarder(file, self._pool)
        task = asyncio.get_running_loop().create_task(forwarder.run())
        self._forwarders[slot] = (forwarder, task)
        return file

    def _cannot_open(self, slot: int, own: bool, cause: str) -> None:
        if own:
            self._unavailable = cause
        self._open_log.log(
            log,
            logging.ERROR,
            "spool_open_failed",
            counted="count",
            directory=self.settings.directory,
            slot=slot,
            cause=cause,
        )

    async def _retire(self, slot: int) -> None:
        """A drained taken-over file without dead letters: closed and removed."""
        file = self._files.pop(slot)
        self._forwarders.pop(slot)
        self._retired = self._retired.plus(_Counters.of(file))
        await file.close()
        await asyncio.to_thread(remove_files, file.path)
        file.lock.release(remove=True)
        log_event(log, logging.INFO, "spool_drained", file=file.name, removed=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """On the database thread (SQLite objects stay on the thread that uses them)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # -- observation and shutdown ------------------------------------------------------------------

    def stats(self) -> list[SpoolFileStats]:
        """Every open file, this worker's own first."""
        return [file.stats() for file in sorted(self._files.values(), key=lambda f: not f.own)]

    def counters(self) -> dict[str, int]:
        """Totals since this process started, over every file it opened (for counters)."""
        total = self._retired
        for file in self._files.values():
            total = total.plus(_Counters.of(file))
        return dataclasses.asdict(total)

    @property
    def unavailable(self) -> str | None:
        """Why this worker's own file is not open, or None while it is."""
        return None if self._own is not None else self._unavailable

    def stop_forwarding(self) -> None:
        """Shutdown, before the producers are flushed: no new append, no new forwarded batch."""
        self._closing = True
        if self._maintenance is not None:
            self._maintenance.cancel()
        for forwarder, _task in self._forwarders.values():
            forwarder.stop()

    async def close(self, timeout: float) -> None:
        """After the flush: let the forwarders commit what was delivered, close every file.

        Bounded by ``timeout``: a disk that hangs a commit must not hold the exit (the kernel
        releases the locks when the process ends, and what was committed stays committed).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self.stop_forwarding()
        tasks = [task for _forwarder, task in self._forwarders.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=max(0.0, timeout * 0.8))
            for task in pending:
                task.cancel()
        for file in self._files.values():
            self._retired = self._retired.plus(_Counters.of(file))
            left = max(0.01, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_idle(file), timeout=left)
                await asyncio.wait_for(file.close(), timeout=max(0.01, deadline - time.monotonic()))
                file.lock.release()
        self._files.clear()
        self._executor.shutdown(wait=False)


@dataclass(frozen=True, slots=True)
class _Counters:
    forwarded: int = 0
    dead_lettered: int = 0
    possible_duplicates: int = 0
    write_errors: int = 0
    refused_full: int = 0

    @classmethod
    def of(cls, file: SpoolFile) -> _Counters:
        return cls(
            file.forwarded,
            file.dead_lettered,
            file.possible_duplicates,
            file.write_errors,
            file.refused_full,
        )

    def plus(self, other: _Counters) -> _Counters:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return _Counters(*(a + b for a, b in pairs))


async def _idle(file: SpoolFile) -> None:
    while not file.idle:
        await asyncio.sleep(0.005)
