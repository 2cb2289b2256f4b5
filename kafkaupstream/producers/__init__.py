"""Kafka producers: one per distinct connection config, delivery reports bridged into asyncio.

Typical use (the plugin owns the pool and asks it for the producer of a route's config)::

    pool = ProducerPool()
    producer = pool.get_canonical(canonical_config({"bootstrap.servers": "127.0.0.1:9092"}))
    outcome = await producer.produce(KafkaRecord("events", b"{}"), wait=True, timeout=5.0)
    await pool.close(timeout=0.5)
"""

from kafkaupstream.producers.config import (
    ConfigKey,
    ConfigValue,
    ProducerConfig,
    ProducerConfigError,
    canonical_config,
    is_secret,
    message_max_bytes,
    redact,
    redact_bootstrap,
)
from kafkaupstream.producers.outcomes import (
    ANY_PARTITION,
    Backpressure,
    Delivered,
    DeliveryOutcome,
    DeliveryTimeout,
    Failed,
    FailureKind,
    KafkaRecord,
    Queued,
    failure,
)
from kafkaupstream.producers.pool import ProducerLimitReached, ProducerPool
from kafkaupstream.producers.pooled import (
    PooledProducer,
    ProducerClosedError,
    ProducerFactory,
    ProducerStats,
)
from kafkaupstream.producers.topics import TopicCatalog, TopicLookupFailed

__all__ = [
    "ANY_PARTITION",
    "Backpressure",
    "ConfigKey",
    "ConfigValue",
    "Delivered",
    "DeliveryOutcome",
    "DeliveryTimeout",
    "Failed",
    "FailureKind",
    "KafkaRecord",
    "PooledProducer",
    "ProducerClosedError",
    "ProducerConfig",
    "ProducerConfigError",
    "ProducerFactory",
    "ProducerLimitReached",
    "ProducerPool",
    "ProducerStats",
    "Queued",
    "TopicCatalog",
    "TopicLookupFailed",
    "canonical_config",
    "failure",
    "is_secret",
    "message_max_bytes",
    "redact",
    "redact_bootstrap",
]
