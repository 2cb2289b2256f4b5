"""``/health`` from the spool part of a worker's report (pure: no process, no broker)."""

from __future__ import annotations

from typing import Any

from kafkaupstream.observability.report import RunnerStatus, WorkerState, health

NOW = 1_000.0


def status() -> RunnerStatus:
    return RunnerStatus(1, (WorkerState(7, NOW - 60, True),), True, 0, 0)


def report(**spool: Any) -> dict[int, dict[str, Any]]:
    files = spool.pop("files", [])
    body = {"max_age_s": 60.0, "unavailable": None, "files": files, **spool}
    return {7: {"at": NOW, "producers": [], "spool": body}}


def spool_file(**fields: Any) -> dict[str, Any]:
    return {"file": "spool-0.db", "available": True, "records": 3, "oldest_age_s": 1.0, **fields}


def test_a_young_backlog_is_healthy_and_shown() -> None:
    code, body = health(status(), report(files=[spool_file()]), now=NOW)
    assert code == 200
    assert body["workers"][0]["spool"]["files"][0]["records"] == 3


def test_an_old_oldest_record_degrades_health() -> None:
    code, body = health(status(), report(files=[spool_file(oldest_age_s=61.0)]), now=NOW)
    assert code == 503
    assert body["problems"] == [
        "spool file spool-0.db of worker pid 7: oldest record waits 61 s (more than 60 s; "
        "3 records)"
    ]


def test_a_spool_that_cannot_be_written_or_opened_degrades_health() -> None:
    code, body = health(status(), report(files=[spool_file(available=False)]), now=NOW)
    assert code == 503 and "cannot be written" in body["problems"][0]
    code, body = health(status(), report(unavailable="locked by another process"), now=NOW)
    assert code == 503
    assert body["problems"] == [
        "spool of worker pid 7 cannot be opened (locked by another process)"
    ]
