"""A spool file's forwarder: produce its records in spool order, remove each after its report.

A batch is read in id order and handed to the route's producer (the pool's shared, idempotent
producer of the record's config) in that order, then awaited as a whole. Delivered records are
removed, records Kafka refuses for good become dead letters, and the rest (broker down, a dead
client, shutdown's purge) are produced again, from the first of them, after a growing pause.
Before a batch is handed over its last id is committed as the sent mark, so a later open can
count what may be delivered twice. Delivery is at least once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from kafkaupstream.logs import RateLimit, log_event
from kafkaupstream.producers import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    Failed,
    ProducerClosedError,
    ProducerConfigError,
    ProducerLimitReached,
    ProducerPool,
)
from kafkaupstream.spool.file import SpoolFile
from kafkaupstream.spool.store import StoredRecord

log = logging.getLogger(__name__)

#: Records read and produced at once: large enough that a batch fills librdkafka's batches,
#: small enough to bound what waits in the producer's queue while a broker is down.
BATCH = 512
#: ... and at most this many bytes (but at least one record): what a batch holds in memory.
BATCH_BYTES = 16 * 1024 * 1024
#: librdkafka reports every record within its ``message.timeout.ms`` (300 s by default), so a
#: wait of our own must not end first: a record still queued must never be produced twice.
_WAIT_S = 24 * 3600.0
_FIRST_PAUSE_S = 0.2
_MAX_PAUSE_S = 5.0
_LOG_INTERVAL_S = 5.0
#: Refusals that are the record's own fault: producing it again can never succeed. A client's
#: fatal error, an authentication failure or a timeout is not the record's fault: retried.
DEAD_LETTER_ERRORS = frozenset(
    {
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG_SIZE",
        "INVALID_RECORD",
        "RECORD_LIST_TOO_LARGE",
        "CORRUPT_MESSAGE",
        "_UNKNOWN_PARTITION",
        "_UNKNOWN_TOPIC",
        "UNKNOWN_TOPIC_OR_PART",
        "TOPIC_AUTHORIZATION_FAILED",
        "TOPIC_EXCEPTION",
        "_INVALID_ARG",
    }
)


class Forwarder:
    """Runs as one task per open spool file until :meth:`stop` (or an orphan file is drained)."""

    def __init__(self, file: SpoolFile, pool: Callable[[], ProducerPool]) -> None:
        self._file = file
        self._pool = pool
        self._stopping = asyncio.Event()
        self._retry_log = RateLimit(_LOG_INTERVAL_S)
        self._dead_log = RateLimit(_LOG_INTERVAL_S)

    def stop(self) -> None:
        """No new batch starts; the one in the producer ends with the pool's flush or purge."""
        self._stopping.set()

    async def run(self) -> None:
        """Forward until stopped; returns on its own when a taken-over file is empty."""
        while not self._stopping.is_set():
            try:
                await self._forward_all()
                return
            except Exception:
                # A bug must not stop the spool's delivery for good: log it, start over from
                # the head of the file (records not yet removed may be produced once more).
                name = self._file.name
                log_event(log, logging.ERROR, "spool_forwarder_failed", exc_info=True, file=name)
                await self._sleep(_MAX_PAUSE_S)

    async def _forward_all(self) -> None:
        after = 0
        pause = 0.0
        file = self._file
        while not self._stopping.is_set():
            file.changed.clear()
            try:
                batch = await file.read(after, BATCH, BATCH_BYTES)
            except sqlite3.Error:
                batch = []  # logged by the commits that fail too; try again shortly
                await self._sleep(_FIRST_PAUSE_S)
                continue
            if not batch:
                if not file.own and file.records == 0 and file.idle:
                    return
                await self._wait_for_records()
                continue
            await file.settle(sent_upto=batch[-1].id)
            outcomes = await self._hand_over(batch)
            delivered: list[StoredRecord] = []
            dead: list[tuple[StoredRecord, str, str]] = []
            retry: list[tuple[StoredRecord, str]] = []
            for stored, outcome in zip(batch, outcomes, strict=False):
                if isinstance(outcome, Delivered):
                    delivered.append(stored)
                elif isinstance(outcome, Failed) and outcome.error_name in DEAD_LETTER_ERRORS:
                    dead.append((stored, outcome.error_name, outcome.reason))
                elif isinstance(outcome, tuple):
                    dead.append((stored, *outcome))
                else:
                    retry.append((stored, _name(outcome)))
            if dead:
                self._log_dead(dead)
            if delivered or dead:
                await file.settle(removals=delivered, dead=dead)
            if len(outcomes) < len(batch):  # the rest was not handed over: a refusal stopped it
                retry += [(stored, "not_sent") for stored in batch[len(outcomes) :]]
            if retry:
                after = retry[0][0].id - 1
                pause = min(_MAX_PAUSE_S, max(_FIRST_PAUSE_S, pause * 2))
                self._retry_log.log(
                    log,
                    logging.WARNING,
                    "spool_forward_retry",
                    counted="batches",
                    file=file.name,
                    records=len(retry),
                    cause=retry[0][1],
                    pause_s=pause,
                )
                await self._sleep(pause)
            else:
                after = batch[-1].id
                pause = 0.0

    async def _hand_over(
        self, batch: list[StoredRecord]
    ) -> list[DeliveryOutcome | tuple[str, str] | None]:
        """Produce the batch in order and await every report; stop at the first retriable refusal.

        Each record's ``produce()`` runs in its task's first step, so one loop iteration after
        its task is made the record is queued or refused: a record refused at once (a full
        producer queue, a dead client) stops the batch there, so that no later record of it can
        overtake it in the partition.
        """
        tasks = []
        for stored in batch:
            task = asyncio.ensure_future(self._forward(stored))
            tasks.append(task)
            await asyncio.sleep(0)
            if task.done() and _retry_at_once(task.result()):
                break
        return list(await asyncio.gather(*tasks))

    async def _forward(self, stored: StoredRecord) -> DeliveryOutcome | tuple[str, str] | None:
        """The record's outcome; (error, reason) for a config librdkafka refuses; None: closed."""
        try:
            producer = self._pool().get_canonical(stored.config)
            return await producer.produce(stored.record, wait=True, timeout=_WAIT_S)
        except ProducerConfigError as exc:
            return ("config_refused", str(exc))
        except ProducerLimitReached:
            # The worker holds --max-producers already: retried like a full queue, never lost.
            return Backpressure(_MAX_PAUSE_S)
        except ProducerClosedError:
            return None

    def _log_dead(self, dead: list[tuple[StoredRecord, str, str]]) -> None:
        errors = collections.Counter(error for _stored, error, _reason in dead)
        self._dead_log.log(
            log,
            logging.ERROR,
            "spool_dead_letter",
            counted="batches",
            file=self._file.name,
            records=len(dead),
            topic=dead[0][0].record.topic,
            errors=dict(errors),
        )

    async def _wait_for_records(self) -> None:
        changed = asyncio.ensure_future(self._file.changed.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        # A taken-over file gets no new records: look again now and then whether it is drained.
        await asyncio.wait((changed, stopping), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (changed, stopping):
            waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _retry_at_once(outcome: DeliveryOutcome | tuple[str, str] | None) -> bool:
    if isinstance(outcome, Failed):
        return outcome.error_name not in DEAD_LETTER_ERRORS
    return outcome is None or isinstance(outcome, Backpressure)


def _name(outcome: object) -> str:
    if isinstance(outcome, Failed):
        return outcome.error_name
    return "producer_closed" if outcome is None else type(outcome).__name__
