"""The producer pool: one producer per distinct config, made on first use, flushed at shutdown."""

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


class ProducerPool:
    """Hands out :class:`PooledProducer` objects keyed by their canonical config.

    Routes with equal configs (in any order, nested or dotted, ``5`` or ``"5"``) share one
    producer; routes with different configs never do, and a producer's config never changes.
    A producer whose client died (librdkafka's fatal errors, such as a broker that lost the
    idempotent producer's state on restart) is replaced by a new one, so the runner recovers
    without a restart of its own.
    """

    def __init__(
        self,
        *,
        poll_interval: float = 0.05,
        retry_after_s: float = 1.0,
        factory: ProducerFactory = Producer,
        observer: DeliveryObserver | None = None,
    ) -> None:
        """``observer`` is handed to every producer (see :data:`DeliveryObserver`)."""
        self._poll_interval = poll_interval
        self._retry_after_s = retry_after_s
        self._factory = factory
        self._producers: dict[ConfigKey, PooledProducer] = {}
        #: When each config's producer was made, to pace replacements.
        self._made_at: dict[ConfigKey, float] = {}
        #: Dead producers taken out of service; their poll threads purge and close them.
        self._retired: list[PooledProducer] = []
        self._created = 0
        #: Producers replaced so far (for metrics).
        self.replaced = 0
        self._observer = observer
        # get_canonical() runs on the loop thread; the lock keeps a stray thread from racing it.
        self._lock = threading.Lock()
        self._closed = False

    def get_canonical(self, key: ConfigKey) -> PooledProducer:
        """The producer for a config in canonical form, created (with its poll thread) on first use.

        Raises :class:`ProducerConfigError` when librdkafka refuses the config, and
        :class:`ProducerClosedError` after :meth:`close`.
        """
        if self._closed:
            raise ProducerClosedError("the producer pool is closed")
        found = self._producers.get(key)
        if found is not None and found.dead is None:
            return found
        with self._lock:
            if self._closed:
                raise ProducerClosedError("the producer pool is closed")
            found = self._producers.get(key)
            if found is not None:
                if found.dead is None or time.monotonic() < self._made_at[key] + REPLACE_INTERVAL_S:
                    return found
                self._retire(found)
            found = self._create(key, replaces=found)
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

    def _retire(self, producer: PooledProducer) -> None:
        # Its poll thread purges what the dead client still holds (waiting requests then answer
        # kafka_unavailable) and closes it; close() joins it with the rest.
        producer.stop_polling()
        self._retired = [p for p in self._retired if not p.join(0)]
        self._retired.append(producer)

    def __len__(self) -> int:
        return len(self._producers)

    @property
    def producers(self) -> tuple[PooledProducer, ...]:
        """Every producer created so far."""
        return tuple(self._producers.values())

    def stats(self) -> list[ProducerStats]:
        """A snapshot of every producer's queue depth, waiters and counters."""
        return [producer.stats() for producer in self.producers]

    async def close(self, timeout: float) -> int:
        """Flush all producers in parallel within ``timeout`` s in total; return records left.

        Records still queued when the budget runs out are purged (their waiters answer
        ``kafka_unavailable``) and counted in one warning per producer.
        """
        with self._lock:
            self._closed = True
            producers = tuple(self._producers.values())
        if not producers:
            return 0
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        lefts = await asyncio.gather(
            *(asyncio.to_thread(producer.drain, deadline) for producer in producers)
        )
        for producer, left in zip(producers, lefts, strict=True):
            if left:
                log_event(
                    _LOG,
                    logging.WARNING,
                    "flush_incomplete",
                    producer=producer.name,
                    left=left,
                    budget_s=round(timeout, 3),
                )
        for producer in producers:
            producer.stop_polling()
        # The poll threads are daemons and end within one poll interval on their own: wait for
        # them only with whatever budget is left.
        await asyncio.to_thread(_join_all, (*producers, *self._retired), deadline)
        total = sum(lefts)
        log_event(
            _LOG,
            logging.INFO,
            "producers_closed",
            producers=len(producers),
            left=total,
            seconds=round(time.monotonic() - started, 3),
        )
        return total


def _join_all(producers: tuple[PooledProducer, ...], deadline: float) -> None:
    for producer in producers:
        producer.join(max(0.0, deadline - time.monotonic()))
