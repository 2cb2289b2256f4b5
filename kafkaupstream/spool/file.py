"""One open spool file on the event loop's side: group commit, counters, the forwarder's calls.

Requests append records; the first append of a loop turn schedules one commit for the end of
the turn, and whatever arrives while a commit runs on the database thread goes into the next:
one fsync covers every request of a turn (or of a commit's duration), which keeps throughput
near the disk's fsync rate times the batch size. The forwarder's removals (after delivery
reports) and dead letters ride along in the same transactions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kafkaupstream.logs import RateLimit
from kafkaupstream.producers import ConfigKey, KafkaRecord
from kafkaupstream.spool.outcomes import Spooled, SpoolFileStats, SpoolOutcome, SpoolUnavailable
from kafkaupstream.spool.slots import SlotLock
from kafkaupstream.spool.store import SpoolStore, StoredRecord, record_size

log = logging.getLogger(__name__)

T = TypeVar("T")
#: After a failed commit the next one waits this long: a broken disk must not spin the loop.
_RETRY_COMMIT_S = 0.2
_ERROR_LOG_INTERVAL_S = 5.0


class SpoolFile:
    """An open, locked spool file; all its database calls run on the spool's one thread."""

    def __init__(
        self,
        path: str,
        lock: SlotLock,
        store: SpoolStore,
        executor: concurrent.futures.ThreadPoolExecutor,
        *,
        own: bool,
    ) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.lock = lock
        self.own = own
        self._store: SpoolStore | None = store
        self._executor = executor
        totals = store.totals()
        self.records = totals.records
        self.bytes = totals.bytes
        self.dead_letters = totals.dead_letters
        self.dead_bytes = totals.dead_letter_bytes
        self.oldest_created = totals.oldest_created
        self.possible_duplicates = store.possible_duplicates()
        self.forwarded = 0
        self.dead_lettered = 0
        self.write_errors = 0
        self.refused_full = 0
        self.failing: str | None = None
        #: Set when a commit added records (the forwarder waits on it when it has read all).
        self.changed = asyncio.Event()
        self._appends: list[tuple[ConfigKey, KafkaRecord, float, int]] = []
        self._append_waiters: list[asyncio.Future[SpoolOutcome]] = []
        self._pending_bytes = 0
        self._removals: list[StoredRecord] = []
        self._dead: list[tuple[StoredRecord, str, str]] = []
        self._sent_upto: int | None = None
        self._settle_waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._committing = False
        self._error_log = RateLimit(_ERROR_LOG_INTERVAL_S)
        self._closed = False

    # -- requests ---------------------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """What counts against ``--spool-max-bytes``: records, dead letters, pending appends."""
        return self.bytes + self.dead_bytes + self._pending_bytes

    def append(self, config: ConfigKey, record: KafkaRecord) -> asyncio.Future[SpoolOutcome]:
        """Queue a record for the next group commit; the future settles once it is fsync'ed."""
        size = record_size(record)
        future: asyncio.Future[SpoolOutcome] = asyncio.get_running_loop().create_future()
        self._appends.append((config, record, time.time(), size))
        self._append_waiters.append(future)
        self._pending_bytes += size
        self._schedule()
        return future

    # -- the forwarder ----------------------------------------------------------------------------

    async def read(self, after: int, limit: int, max_bytes: int) -> list[StoredRecord]:
        """Records in spool order after id ``after``; raises ``sqlite3.Error`` on a disk error."""
        return await self._run(self._read_job, after, limit, max_bytes)

    def settle(
        self,
        *,
        removals: list[StoredRecord] | None = None,
        dead: list[tuple[StoredRecord, str, str]] | None = None,
        sent_upto: int | None = None,
    ) -> asyncio.Future[None]:
        """Queue removals, dead letters or the sent mark; settles once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals += removals or ()
        self._dead += dead or ()
        if sent_upto is not None:
            self._sent_upto = max(sent_upto, self._sent_upto or 0)
        self._settle_waiters.append(future)
        self._schedule()
        return future

    @property
    def idle(self) -> bool:
        """Nothing queued and no commit running."""
        return not (self._committing or self._appends or self._settle_waiters)

    # -- group commit -----------------------------------------------------------------------------

    def _schedule(self, delay: float = 0.0) -> None:
        if self._scheduled or self._committing:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        if delay:
            loop.call_later(delay, self._start_commit)
        else:
            loop.call_soon(self._start_commit)

    def _start_commit(self) -> None:
        self._scheduled = False
        if self._committing or not (self._appends or self._settle_waiters):
            return
        if self._closed:
            self._fail_appends("the spool is closed")
            return
        appends, waiters = self._appends, self._append_waiters
        removals, dead, sent_upto = self._removals, self._dead, self._sent_upto
        settles = self._settle_waiters
        self._appends, self._append_waiters, self._pending_bytes = [], [], 0
        self._removals, self._dead, self._sent_upto, self._settle_waiters = [], [], None, []
        self._committing = True
        job = self._executor.submit(
            self._commit_job, appends, [r.id for r in removals], dead, sent_upto
        )
        asyncio.wrap_future(job).add_done_callback(
            lambda done: self._committed(done, appends, waiters, removals, dead, sent_upto, settles)
        )

    def _committed(
        self,
        done: asyncio.Future[float | None],
        appends: list[tuple[ConfigKey, KafkaRecord, float, int]],
        waiters: list[asyncio.Future[SpoolOutcome]],
        removals: list[StoredRecord],
        dead: list[tuple[StoredRecord, str, str]],
        sent_upto: int | None,
        settles: list[asyncio.Future[None]],
    ) -> None:
        self._committing = False
        error = done.exception()
        if error is None:
            self.failing = None
            self.oldest_created = done.result()
            self.records += len(appends) - len(removals) - len(dead)
            self.bytes += sum(a[3] for a in appends) - sum(r.size for r in removals)
            self.bytes -= sum(d[0].size for d in dead)
            self.dead_letters += len(dead)
            self.dead_bytes += sum(d[0].size for d in dead)
            self.forwarded += len(removals)
            self.dead_lettered += len(dead)
            for (_config, record, _created, _size), waiter in zip(appends, waiters, strict=True):
                if not waiter.done():
                    waiter.set_result(Spooled(record.topic))
            for settle in settles:
                if not settle.done():
                    settle.set_result(None)
            if appends:
                self.changed.set()
            self._schedule()
            return
        # Nothing of this transaction is stored: the appends are refused (their clients get
        # 503 and nothing was accepted), the forwarder's changes are tried again.
        cause = _cause(error)
        self.failing = cause
        self.write_errors += 1
        self._error_log.log(
            log, logging.ERROR, "spool_write_failed", counted="count", file=self.name, cause=cause
        )
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(SpoolUnavailable(cause))
        self._removals = removals + self._removals
        self._dead = dead + self._dead
        if sent_upto is not None:
            self._sent_upto = max(sent_upto, self._sent_upto or 0)
        self._settle_waiters = settles + self._settle_waiters
        self._schedule(_RETRY_COMMIT_S)

    def _fail_appends(self, cause: str) -> None:
        waiters, self._append_waiters = self._append_waiters, []
        self._appends, self._pending_bytes = [], 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(SpoolUnavailable(cause))

    # -- the database thread ----------------------------------------------------------------------

    def _opened(self) -> SpoolStore:
        """The store, opened afresh after an I/O error closed it (SQLite recovers at open)."""
        if self._store is None:
            self._store = SpoolStore(self.path)
        return self._store

    def _commit_job(
        self,
        appends: list[tuple[ConfigKey, KafkaRecord, float, int]],
        removals: list[int],
        dead: list[tuple[StoredRecord, str, str]],
        sent_upto: int | None,
    ) -> float | None:
        """One transaction; the head of the spool after it."""
        store = self._opened()
        try:
            store.commit(appends, removals, dead, sent_upto)
        except sqlite3.Error as exc:
            if "full" not in str(exc):
                # An I/O error may leave the connection unusable: the next commit reopens.
                self._store = None
                with contextlib.suppress(sqlite3.Error):
                    store.close()
            raise
        return store.oldest_created()

    def _read_job(self, after: int, limit: int, max_bytes: int) -> list[StoredRecord]:
        return self._opened().read(after, limit, max_bytes)

    def _close_job(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- observation and closing ------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.failing is None

    def stats(self) -> SpoolFileStats:
        return SpoolFileStats(
            file=self.name,
            own=self.own,
            available=self.available,
            records=self.records,
            bytes=self.bytes,
            oldest_created=self.oldest_created,
            dead_letters=self.dead_letters,
            forwarded=self.forwarded,
            dead_lettered=self.dead_lettered,
            possible_duplicates=self.possible_duplicates,
            write_errors=self.write_errors,
            refused_full=self.refused_full,
        )

    async def close(self) -> None:
        """After the last commit: close the database (on its thread) and unlock the file."""
        self._closed = True
        self._fail_appends("the spool is closed")
        await self._run(self._close_job)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _cause(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__
