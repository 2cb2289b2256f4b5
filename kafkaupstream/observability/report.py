"""What ``/health`` and ``/ready`` answer, from the runner's state and the workers' reports (pure).

``/health`` is about Kafka: ``ok`` (200) while no worker has a producer whose brokers stopped
answering or that stalled (records pending, no successful delivery for ``--stall-after``),
``degraded`` (503) when one has, or when a worker stopped reporting (its event loop is stuck).
``/ready`` is about APISIX: 200 once the socket is bound and every worker accepts on it, 503
while one is starting, restarting or frozen (its heartbeat late) and once shutdown began.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: A worker whose last report is older than this is stuck (reports come every second).
STALE_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerState:
    pid: int
    #: Wall-clock start (``time.time()``), comparable with the reports' ``at``.
    started_at: float
    accepting: bool


@dataclass(frozen=True, slots=True)
class RunnerStatus:
    """The runner process's side of the picture (the parent's, or the single process's)."""

    expected_workers: int
    workers: tuple[WorkerState, ...]
    #: The RPC socket is bound and shutdown has not begun.
    listening: bool
    conf_tokens: int
    worker_restarts: int


class RunnerView(Protocol):
    def runner_status(self) -> RunnerStatus: ...


def live_reports(
    status: RunnerStatus, reports: Mapping[int, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The reports of the workers alive now (a dead one's file may not be removed yet)."""
    return {w.pid: reports[w.pid] for w in status.workers if w.pid in reports}


def health(
    status: RunnerStatus, reports: Mapping[int, dict[str, Any]], now: float | None = None
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``/health``."""
    now = time.time() if now is None else now
    problems: list[str] = []
    workers: list[dict[str, Any]] = []
    for worker in status.workers:
        report = reports.get(worker.pid)
        age = now - float(report.get("at", 0.0)) if report else now - worker.started_at
        stale = age > STALE_AFTER_S
        if stale:
            problems.append(f"worker pid {worker.pid} has not reported for {age:.0f} s")
        spool = report.get("spool") if report else None
        if spool:
            problems += _spool_problems(worker.pid, spool)
        producers = list(report.get("producers", ())) if report else []
        for producer in producers:
            if producer.get("reachable") is False:
                problems.append(
                    f"producer {producer.get('name')} of worker pid {worker.pid}: brokers "
                    f"{','.join(producer.get('bootstrap', ()))} unreachable "
                    f"({producer.get('last_error') or 'no metadata answer'})"
                )
            if producer.get("stalled"):
                problems.append(
                    f"producer {producer.get('name')} of worker pid {worker.pid}: brokers "
                    f"{','.join(producer.get('bootstrap', ()))}: no successful delivery for "
                    f"{float(producer.get('stalled_s', 0)):.0f} s with records pending or timing "
                    f"out ({producer.get('pending')} pending now; {producer.get('stall_cause')})"
                )
        entry: dict[str, Any] = {
            "pid": worker.pid,
            "reported": report is not None,
            "report_age_s": round(age, 1),
            "producers": producers,
        }
        if spool:
            entry["spool"] = spool
        workers.append(entry)
    body = {"status": "degraded" if problems else "ok", "problems": problems, "workers": workers}
    return (503 if problems else 200), body


def _spool_problems(pid: int, spool: Mapping[str, Any]) -> list[str]:
    """A spool that cannot be written, or whose oldest record waits longer than allowed."""
    problems = []
    if spool.get("unavailable"):
        problems.append(f"spool of worker pid {pid} cannot be opened ({spool['unavailable']})")
    max_age = float(spool.get("max_age_s") or 0.0)
    for file in spool.get("files", ()):
        if not file.get("available", True):
            problems.append(f"spool file {file.get('file')} of worker pid {pid} cannot be written")
        age = file.get("oldest_age_s")
        if age is not None and max_age and age > max_age:
            problems.append(
                f"spool file {file.get('file')} of worker pid {pid}: oldest record waits "
                f"{age:.0f} s (more than {max_age:g} s; {file.get('records')} records)"
            )
    return problems


def ready(status: RunnerStatus) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``/ready``."""
    accepting = sum(w.accepting for w in status.workers)
    is_ready = status.listening and accepting >= status.expected_workers
    body = {
        "status": "ready" if is_ready else "not_ready",
        "listening": status.listening,
        "workers": {"expected": status.expected_workers, "accepting": accepting},
    }
    return (200 if is_ready else 503), body
