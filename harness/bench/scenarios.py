"""The bench's scenarios; each returns a :class:`Row`, its CPU given in cores used per process.

Servers and the load generator are separate processes (``python -m harness.load --json``) so each
gets a core of its own on a 2-core machine; CPU is read from /proc over the measured window only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.load.bodies import make_template
from harness.load.stats import process_cpu_seconds, system_cpu_seconds
from harness.runner_process import RunnerProcess

ROOT = Path(__file__).resolve().parents[2]


#: The schema of the bench's row with validation on: what the load generator's JSON bodies
#: (``{"id": "<run>-<n>", "pad": "xxx..."}``) must look like, patterns and bounds included.
BENCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "pad"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_]+-[0-9]{10}$", "maxLength": 64},
        "pad": {"type": "string", "pattern": "^x*$", "maxLength": 65536},
    },
}


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    warmup: float
    connections: int = 16
    #: The sync scenario waits on the broker for every request: it needs more in flight.
    sync_connections: int = 64
    body_size: int = 1024
    #: The batch scenarios: records a request (NDJSON lines) and bytes a record.
    batch_records: int = 100
    record_size: int = 200


@dataclass(slots=True)
class Row:
    """One scenario's outcome. ``cpu``: cores used (CPU s / wall s) by name, plus ``other``."""

    key: str
    label: str
    #: Requests (answers) a second; records a second for a batch row.
    rate: float | None = None
    p50: float | None = None
    p99: float | None = None
    answers: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    #: The event loop the server process was seen using (runner rows).
    server_loop: str | None = None
    #: Records a request (batch rows); their rate is in records.
    records: int = 1

    def server_us_per_unit(self) -> float | None:
        """Server CPU time per answer (per record for a batch row), in microseconds."""
        server = self.cpu.get("server")
        return None if server is None or not self.rate else server / self.rate * 1e6


def load_summary(
    socket: str,
    plugin: str,
    conf: str,
    s: Settings,
    watch: Mapping[str, int],
    verify: tuple[str, str] | None = None,
    records: int = 1,
) -> dict[str, Any]:
    """Run ``python -m harness.load ... --json`` as its own process; its parsed summary.

    ``verify`` is (bootstrap, topic): the load generator then counts the run's ids in the topic.
    ``records`` > 1: NDJSON batches of that many records of ``s.record_size`` bytes.
    """
    cmd = [
        sys.executable,
        "-m",
        "harness.load",
        "--socket",
        socket,
        "--plugin",
        plugin,
        "--conf",
        conf,
        "--duration",
        str(s.duration),
        "--warmup",
        str(s.warmup),
        "-c",
        str(s.connections),
        "--body-size",
        str(s.body_size if records == 1 else s.record_size),
        "--batch",
        str(records),
        "--json",
        "--request-timeout",
        "10",
    ]
    for name, pid in watch.items():
        cmd += ["--watch-pid", f"{name}={pid}"]
    if verify is not None:
        cmd += ["--verify-broker", verify[0], "--topic", verify[1]]
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=s.warmup + s.duration + 120,
    )
    # 1 means "records missing in the broker": still a summary worth reporting.
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the load generator exited with {done.returncode}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def row_from_summary(key: str, label: str, summary: Mapping[str, Any], records: int = 1) -> Row:
    answers = ", ".join(f"{k}: {v:,}" for k, v in summary["statuses"].items())
    if summary["failures"]:
        answers += " (" + ", ".join(f"{k} {v:,}" for k, v in summary["failures"].items()) + ")"
    latency = summary["latency_ms"]
    row = Row(
        key,
        label,
        summary["req_per_s"] if records == 1 else summary["records_per_s"],
        latency["p50"],
        latency["p99"],
        answers,
        cores(summary["cpu_s"]),
        records=records,
    )
    if (broker := summary.get("broker")) is not None:
        row.notes.append(
            f"broker holds {broker['confirmed']:,} of the run's ids for {broker['expected']:,} "
            f"accepted {'answers' if records == 1 else 'records'} ({broker['missing']:,} "
            f"missing, {broker['duplicates']:,} duplicates)"
        )
    return row


def cores(cpu: Mapping[str, float | None]) -> dict[str, float]:
    """CPU seconds -> cores; ``other`` is what the rest of the machine used meanwhile."""
    wall = cpu.get("wall") or 0.0
    if not wall:
        return {}
    used = {
        k: v / wall
        for k, v in cpu.items()
        if k not in ("wall", "system", "steal") and v is not None
    }
    if (system := cpu.get("system")) is not None:
        used["other"] = max(0.0, system / wall - sum(used.values()))
    return used


def floor_row(loop: str, s: Settings, key: str, streams: bool = False) -> Row:
    """(a) The bare floor server (harness/floor.py) on ``loop``; ``streams``: the streams floor."""
    with tempfile.TemporaryDirectory(prefix="ku-floor-") as tmp:
        path = os.path.join(tmp, "floor.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.floor", "--socket", path, "--loop", loop]
            + (["--streams"] if streams else []),
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_socket(path, proc)
            summary = load_summary(path, "floor", "{}", s, {"server": proc.pid})
        finally:
            proc.terminate()
            proc.wait(10)
    kind = "streams floor: start_unix_server + StreamReader/Writer" if streams else "floor"
    row = row_from_summary(key, f"{kind}: bare server, {loop} loop", summary)
    row.server_loop = loop
    return row


def runner_row(
    key: str,
    label: str,
    args: list[str],
    plugin: str,
    conf: str,
    s: Settings,
    broker_pid: int | None = None,
    verify: tuple[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    records: int = 1,
) -> Row:
    """The runner as APISIX spawns it (a fresh process per scenario), loaded over its socket."""
    with RunnerProcess(args=args, env=env) as runner:
        watch = {"server": runner.pid}
        if broker_pid is not None:
            watch["broker"] = broker_pid
        summary = load_summary(runner.socket_path, plugin, conf, s, watch, verify, records)
        loop = runner_loop(runner.pid)
    row = row_from_summary(key, label, summary, records)
    row.server_loop = loop
    return row


def runner_loop(pid: int) -> str | None:
    """ "uvloop" when the process has uvloop's extension mapped, else "asyncio"; None off Linux."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "uvloop" if "/uvloop/" in maps else "asyncio"


def raw_produce_row(
    key: str,
    label: str,
    bootstrap: str,
    topic: str,
    extra: Mapping[str, Any],
    s: Settings,
    broker_pid: int | None,
) -> Row:
    """(b) One Python thread: produce() + poll(0) with a counting delivery callback, flush().

    The callback is there because the runner needs one per record too; rate = records / (produce
    + flush time) over the measured part, after a warm-up that is flushed on its own.
    """
    from confluent_kafka import Producer

    counts = {"ok": 0, "failed": 0}

    def delivered(err: object, _msg: object) -> None:
        counts["failed" if err is not None else "ok"] += 1

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **extra})
    bodies = make_template("raw", "json", s.body_size)
    produced = 0

    def produce_for(seconds: float) -> None:
        nonlocal produced
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(100):
                try:
                    producer.produce(topic, bodies.body(produced), on_delivery=delivered)
                except BufferError:
                    producer.poll(0.001)
                    continue
                produced += 1
                producer.poll(0)
        producer.flush(30)

    produce_for(s.warmup)
    counts.update(ok=0, failed=0)
    first = produced
    cpu0, broker0, sys0 = time.process_time(), _cpu(broker_pid), system_cpu_seconds()
    started = time.perf_counter()
    produce_for(s.duration)
    wall = time.perf_counter() - started
    cpu: dict[str, float | None] = {"wall": wall, "server": time.process_time() - cpu0}
    if broker0 is not None and (broker1 := _cpu(broker_pid)) is not None:
        cpu["broker"] = broker1 - broker0
    if sys0 is not None and (sys1 := system_cpu_seconds()) is not None:
        cpu["system"] = sys1[0] - sys0[0]
    answers = f"delivered: {counts['ok']:,}"
    if counts["failed"] or counts["ok"] != produced - first:
        answers += f", failed: {counts['failed']:,} of {produced - first:,}"
    return Row(
        key,
        label,
        (produced - first) / wall,
        answers=answers,
        cpu=cores(cpu),
        notes=["'server' is the producing process (the bench itself)"],
    )


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else process_cpu_seconds(pid)


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until the server accepts a connection (the file exists before listen() is called)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the floor server did not start on {path}") from None
            time.sleep(0.02)
