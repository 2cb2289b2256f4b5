"""The counters and the histogram one process updates (prometheus_client multiprocess files).

An answered request costs one dictionary lookup and one mmap write, on the event loop; the label
children are cached here so that prometheus_client's own lookup and lock are paid once per label
set, not per request.

Delivery reports arrive on the producers' poll threads, one callback per record. Counting them
there (three locked mmap writes each) made the poll threads hold the GIL long enough to cost
the event loop a quarter of its async throughput, so a report only appends a tuple to a queue
there, and the loop folds the queue into the counters and the histogram every 0.1 s: one write
per label set for the counters, one ``Histogram.observe`` per delivered record (prometheus_client
has no batched observe; about 1.8 µs a record, see docs/operations.md). A worker killed by SIGKILL
loses at most that last 0.1 s of delivery counts; request counts are written as they happen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from confluent_kafka import KafkaError

from kafkaupstream.observability.labels import OTHER, BoundedLabels

#: Produce-to-delivery-report latency buckets (seconds): 0.5 ms (a local broker) to 10 s (a
#: stalled one; ``timeout_ms`` is 5 s by default and sync answers give up at 55 s).
DELIVERY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Distinct routes and topics one process labels; more are counted as ``_other``.
ROUTE_LIMIT = 1000
TOPIC_LIMIT = 500


class Recorder:
    """What one worker counts; the parent's endpoint sums every worker's files."""

    def __init__(self, *, route_limit: int = ROUTE_LIMIT, topic_limit: int = TOPIC_LIMIT) -> None:
        from prometheus_client import Counter, Histogram

        # registry=None: in multiprocess mode the files are the registry.
        self._requests = Counter(
            "kafkaupstream_requests",
            "Requests the kafkaupstream plugin answered, by APISIX route, HTTP status and error",
            ("route", "status", "error"),
            registry=None,
        )
        self._produced = Counter(
            "kafkaupstream_records_produced",
            "Records the broker acknowledged (sync and async), by topic",
            ("topic",),
            registry=None,
        )
        self._failed = Counter(
            "kafkaupstream_records_failed",
            "Records refused by the producer or reported as not delivered (async ones included), "
            "by topic and librdkafka error name",
            ("topic", "error"),
            registry=None,
        )
        self._delivery = Histogram(
            "kafkaupstream_delivery_seconds",
            "Time from produce() to the broker's acknowledgement, per delivered record",
            buckets=DELIVERY_BUCKETS,
            registry=None,
        )
        self._refusals = Counter(
            "kafkaupstream_backpressure_refusals",
            "Requests refused with 503 backpressure (or a batch's 207 for it): producer queue "
            "full, over --max-in-flight, or over --max-awaiting-body",
            ("reason",),
            registry=None,
        )
        self._replaced = Counter(
            "kafkaupstream_producers_replaced",
            "Producers replaced after librdkafka declared them dead (fatal error, fenced id) or "
            "after they delivered nothing for message.timeout.ms with records pending",
            registry=None,
        )
        self._released = Counter(
            "kafkaupstream_producers_released",
            "Producers flushed and closed because no request used them for the conf-token "
            "lifetime plus --producer-grace",
            registry=None,
        )
        self._spool = {
            name: Counter(f"kafkaupstream_spool_{name}", text, registry=None)
            for name, text in (
                ("forwarded", "Spooled records delivered to Kafka and removed from the spool"),
                ("dead_lettered", "Spooled records Kafka refused for good, moved to dead letters"),
                (
                    "possible_duplicates",
                    "Records found at a spool file's open that a producer had been handed before "
                    "(delivered once more: at most this many duplicates)",
                ),
                ("write_errors", "Spool commits that failed (disk full, I/O error)"),
            )
        }
        self._routes = BoundedLabels(route_limit)
        self._topics = BoundedLabels(topic_limit)
        self._request_children: dict[tuple[str, int, str], Callable[[], None]] = {}
        self._produced_children: dict[str | None, Callable[[float], None]] = {}
        self._failed_children: dict[tuple[str | None, int], Callable[[float], None]] = {}
        self._reports: deque[tuple[str | None, KafkaError | None, float | None]] = deque()
        self._append_report = self._reports.append

    # --- the loop thread ------------------------------------------------------------------------

    def request(self, route: str, status: int, error: str) -> None:
        """One answered request (``error`` is the answer's error code, ``""`` for 2xx)."""
        inc = self._request_children.get((route, status, error))
        if inc is None:
            inc = self._request_child(route, status, error)
        inc()

    def refused(self, reason: str, count: int = 1) -> None:
        """``503 backpressure``: ``queue_full``, ``in_flight_cap`` or ``awaiting_body_cap``."""
        self._refusals.labels(reason).inc(count)

    def spool_counted(self, name: str, count: int) -> None:
        """What the spool's totals (``Spool.counters()``) gained: ``forwarded``, ..."""
        self._spool[name].inc(count)

    def producers_replaced(self, count: int) -> None:
        self._replaced.inc(count)

    def producers_released(self, count: int) -> None:
        self._released.inc(count)

    # --- delivery reports: queued from any thread, folded in on the loop --------------------------

    def delivery(self, topic: str | None, error: KafkaError | None, latency: float | None) -> None:
        """A delivery report (or a record refused at produce time, then ``latency`` is None)."""
        self._append_report((topic, error, latency))

    def fold(self) -> None:
        """Count the queued reports (the loop thread, every 0.1 s and at shutdown)."""
        reports = self._reports
        if not reports:
            return
        produced: dict[str | None, int] = {}
        failed: dict[tuple[str | None, int], tuple[int, KafkaError]] = {}
        observe = self._delivery.observe
        for _ in range(len(reports)):  # what is queued now; later reports wait for the next fold
            topic, error, latency = reports.popleft()
            if error is None:
                produced[topic] = produced.get(topic, 0) + 1
                if latency is not None:
                    observe(latency)
            else:
                key = (topic, error.code())
                count, _error = failed.get(key, (0, error))
                failed[key] = (count + 1, error)
        for topic, count in produced.items():
            inc = self._produced_children.get(topic) or self._produced_child(topic)
            inc(count)
        for key, (count, error) in failed.items():
            inc = self._failed_children.get(key) or self._failed_child(key[0], error)
            inc(count)

    # --- label children, made once per label set -----------------------------------------------
    # Values past a cap are not cached under their own name (the caches stay bounded too): they
    # take prometheus_client's lookup each time, which only happens once a cap is reached.

    def _request_child(self, route: str, status: int, error: str) -> Callable[[], None]:
        label = self._routes.admit(route)
        inc: Callable[[], None] = self._requests.labels(label, str(status), error).inc
        if label != OTHER:
            self._request_children[(route, status, error)] = inc
        return inc

    def _produced_child(self, topic: str | None) -> Callable[[float], None]:
        label = self._topics.admit(topic or "")
        inc: Callable[[float], None] = self._produced.labels(label).inc
        if label != OTHER:
            self._produced_children[topic] = inc
        return inc

    def _failed_child(self, topic: str | None, error: KafkaError) -> Callable[[float], None]:
        label = self._topics.admit(topic or "")
        inc: Callable[[float], None] = self._failed.labels(label, error.name()).inc
        if label != OTHER:
            self._failed_children[(topic, error.code())] = inc
        return inc
