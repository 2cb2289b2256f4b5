"""One confluent-kafka Producer, its poll thread, and the bridge from delivery reports to asyncio.

``produce()`` runs on the event loop thread (it only appends to librdkafka's queue); a dedicated
thread sits in ``Producer.poll()``, which releases the GIL while it waits, and hands the delivery
reports of waiting requests to their event loop a poll's batch at a time (``bridge.py``).

The same thread ends the client (:meth:`PooledProducer.finish`): a released or replaced producer
is flushed until the deadline it is given, purged and closed; at shutdown it is flushed until the
process exits. Every producer thus flushes on a thread it already has, in parallel with all the
others, whether one is released or hundreds are flushed at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kafkaupstream.logs import RateLimit, log_event
from kafkaupstream.producers.bridge import ReportBridge
from kafkaupstream.producers.config import ConfigKey, ProducerConfigError, scrub
from kafkaupstream.producers.librdkafka_log import RateLimitedLog
from kafkaupstream.producers.outcomes import (
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    Failed,
    KafkaRecord,
    Queued,
    failure,
)
from kafkaupstream.producers.topics import TopicCatalog, TopicLookupFailed

_LOG = logging.getLogger(__name__)
#: syslog level 4: librdkafka formats nothing below warnings unless the config asks for it.
_DEFAULT_LOG_LEVEL = "4"
#: Failed fire-and-forget deliveries are logged at most this often (with a count), not per record.
_FAILURE_LOG_INTERVAL_S = 5.0
#: Kept back from a finish deadline for purging what is left and serving the purge's reports.
_PURGE_WAIT_S = 0.05
#: Kept back from a finish deadline for closing the client once it is flushed and purged.
_CLOSE_RESERVE_S = 0.05
#: At shutdown a flush may run on past the deadline: the process exits first (see _end_client).
_SHUTDOWN_FLUSH_OVERRUN_S = 5.0
#: librdkafka's default ``message.timeout.ms``: how long it tries to deliver one record.
_DEFAULT_MESSAGE_TIMEOUT_MS = 300_000
#: Delivery errors after which this client can never produce again (its producer id is fenced or
#: its epoch refused); with librdkafka's fatal errors they make the pool replace the producer.
_DEAD_CLIENT_ERRORS = frozenset(
    {KafkaError._FATAL, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)

ProducerFactory: TypeAlias = Callable[[dict[str, Any]], Producer]
#: Told of every delivery report and every record refused at produce time, on whichever thread
#: serves them: (topic, error or None, produce-to-report latency in seconds or None). Metrics.
DeliveryObserver: TypeAlias = Callable[[str | None, KafkaError | None, float | None], None]


class ProducerClosedError(RuntimeError):
    """``produce()`` after the pool was closed: the server must stop routing requests first."""


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot for metrics and health: counters since creation, gauges now."""

    name: str
    #: librdkafka's ``len(producer)``: records queued or in flight, plus reports and events
    #: (errors, logs) not yet served by the poll thread.
    queue_depth: int
    #: Requests awaiting a delivery report now.
    waiters: int
    delivered: int
    failed: int
    backpressured: int
    last_error: str | None
    #: Records produced whose delivery report has not come yet (queued or in flight).
    pending: int
    #: How long it has had records pending or timing out without a successful delivery.
    stalled_s: float
    #: librdkafka's error name on the last failed delivery report, if any.
    last_delivery_error: str | None


class _ErrorTracker:
    """librdkafka's ``error_cb``; apart from the producer object so the two form no cycle."""

    __slots__ = ("dead", "last", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: str | None = None
        #: Why the client can never produce again (a fatal error, a fenced producer id), or None.
        self.dead: str | None = None

    def __call__(self, error: KafkaError) -> None:
        # librdkafka already logs transport errors through the logger; keep the last for health.
        self.last = error.name()
        if error.fatal():
            self.mark_dead(error)
        else:
            log_event(_LOG, logging.DEBUG, "producer_error", producer=self.name, error=error.name())

    def mark_dead(self, error: KafkaError) -> None:
        """Any thread: the first cause is kept and logged once; the pool replaces the producer."""
        if self.dead is None:
            self.dead = error.name()
            log_event(
                _LOG,
                logging.ERROR,
                "producer_fatal",
                producer=self.name,
                error=self.dead,
                action="replace",
            )


def _settle(future: asyncio.Future[DeliveryOutcome], outcome: DeliveryOutcome) -> None:
    """Runs on the loop: the waiter may be gone (timed out, cancelled), which is fine."""
    if not future.done():
        future.set_result(outcome)


def _settle_all(futures: list[asyncio.Future[DeliveryOutcome]], outcome: DeliveryOutcome) -> None:
    """Runs on the loop: a batch's deadline passed; the reports still missing time out."""
    for future in futures:
        if not future.done():
            future.set_result(outcome)


class PooledProducer:
    """A producer shared by every route whose config has this :class:`ConfigKey`."""

    def __init__(
        self,
        name: str,
        config: ConfigKey,
        *,
        poll_interval: float = 0.05,
        retry_after_s: float = 1.0,
        factory: ProducerFactory = Producer,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._observer = observer
        self._poll_interval = poll_interval
        self._backpressure = Backpressure(retry_after_s)
        self._closed = False
        #: Set by the pool on every use and cleared by its maintenance (once a second): the idle
        #: clock of this producer costs one attribute store per request.
        self.used = True
        self.idle_since = time.monotonic()
        #: Records not acknowledged by its finish deadline, once its poll thread has ended.
        self.left: int | None = None
        self.message_timeout_s = _message_timeout_ms(config) / 1000
        # Each counter has one writing thread: the loop (produced, waiters, refused,
        # backpressured) or the thread serving delivery reports (delivered, failed).
        self._produced = 0
        #: Delivery reports of records that could not be delivered for now (retriable errors:
        #: timed out, broker unavailable), as opposed to records refused for good.
        self._undelivered = 0
        self._last_delivery_error: str | None = None
        self._delivered_seen = 0
        self._undelivered_seen = 0
        self._stalled_since: float | None = None
        self._finish_by = 0.0
        self._close_client = True
        self._waiters = 0
        self._refused = 0
        self._backpressured = 0
        self._delivered = 0
        self._failed = 0
        self._errors = _ErrorTracker(name)
        self._failure_log = RateLimit(_FAILURE_LOG_INTERVAL_S)
        # Hands delivery reports to the loop of the requests waiting for them (one per process).
        self._bridge: ReportBridge | None = None
        settings: dict[str, Any] = dict(config)
        settings.setdefault("log_level", _DEFAULT_LOG_LEVEL)
        settings["logger"] = RateLimitedLog(name, scrub=partial(scrub, config=config))
        settings["error_cb"] = self._errors
        try:
            self._producer = factory(settings)
        except (KafkaException, ValueError, TypeError) as exc:
            raise ProducerConfigError(
                f"librdkafka refused the producer config: {scrub(str(exc), config)}"
            ) from None
        # Closing the client must not overlap a call from another thread (stats, health, flush).
        self._client_lock = threading.Lock()
        self._client_open = True
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._poll_forever, name=f"kafkaupstream-poll-{name}", daemon=True
        )
        self._thread.start()
        #: The topics its brokers know (for topics a client chose: never created on request).
        self.topics = TopicCatalog(self._topic_names)

    # -- the hot path ----------------------------------------------------------------------------

    async def produce(self, record: KafkaRecord, *, wait: bool, timeout: float) -> DeliveryOutcome:
        """Queue ``record``; with ``wait``, also await its delivery report for ``timeout`` s.

        Never raises for Kafka conditions: a full queue is :class:`Backpressure` (not retried
        here), a refused record or failed delivery is :class:`Failed`, and a report that does not
        come in time is :class:`DeliveryTimeout` (the record may still be delivered later).
        """
        if self._closed:
            raise ProducerClosedError(f"{self.name} is closed")
        if not wait:
            refused = self._produce(record, self._on_unwatched_delivery)
            return refused if refused is not None else Queued(record.topic)
        loop = asyncio.get_running_loop()
        bridge = self._bridge
        if bridge is None or bridge.loop is not loop:
            bridge = self._bridge = ReportBridge(loop)
        future: asyncio.Future[DeliveryOutcome] = loop.create_future()
        refused = self._produce(record, partial(self._on_watched_delivery, bridge, future))
        if refused is not None:
            return refused
        self._waiters += 1
        timer = loop.call_at(loop.time() + timeout, _settle, future, DeliveryTimeout(timeout))
        try:
            return await future
        finally:
            timer.cancel()
            self._waiters -= 1

    async def produce_all(
        self, records: Sequence[KafkaRecord], *, wait: bool, timeout: float
    ) -> list[DeliveryOutcome]:
        """:meth:`produce` for many records in order, one outcome each; one deadline for all.

        Queueing stops at the first full queue and every later record gets the same
        :class:`Backpressure` unqueued, so a client that resends the refused ones keeps their
        order. A record refused for itself (:class:`Failed`) does not stop the others.
        """
        if self._closed:
            raise ProducerClosedError(f"{self.name} is closed")
        outcomes: list[DeliveryOutcome | None] = []
        waiting: list[tuple[int, asyncio.Future[DeliveryOutcome]]] = []
        loop = asyncio.get_running_loop()
        bridge = self._bridge
        if bridge is None or bridge.loop is not loop:
            bridge = self._bridge = ReportBridge(loop)
        for record in records:
            outcome: DeliveryOutcome | None
            if wait:
                future: asyncio.Future[DeliveryOutcome] = loop.create_future()
                outcome = self._produce(record, partial(self._on_watched_delivery, bridge, future))
                if outcome is None:
                    waiting.append((len(outcomes), future))
            else:
                refused = self._produce(record, self._on_unwatched_delivery)
                outcome = Queued(record.topic) if refused is None else refused
            outcomes.append(outcome)
            if type(outcome) is Backpressure:
                outcomes.extend([outcome] * (len(records) - len(outcomes)))
                break
        if waiting:
            futures = [future for _, future in waiting]
            self._waiters += len(futures)
            timer = loop.call_at(
                loop.time() + timeout, _settle_all, futures, DeliveryTimeout(timeout)
            )
            try:
                for future in futures:
                    await future
            finally:
                timer.cancel()
                self._waiters -= len(futures)
            for index, future in waiting:
                outcomes[index] = future.result()
        return cast(list[DeliveryOutcome], outcomes)

    def _produce(
        self, record: KafkaRecord, on_delivery: Callable[[KafkaError | None, Message], None]
    ) -> Backpressure | Failed | None:
        try:
            self._producer.produce(
                record.topic,
                record.value,
                record.key,
                partition=record.partition,
                headers=list(record.headers) if record.headers else None,
                on_delivery=on_delivery,
            )
        except BufferError:
            self._backpressured += 1
            return self._backpressure
        except KafkaException as exc:
            self._refused += 1
            if self._observer is not None:
                self._observer(record.topic, exc.args[0], None)
            if exc.args[0].code() in _DEAD_CLIENT_ERRORS:
                self._errors.mark_dead(exc.args[0])
            return failure(exc.args[0])
        self._produced += 1
        return None

    # -- callbacks (poll thread, or whichever thread serves the queue) ---------------------------

    def _on_watched_delivery(
        self,
        bridge: ReportBridge,
        future: asyncio.Future[DeliveryOutcome],
        error: KafkaError | None,
        message: Message,
    ) -> None:
        if self._observer is not None:
            self._observer(message.topic(), error, message.latency())
        bridge.settle(future, self._outcome(error, message))

    def _on_unwatched_delivery(self, error: KafkaError | None, message: Message) -> None:
        if self._observer is not None:
            self._observer(message.topic(), error, message.latency())
        if error is None:  # every queued record's report, on the poll thread: just count it
            self._delivered += 1
            return
        outcome = self._outcome(error, message)
        if isinstance(outcome, Failed):
            self._log_unwatched_failure(outcome, message.topic())

    def _outcome(self, error: KafkaError | None, message: Message) -> Delivered | Failed:
        if error is None:
            self._delivered += 1
            return Delivered(message.topic() or "", message.partition() or 0, message.offset() or 0)
        self._failed += 1
        self._last_delivery_error = error.name()
        if error.fatal() or error.code() in _DEAD_CLIENT_ERRORS:
            self._errors.mark_dead(error)
        failed = failure(error)
        if failed.retriable:
            self._undelivered += 1
        return failed

    def _log_unwatched_failure(self, outcome: Failed, topic: str | None) -> None:
        self._failure_log.log(
            _LOG,
            logging.WARNING,
            "queued_record_lost",
            counted="count",
            producer=self.name,
            topic=topic,
            error=outcome.error_name,
        )

    def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(self._poll_interval)
            except Exception as exc:
                error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
                if isinstance(error, KafkaError) and error.fatal():
                    # poll() raises librdkafka's fatal errors (e.g. the broker lost this
                    # idempotent producer's state): this client is done; the pool replaces it.
                    self._errors.mark_dead(error)
                else:
                    # A bug in a callback must not stop delivery reports for everyone else.
                    log_event(_LOG, logging.ERROR, "poll_failed", exc_info=True, producer=self.name)
        self._end_client()

    def _end_client(self) -> None:
        """The poll thread's last act: flush until the finish deadline, then purge and close.

        close() would block for up to message.timeout.ms on queued records, hence the purge; it
        makes every still-waiting request settle now (as ``kafka_unavailable``) and every queued
        record count as failed. At shutdown (no close) with no request waiting (the server
        answers every request before it closes the plugins) there is nothing to settle: the
        flush goes on past the deadline, until the process exits, and the pool counts at the
        deadline what is still pending. So hundreds of producers never all need the interpreter
        in the last milliseconds of the budget, when the event loop needs it to finish.
        """
        with self._client_lock:
            if not self._close_client and not self._waiters:
                remaining = self._finish_by - time.monotonic()
                self._producer.flush(max(0.0, remaining) + _SHUTDOWN_FLUSH_OVERRUN_S)
                self.left = self.pending
                return
            deadline = self._finish_by - (_CLOSE_RESERVE_S if self._close_client else 0.0)
            self._producer.flush(max(0.0, deadline - time.monotonic() - _PURGE_WAIT_S))
            # Our own count, not len(), which counts pending events too: every record produced
            # and not reported by now is undelivered, and is counted as such even if its purge
            # report comes too late to be served.
            left = self.pending
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.poll(0)
            while self.pending and time.monotonic() < deadline:
                self._producer.poll(0.005)  # the purge's reports: waiting requests are answered
            if self._close_client:
                self._producer.close()
            self._client_open = False
        self.left = left
        if left and self._close_client:  # at shutdown the pool counts and logs instead
            log_event(_LOG, logging.WARNING, "flush_incomplete", producer=self.name, left=left)

    # -- observation -----------------------------------------------------------------------------

    @property
    def config(self) -> ConfigKey:
        """The canonical config it was made with (secrets included: redact before showing)."""
        return self._config

    @property
    def dead(self) -> str | None:
        """Why this client can never produce again (the error's name), or None while it can."""
        return self._errors.dead

    @property
    def waiters(self) -> int:
        """Requests awaiting a delivery report now."""
        return self._waiters

    @property
    def last_delivery_error(self) -> str | None:
        """librdkafka's error name on the last failed delivery report, if any."""
        return self._last_delivery_error

    @property
    def pending(self) -> int:
        """Records produced and not reported yet: what a stalled client holds."""
        return max(0, self._produced - self._delivered - self._failed)

    def sample_progress(self, now: float) -> float:
        """The loop, about once a second: for how long records have been pending or timing out
        without one successful delivery.

        A sample, not a per-record clock: the counts are compared with the previous sample's,
        so the hot path pays nothing and the figure is late by at most one interval. The clock
        runs on while records time out (a stuck client under light traffic has none pending
        between one record's timeout and the next request), and stops at a success, or when
        nothing is pending and nothing failed since the last sample.
        """
        delivered, undelivered = self._delivered, self._undelivered
        failing = undelivered != self._undelivered_seen
        self._undelivered_seen = undelivered
        if delivered != self._delivered_seen or not (failing or self.pending):
            self._delivered_seen = delivered
            self._stalled_since = None
            return 0.0
        if self._stalled_since is None:
            self._stalled_since = now
        return now - self._stalled_since

    def stalled_for(self, now: float) -> float:
        """Seconds stalled as of the last :meth:`sample_progress` (0: not stalled)."""
        since = self._stalled_since
        return 0.0 if since is None else now - since

    def stats(self) -> ProducerStats:
        """Queue depth (librdkafka's ``len``), waiting requests and delivery counters."""
        with self._client_lock:
            queue_depth = len(self._producer) if self._client_open else 0
        return ProducerStats(
            name=self.name,
            queue_depth=queue_depth,
            waiters=self._waiters,
            delivered=self._delivered,
            failed=self._failed + self._refused,
            backpressured=self._backpressured,
            last_error=self._errors.last,
            pending=self.pending,
            stalled_s=self.stalled_for(time.monotonic()),
            last_delivery_error=self.last_delivery_error,
        )

    async def reachable(self, timeout: float = 1.0) -> bool:
        """True when a broker answers a metadata request within ``timeout`` s (off the loop)."""
        return await asyncio.to_thread(self._answers_metadata, timeout)

    def _answers_metadata(self, timeout: float) -> bool:
        with self._client_lock:
            if not self._client_open:
                return False
            try:
                self._producer.list_topics(timeout=timeout)
            except KafkaException:
                return False
            return True

    def _topic_names(self, timeout: float) -> frozenset[str]:
        """Blocking: every topic's name from an all-topics metadata request (which creates none)."""
        with self._client_lock:
            if not self._client_open:
                raise TopicLookupFailed("the producer is closed")
            try:
                metadata = self._producer.list_topics(timeout=timeout)
            except KafkaException as exc:
                raise TopicLookupFailed(exc.args[0].name()) from None
        return frozenset(metadata.topics)  # listed is existing (leader or not)

    # -- shutdown --------------------------------------------------------------------------------

    def finish(self, deadline: float, *, close: bool = True) -> None:
        """Any thread, never blocks: refuse new records, and have the poll thread flush until
        ``deadline`` (monotonic), purge what is left and close the client (see :attr:`left`).

        ``close=False`` is the shutdown: the client is left to the process exit, which is next
        (destroying a client joins its threads, milliseconds of CPU each, and hundreds would
        outlast the budget), and unless requests still wait on it, it is not purged either but
        flushed on until the exit (see ``_end_client``).
        """
        self._closed = True
        self._finish_by = deadline
        self._close_client = close
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Blocking: wait up to ``timeout`` s for the poll thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<PooledProducer {self.name} waiters={self._waiters} closed={self._closed}>"


def _message_timeout_ms(config: ConfigKey) -> float:
    """The config's ``message.timeout.ms`` (or its alias), librdkafka's default if unset or odd."""
    properties = dict(config)
    text = properties.get("message.timeout.ms", properties.get("delivery.timeout.ms"))
    try:
        value = float(text) if text is not None else _DEFAULT_MESSAGE_TIMEOUT_MS
    except ValueError:
        return _DEFAULT_MESSAGE_TIMEOUT_MS
    return value if value > 0 else _DEFAULT_MESSAGE_TIMEOUT_MS
