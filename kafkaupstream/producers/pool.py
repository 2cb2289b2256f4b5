"""The producer pool: one producer per distinct config, made on first use, flushed at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

from confluent_kafka import Producer

from kafkaupstream.producers.config import ConfigKey, ProducerConfig, canonical_config, redact
from kafkaupstream.producers.pooled import (
    PooledProducer,
    ProducerClosedError,
    ProducerFactory,
    ProducerStats,
)

_LOG = logging.getLogger(__name__)


class ProducerPool:
    """Hands out :class:`PooledProducer` objects keyed by their canonical config.

    Routes with equal configs (in any order, nested or dotted, ``5`` or ``"5"``) share one
    producer; routes with different configs never do, and a producer's config never changes.
    """

    def __init__(
        self,
        *,
        poll_interval: float = 0.05,
        retry_after_s: float = 1.0,
        factory: ProducerFactory = Producer,
    ) -> None:
        self._poll_interval = poll_interval
        self._retry_after_s = retry_after_s
        self._factory = factory
        self._producers: dict[ConfigKey, PooledProducer] = {}
        # get() normally runs on the loop thread; the lock keeps a stray thread from racing it.
        self._lock = threading.Lock()
        self._closed = False

    def get(self, config: ProducerConfig) -> PooledProducer:
        """The producer for ``config``, created (and its poll thread started) on first use.

        Raises :class:`ProducerConfigError` when librdkafka refuses the config, and
        :class:`ProducerClosedError` after :meth:`close`.
        """
        return self.get_canonical(canonical_config(config))

    def get_canonical(self, key: ConfigKey) -> PooledProducer:
        """:meth:`get` for a config already in canonical form (the per-request path)."""
        if self._closed:
            raise ProducerClosedError("the producer pool is closed")
        found = self._producers.get(key)
        if found is not None:
            return found
        with self._lock:
            if self._closed:
                raise ProducerClosedError("the producer pool is closed")
            found = self._producers.get(key)
            if found is None:
                found = PooledProducer(
                    f"producer-{len(self._producers) + 1}",
                    key,
                    poll_interval=self._poll_interval,
                    retry_after_s=self._retry_after_s,
                    factory=self._factory,
                )
                self._producers[key] = found
                _LOG.info(
                    "event=producer_created producer=%s config=%s",
                    found.name,
                    json.dumps(redact(key), sort_keys=True),
                )
        return found

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
                _LOG.warning(
                    "event=flush_incomplete producer=%s left=%d budget_s=%.3f",
                    producer.name,
                    left,
                    timeout,
                )
        for producer in producers:
            producer.stop_polling()
        # The poll threads are daemons and end within one poll interval on their own: wait for
        # them only with whatever budget is left.
        await asyncio.to_thread(_join_all, producers, deadline)
        total = sum(lefts)
        _LOG.info(
            "event=producers_closed producers=%d left=%d seconds=%.3f",
            len(producers),
            total,
            time.monotonic() - started,
        )
        return total


def _join_all(producers: tuple[PooledProducer, ...], deadline: float) -> None:
    for producer in producers:
        producer.join(max(0.0, deadline - time.monotonic()))
