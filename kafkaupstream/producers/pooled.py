"""One confluent-kafka Producer, its poll thread, and the bridge from delivery reports to asyncio.

``produce()`` runs on the event loop thread (it only appends to librdkafka's queue); a dedicated
thread sits in ``Producer.poll()``, which releases the GIL while it waits, and hands the delivery
reports of waiting requests to their event loop a poll's batch at a time (``bridge.py``).
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

_LOG = logging.getLogger(__name__)
#: syslog level 4: librdkafka formats nothing below warnings unless the config asks for it.
_DEFAULT_LOG_LEVEL = "4"
#: Failed fire-and-forget deliveries are logged at most this often (with a count), not per record.
_FAILURE_LOG_INTERVAL_S = 5.0
#: Kept back from the shutdown flush for purging what is left and counting its reports.
_PURGE_WAIT_S = 0.05
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
        # Each counter has one writing thread: the loop (waiters, refused, backpressured) or
        # the thread serving delivery reports (delivered, failed).
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
        if error.fatal() or error.code() in _DEAD_CLIENT_ERRORS:
            self._errors.mark_dead(error)
        return failure(error)

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
        # close() would block for up to message.timeout.ms on queued records: purge first
        # (drain() normally left none).
        with self._client_lock:
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.poll(0)
            self._producer.close()
            self._client_open = False

    # -- observation -----------------------------------------------------------------------------

    @property
    def config(self) -> ConfigKey:
        """The canonical config it was made with (secrets included: redact before showing)."""
        return self._config

    @property
    def dead(self) -> str | None:
        """Why this client can never produce again (the error's name), or None while it can."""
        return self._errors.dead

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

    # -- shutdown --------------------------------------------------------------------------------

    def drain(self, deadline: float) -> int:
        """Blocking: flush until ``deadline`` (monotonic), purge what is left, return that count.

        Purging makes every still-waiting request settle now (as ``kafka_unavailable``) instead
        of when the process is killed.
        """
        self._closed = True
        with self._client_lock:
            if not self._client_open:
                return 0
            left = int(self._producer.flush(max(0.0, deadline - time.monotonic() - _PURGE_WAIT_S)))
            if left:
                # len() counts pending events too: count the purge's failure reports instead
                # (served here or by the poll thread; in-flight ones come a moment later).
                failed = self._failed
                self._producer.purge(in_queue=True, in_flight=True)
                self._producer.flush(_PURGE_WAIT_S)
                left = self._failed - failed
            return left

    def stop_polling(self) -> None:
        """Ask the poll thread to stop; it closes the client within one poll interval."""
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Blocking: wait up to ``timeout`` s for the poll thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<PooledProducer {self.name} waiters={self._waiters} closed={self._closed}>"
