"""The bench's results as markdown: the table, the ratios, and who was CPU-saturated."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from harness.bench.scenarios import Row

#: A single-threaded process at or above this many cores is taken as saturated.
SATURATED = 0.9
#: Other processes using more than this many cores make the figures unrepresentative.
NOISY = 0.2
#: (numerator, denominator, meaning) of the ratios the issue asks for.
RATIOS = (
    ("stop", "a", "runner RPC path without Kafka vs floor"),
    ("a-streams", "a", "streams floor vs floor"),
    ("c", "a", "runner async vs floor"),
    ("d", "a", "runner sync vs floor"),
    ("c", "b", "runner async vs raw produce"),
    ("d", "b-idem", "runner sync vs raw idempotent produce"),
    ("c-w2", "c", "runner async, 2 workers vs 1"),
    ("c-schema", "c", "runner async with schema validation vs without"),
    ("e", "b", "runner async batches vs raw produce, records/s"),
    ("f", "b-idem", "runner sync batches vs raw idempotent produce, records/s"),
    ("e", "c", "runner async: records/s in batches vs single requests"),
    ("f", "d", "runner sync: records/s in batches vs single requests"),
    ("g", "c", "runner spool vs async"),
    ("g", "d", "runner spool vs sync"),
)
#: The floor CPU per request is compared with: the simplest correct Python server.
CPU_FLOOR = "a-streams"
#: (row, reference, meaning) of CPU-per-request ratios (reference / row: efficiency).
CPU_RATIOS = (
    ("stop", CPU_FLOOR, "stop plugin vs streams floor"),
    ("c", CPU_FLOOR, "async, compiled, vs streams floor"),
    ("c-py", CPU_FLOOR, "async, pure Python, vs streams floor"),
    ("d", CPU_FLOOR, "sync, compiled, vs streams floor"),
    ("d-py", CPU_FLOOR, "sync, pure Python, vs streams floor"),
    ("c", "c-py", "async: compiled vs pure Python"),
    ("d", "d-py", "sync: compiled vs pure Python"),
)


def cpu_per_request(row: Row) -> float | None:
    """The server's CPU microseconds per answered request (per record for a batch row)."""
    return None if row.error else row.server_us_per_unit()


def _num(value: float | None, fmt: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    return fmt.format(value)


def _cpu(row: Row, name: str) -> str:
    return _num(row.cpu.get(name), "{:.2f}")


def saturation(row: Row, cpus: int) -> str:
    """Which process was at a core's worth of CPU, or whether the machine itself was full."""
    if row.error:
        return "—"
    busy = [
        f"{name} ({used:.2f})"
        for name, used in row.cpu.items()
        if name != "other" and used >= SATURATED
    ]
    total = sum(row.cpu.values())
    if not busy and total >= SATURATED * cpus:
        return f"the machine: all {cpus} cores busy, {row.cpu.get('other', 0):.2f} by others"
    if not busy:
        return "none (waiting on each other: latency-bound)"
    return ", ".join(busy)


def render(rows: Sequence[Row], facts: Mapping[str, str], cpus: int) -> str:
    by_key = {row.key: row for row in rows}
    lines = ["# kafkaupstream benchmark", ""]
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    noise = max((row.cpu.get("other", 0.0) for row in rows), default=0.0)
    if noise > NOISY:
        lines += [
            "",
            f"**Warning: other processes used up to {noise:.2f} of the {cpus} cores "
            "during the measured windows ('other cores' below); these figures understate "
            "this machine. Compare ratios within this run, or rerun on a quiet machine.**",
        ]
    lines += [
        "",
        "| key | scenario | req/s (records/s) | p50 ms | p99 ms | answers "
        "| server CPU µs/req (/record) "
        "| x streams floor | server cores | load cores | broker cores | other cores |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    floor_us = cpu_per_request(by_key[CPU_FLOOR]) if CPU_FLOOR in by_key else None
    for row in rows:
        if row.error:
            lines.append(f"| {row.key} | {row.label} | failed: {row.error} | | | | | | | | | |")
            continue
        us = cpu_per_request(row)
        times = us / floor_us if us is not None and floor_us else None
        lines.append(
            f"| {row.key} | {row.label} | {_num(row.rate, '{:,.0f}')} | {_num(row.p50, '{:.2f}')} "
            f"| {_num(row.p99, '{:.2f}')} | {row.answers} | {_num(us, '{:.1f}')} "
            f"| {_num(times, '{:.2f}')} | {_cpu(row, 'server')} "
            f"| {_cpu(row, 'load')} | {_cpu(row, 'broker')} | {_cpu(row, 'other')} |"
        )
    lines += ["", "| ratio | value | meaning |", "|---|--:|---|"]
    for top, bottom, meaning in RATIOS:
        a, b = by_key.get(top), by_key.get(bottom)
        if a and b and a.rate and b.rate and not (a.error or b.error):
            lines.append(f"| {top}/{bottom} | {a.rate / b.rate:.2f} | {meaning} |")
        else:
            lines.append(f"| {top}/{bottom} | — | {meaning} (a scenario is missing) |")
    lines += [
        "",
        "| CPU per request | times | meaning |",
        "|---|--:|---|",
    ]
    for top, bottom, meaning in CPU_RATIOS:
        a_us = cpu_per_request(by_key[top]) if top in by_key else None
        b_us = cpu_per_request(by_key[bottom]) if bottom in by_key else None
        if a_us is not None and b_us:
            lines.append(f"| {top}/{bottom} | {a_us / b_us:.2f} | {meaning} |")
        else:
            lines.append(f"| {top}/{bottom} | — | {meaning} (a scenario is missing) |")
    lines += [
        "",
        "Who was CPU-saturated (cores used during the measured window; "
        f"{SATURATED} or more of a core counts):",
        "",
    ]
    lines += [f"- {row.key}: {saturation(row, cpus)}" for row in rows]
    notes = [f"- {row.key}: {note}" for row in rows for note in row.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"
