"""The metrics listener's three answers: ``/metrics``, ``/health``, ``/ready`` (no sockets here).

``/metrics`` is prometheus_client's MultiProcessCollector over the runner's directory (every
worker's counters and histogram, dead workers' included) plus the gauges of this module: the
runner's own state and the live workers' last reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kafkaupstream import __version__
from kafkaupstream.core import core
from kafkaupstream.observability import report
from kafkaupstream.observability.files import MetricsDir
from kafkaupstream.observability.http import Response

_JSON = "application/json"


class Endpoint:
    """Answers one request; called by the parent's poll loop or the single process's loop."""

    def __init__(self, metrics_dir: MetricsDir, view: report.RunnerView) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        self._dir = metrics_dir
        self._view = view
        self._registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self._registry, path=metrics_dir.path)
        self._registry.register(_RunnerCollector(self))
        self._metrics_type = CONTENT_TYPE_LATEST

    def respond(self, method: str, target: str) -> Response:
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/health", "/ready"):
            return _json(404, {"error": "not_found", "paths": ["/metrics", "/health", "/ready"]})
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed", "allowed": ["GET", "HEAD"]})
        if path == "/metrics":
            from prometheus_client import generate_latest

            return Response(200, self._metrics_type, generate_latest(self._registry))
        status = self._view.runner_status()
        if path == "/ready":
            return _json(*report.ready(status))
        return _json(*report.health(status, self._dir.read_reports()))

    def snapshot(self) -> tuple[report.RunnerStatus, dict[int, dict[str, Any]]]:
        status = self._view.runner_status()
        return status, report.live_reports(status, self._dir.read_reports())


class _RunnerCollector:
    """The gauges: the runner's state now, and what the live workers last reported."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        status, reports = self._endpoint.snapshot()
        yield InfoMetricFamily(
            "kafkaupstream_runner",
            "The runner's version, configured worker processes and core (compiled or python)",
            value={
                "version": __version__,
                "workers": str(status.expected_workers),
                "core": core(),
            },
        )
        yield GaugeMetricFamily(
            "kafkaupstream_workers_accepting",
            "Worker processes accepting on the RPC socket now",
            value=sum(w.accepting for w in status.workers),
        )
        yield CounterMetricFamily(
            "kafkaupstream_worker_restarts",
            "Workers the parent restarted after they died",
            value=status.worker_restarts,
        )
        yield GaugeMetricFamily(
            "kafkaupstream_conf_tokens",
            "Conf tokens the runner holds (one per APISIX PrepareConf key still in use)",
            value=status.conf_tokens,
        )
        yield GaugeMetricFamily(
            "kafkaupstream_in_flight_requests",
            "Requests between their body's arrival and their answer, all workers (sampled each "
            "second)",
            value=sum(int(r.get("in_flight", 0)) for r in reports.values()),
        )
        yield GaugeMetricFamily(
            "kafkaupstream_awaiting_body_requests",
            "Requests waiting for APISIX to hand over their body, all workers (sampled each "
            "second)",
            value=sum(int(r.get("awaiting_body", 0)) for r in reports.values()),
        )
        producers = GaugeMetricFamily(
            "kafkaupstream_producers",
            "Kafka producers a worker holds now (sampled each second)",
            labels=("pid",),
        )
        for pid, worker_report in sorted(reports.items()):
            producers.add_metric((str(pid),), float(len(worker_report.get("producers", ()))))
        yield producers
        depth = GaugeMetricFamily(
            "kafkaupstream_producer_queue_depth",
            "Records queued or in flight in a producer, plus its unserved events (sampled each "
            "second; producer names are per worker process)",
            labels=("producer", "pid"),
        )
        reachable = GaugeMetricFamily(
            "kafkaupstream_producer_reachable",
            "1 while a producer's brokers answer metadata requests, 0 once two probes failed "
            "(absent until the first verdict)",
            labels=("producer", "pid"),
        )
        for pid, worker_report in sorted(reports.items()):
            for producer in worker_report.get("producers", ()):
                labels = (str(producer.get("name")), str(pid))
                depth.add_metric(labels, float(producer.get("queue_depth", 0)))
                if producer.get("reachable") is not None:
                    reachable.add_metric(labels, 1.0 if producer["reachable"] else 0.0)
        yield depth
        yield reachable
        yield from _spool_gauges(reports)


def _spool_gauges(reports: dict[int, dict[str, Any]]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    labels = ("file", "pid")
    gauges = {
        "records": GaugeMetricFamily(
            "kafkaupstream_spool_records",
            "Records in a spool file (sampled each second)",
            labels=labels,
        ),
        "bytes": GaugeMetricFamily(
            "kafkaupstream_spool_bytes",
            "Bytes of the records in a spool file (key, value, headers, topic)",
            labels=labels,
        ),
        "oldest_age_s": GaugeMetricFamily(
            "kafkaupstream_spool_oldest_record_age_seconds",
            "Age of the oldest record in a spool file (absent when it is empty)",
            labels=labels,
        ),
        "dead_letters": GaugeMetricFamily(
            "kafkaupstream_spool_dead_letters",
            "Dead letters in a spool file (records Kafka refused for good)",
            labels=labels,
        ),
        "available": GaugeMetricFamily(
            "kafkaupstream_spool_available",
            "1 while a spool file can be written, 0 after a failed commit",
            labels=labels,
        ),
    }
    for pid, worker_report in sorted(reports.items()):
        for file in (worker_report.get("spool") or {}).get("files", ()):
            values = (str(file.get("file")), str(pid))
            for name, gauge in gauges.items():
                value = file.get(name)
                if value is not None:
                    gauge.add_metric(values, float(value))
    yield from gauges.values()


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, _JSON, json.dumps(body, sort_keys=True).encode())
