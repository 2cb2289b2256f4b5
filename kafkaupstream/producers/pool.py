"""The producer pool: one producer per distinct config, made on first use, released when unused.

A producer costs four threads, five file descriptors and some CPU while idle, so the pool does not
keep one forever: its maintenance (once a second, on the event loop) releases a producer no
request has used for ``idle_after_s`` (the runner sets it to the conf-token TTL plus a grace
period: the tokens that used it have expired by then), and takes out of service a producer that
has had records pending (or timing out) without one successful delivery for its
``message.timeout.ms`` while its brokers answer metadata requests
(the next request gets a fresh client). A released or replaced producer is flushed, purged and
closed by its own poll thread, off the event loop. ``max_producers`` bounds how many one pool
holds: a request that would make one more is refused (:class:`ProducerLimitReached`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from confluent_kafka import Producer

from kafkaupstream.logs import log_event
from kafkaupstream.producers.config import ConfigKey, redact
from kafkaupstream.producers.pooled import (
    DeliveryObserver,
    PooledProducer,
    ProducerClosedError,
    ProducerFactory,
    ProducerStats,
)

_LOG = logging.getLogger(__name__)
#: A dead producer (fatal error, fenced producer id) is replaced at most this often per config,
#: so a broker that kills every new producer at once cannot make us churn clients per request.
REPLACE_INTERVAL_S = 1.0
#: How often the pool looks for idle and stalled producers.
MAINTAIN_EVERY_S = 1.0
#: What a released producer may spend delivering what it still holds (normally nothing: nobody
#: used it for a token's lifetime) before the rest is purged and counted.
RELEASE_FLUSH_S = 5.0
#: A stalled producer's brokers are asked for metadata at most this often, each time for at
#: most this long, before it is replaced (see ``_check_stalled``).
STALL_PROBE_EVERY_S = 5.0
STALL_PROBE_TIMEOUT_S = 1.0


class ProducerLimitReached(RuntimeError):
    """Making one more producer would exceed ``max_producers``; nothing was created."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the pool holds its maximum of {limit} producers")
        self.limit = limit


class ProducerPool:
    """Hands out :class:`PooledProducer` objects keyed by their canonical config.

    Routes with equal configs (in any order, nested or dotted, ``5`` or ``"5"``) share one
    producer; routes with different configs never do, and a producer's config never changes.
    A producer whose client died (librdkafka's fatal errors, such as a broker that lost the
    idempotent producer's state on restart) or stalled is replaced by a new one, so the runner
    recovers without a restart of its own.
    """

    def __init__(
        self,
        *,
        poll_interval: float = 0.05,
        retry_after_s: float = 1.0,
        factory: ProducerFactory = Producer,
        observer: DeliveryObserver | None = None,
        max_producers: int | None = None,
        idle_after_s: float | None = None,
    ) -> None:
        """``observer`` is handed to every producer (see :data:`DeliveryObserver`);
        ``max_producers`` None means no cap, ``idle_after_s`` None never releases."""
        if max_producers is not None and max_producers < 1:
            raise ValueError("max_producers must be at least 1")
        self._poll_interval = poll_interval
        self._retry_after_s = retry_after_s
        self._factory = factory
        self._max_producers = max_producers
        self._idle_after_s = idle_after_s
        self._producers: dict[ConfigKey, PooledProducer] = {}
        #: When each config's producer was made, to pace replacements.
        self._made_at: dict[ConfigKey, float] = {}
        #: Producers taken out of service; their poll threads flush, purge and close them.
        self._retired: list[PooledProducer] = []
        self._created = 0
        #: Producers replaced (dead or stalled) and released (unused) so far (for metrics).
        self.replaced = 0
        self.released = 0
        self._observer = observer
        # get_canonical() runs on the loop thread; the lock keeps a stray thread from racing it.
        self._lock = threading.Lock()
        self._closed = False
        self._maintenance: asyncio.TimerHandle | None = None
        #: Stalled producers whose brokers are being probed, and when each was last probed.
        self._probing: dict[ConfigKey, asyncio.Task[None]] = {}
        self._probed_at: dict[ConfigKey, float] = {}

    def get_canonical(self, key: ConfigKey) -> PooledProducer:
        """The producer for a config in canonical form, created (with its poll thread) on first use.

        Raises :class:`ProducerConfigError` when librdkafka refuses the config,
        :class:`ProducerLimitReached` when a new one would exceed ``max_producers``, and
        :class:`ProducerClosedError` after :meth:`close`.
        """
        found = self._producers.get(key)
        if found is not None and found.dead is None:
            found.used = True
            return found
        if self._closed:
            raise ProducerClosedError("the producer pool is closed")
        with self._lock:
            if self._closed:
                raise ProducerClosedError("the producer pool is closed")
            found = self._producers.get(key)
            if found is not None:
                if found.dead is None or time.monotonic() < self._made_at[key] + REPLACE_INTERVAL_S:
                    found.used = True
                    return found
                self._retire(key, found)
            elif self._max_producers is not None and len(self._producers) >= self._max_producers:
                raise ProducerLimitReached(self._max_producers)
            found = self._create(key, replaces=found)
        self._schedule_maintenance()
        return found

    def _create(self, key: ConfigKey, *, replaces: PooledProducer | None) -> PooledProducer:
        self._created += 1
        made = PooledProducer(
            f"producer-{self._created}",
            key,
            poll_interval=self._poll_interval,
            retry_after_s=self._retry_after_s,
            factory=self._factory,
            observer=self._observer,
        )
        self._producers[key] = made
        self._made_at[key] = time.monotonic()
        if replaces is None:
            log_event(
                _LOG,
                logging.INFO,
                "producer_created",
                producer=made.name,
                config=redact(key),
            )
        else:
            self.replaced += 1
            log_event(
                _LOG,
                logging.WARNING,
                "producer_replaced",
                producer=replaces.name,
                new=made.name,
                cause=replaces.dead,
            )
        return made

    def _retire(self, key: ConfigKey, producer: PooledProducer, flush_s: float = 0.0) -> None:
        """Out of service: its poll thread flushes for ``flush_s``, purges what is left (waiting
        requests then answer ``kafka_unavailable``) and closes it; close() joins it."""
        if self._producers.get(key) is producer:
            del self._producers[key]
            del self._made_at[key]
            self._probed_at.pop(key, None)
        producer.finish(time.monotonic() + flush_s)
        self._retired = [p for p in self._retired if not p.join(0)]
        self._retired.append(producer)

    # -- maintenance (the event loop, once a second) ---------------------------------------------

    def _schedule_maintenance(self) -> None:
        if self._maintenance is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop (a tool, a test): nothing to release
            return
        self._maintenance = loop.call_later(MAINTAIN_EVERY_S, self._maintain)

    def _maintain(self) -> None:
        self._maintenance = None
        try:
            self.maintain(time.monotonic())
        except Exception:
            log_event(_LOG, logging.ERROR, "pool_maintenance_failed", exc_info=True)
        if self._producers:
            self._schedule_maintenance()

    def maintain(self, now: float) -> None:
        """Release producers unused for ``idle_after_s``, take stalled ones out of service."""
        with self._lock:
            if self._closed:
                return
            for key, producer in list(self._producers.items()):
                if producer.used:
                    producer.used = False
                    producer.idle_since = now
                stalled_s = producer.sample_progress(now)
                # Sampled once a second, a record's whole timeout shows as up to a second less.
                timeout_s = producer.message_timeout_s
                stalled_for_timeout = stalled_s >= timeout_s - min(MAINTAIN_EVERY_S, timeout_s / 2)
                if stalled_for_timeout and producer.dead is None:
                    self._check_stalled(key, producer, now)
                elif self._idle(producer, now):
                    self._retire(key, producer, RELEASE_FLUSH_S)
                    self.released += 1
                    log_event(
                        _LOG,
                        logging.INFO,
                        "producer_released",
                        producer=producer.name,
                        idle_s=round(now - producer.idle_since, 1),
                        pending=producer.pending,
                    )

    def _check_stalled(self, key: ConfigKey, producer: PooledProducer, now: float) -> None:
        """Replace a stalled producer, unless its brokers do not answer (probed off the loop).

        Brokers that answer while nothing is delivered mean a stuck client, which a new one
        fixes; brokers that do not answer mean an outage, which a new client would not survive
        any better, and keeping the producer keeps it (and the outage) in ``/health``.
        """
        if key in self._probing or now < self._probed_at.get(key, 0.0) + STALL_PROBE_EVERY_S:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._probed_at[key] = now
        probe = loop.create_task(self._replace_if_reachable(key, producer))
        self._probing[key] = probe
        probe.add_done_callback(lambda _done: self._probing.pop(key, None))

    async def _replace_if_reachable(self, key: ConfigKey, producer: PooledProducer) -> None:
        reachable = await producer.reachable(STALL_PROBE_TIMEOUT_S)
        with self._lock:
            if not reachable or self._closed or self._producers.get(key) is not producer:
                return
            stalled_s = producer.stalled_for(time.monotonic())
            if stalled_s == 0.0:  # it delivered meanwhile
                return
            self._retire(key, producer)
            self.replaced += 1
        log_event(
            _LOG,
            logging.WARNING,
            "producer_replaced",
            producer=producer.name,
            cause="stalled",
            pending=producer.pending,
            stalled_s=round(stalled_s, 1),
            error=producer.last_delivery_error,
        )

    def _idle(self, producer: PooledProducer, now: float) -> bool:
        return (
            self._idle_after_s is not None
            and now - producer.idle_since >= self._idle_after_s
            and producer.waiters == 0
        )

    # -- observation -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._producers)

    @property
    def producers(self) -> tuple[PooledProducer, ...]:
        """Every producer in service now."""
        return tuple(self._producers.values())

    def stats(self) -> list[ProducerStats]:
        """A snapshot of every producer's queue depth, waiters and counters."""
        return [producer.stats() for producer in self.producers]

    # -- shutdown ----------------------------------------------------------------------------------

    async def close(self, timeout: float) -> int:
        """Flush all producers in parallel against one deadline ``timeout`` s away; return the
        records left.

        Each producer's own poll thread flushes it, so a hundred producers take no longer than
        one. Records not acknowledged when the budget runs out are counted, one warning per
        producer, from the producer's own count; a producer with requests still waiting is
        purged, so that they are answered ``kafka_unavailable``. The clients are not destroyed:
        this is the runner's shutdown and its process exits next (the threads of producers
        nobody waits on still flushing, outside the interpreter).
        """
        with self._lock:
            self._closed = True
            producers = tuple(self._producers.values())
            if self._maintenance is not None:
                self._maintenance.cancel()
                self._maintenance = None
            for probe in self._probing.values():
                probe.cancel()
        everyone = (*producers, *self._retired)
        if not everyone:
            return 0
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        for producer in producers:
            producer.finish(deadline, close=False)
        await asyncio.to_thread(_join_all, everyone, deadline)
        total = unfinished = 0
        for producer in producers:
            # A poll thread still flushing at the deadline: what it has not had reported yet is
            # undelivered, as far as anyone can tell before the process exits.
            left = producer.left
            if left is None:
                unfinished += 1
                left = producer.pending
            total += left
            if left:
                log_event(
                    _LOG,
                    logging.WARNING,
                    "flush_incomplete",
                    producer=producer.name,
                    left=left,
                    budget_s=round(timeout, 3),
                )
        log_event(
            _LOG,
            logging.INFO if not unfinished else logging.WARNING,
            "producers_closed",
            producers=len(producers),
            left=total,
            unfinished=unfinished,
            seconds=round(time.monotonic() - started, 3),
        )
        return total


def _join_all(producers: tuple[PooledProducer, ...], deadline: float) -> None:
    for producer in producers:
        producer.join(max(0.0, deadline - time.monotonic()))
