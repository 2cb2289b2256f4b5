"""What a run records (latencies, statuses, failure causes, CPU) and how it is summarised."""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ACCEPTED = (200, 202)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency figures in milliseconds (nearest-rank percentiles)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Percentiles:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(seconds)
        n = len(ordered)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * n) - 1)] * 1000

        return cls(
            n,
            sum(ordered) / n * 1000,
            rank(0.5),
            rank(0.9),
            rank(0.99),
            rank(0.999),
            ordered[-1] * 1000,
        )


@dataclass(slots=True)
class Recorder:
    """Per-request outcomes. Times are ``time.perf_counter()`` seconds."""

    #: Completion time and latency of each measured request (same index).
    done_at: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))
    #: Fixed rate only: time from actual send to answer, and how late each send was (< 0: early).
    service: array[float] = field(default_factory=lambda: array("d"))
    send_lag: array[float] = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    #: Every request of the run, warm-up included (what the broker should hold).
    sent_total: int = 0
    accepted_total: int = 0
    #: Request numbers whose answer was not 2xx accepted (to explain records seen anyway).
    rejected_ids: set[int] = field(default_factory=set)
    last_done: float = 0.0

    def record(
        self,
        n: int,
        status: int,
        scheduled: float,
        sent: float,
        done: float,
        measured: bool,
        fixed_rate: bool,
    ) -> None:
        self.sent_total += 1
        if status in ACCEPTED:
            self.accepted_total += 1
        else:
            self.rejected_ids.add(n)
        if not measured:
            return
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.done_at.append(done)
        # From the due time (no coordinated omission), or from the send if that came first.
        self.latency.append(done - (sent if sent < scheduled else scheduled))
        if fixed_rate:
            self.service.append(done - sent)
            self.send_lag.append(sent - scheduled)
        if done > self.last_done:
            self.last_done = done

    def fail(self, label: str) -> None:
        self.failures[label] = self.failures.get(label, 0) + 1

    @property
    def measured(self) -> int:
        return len(self.latency)


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process and its live descendants (all threads), from /proc.

    Descendants count because a multi-worker runner's workers are its children, and a child's
    time reaches its parent's counters only once it has exited. None where /proc has no answer.
    """
    own = _stat_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_stat_cpu_seconds(child) or 0.0 for child in _descendants(pid))


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def _stat_cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := _stat_fields(int(name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, ()))
    return found


def system_cpu_seconds() -> tuple[float, float] | None:
    """Busy and stolen CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


@dataclass(slots=True)
class CPUWatch:
    """CPU seconds used during the measured window by this process and by watched processes."""

    watched: Mapping[str, int]
    _start: dict[str, float | None] = field(default_factory=dict)
    _wall: float | None = None
    _system: tuple[float, float] | None = None

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._start = {"load": time.process_time()}
        self._start.update({name: process_cpu_seconds(pid) for name, pid in self.watched.items()})
        self._system = system_cpu_seconds()

    def stop(self) -> dict[str, float | None]:
        """CPU seconds per process name, ``wall`` (the window's length), and the whole machine's
        ``system`` busy and ``steal`` seconds (all cores); empty if never started."""
        if self._wall is None:
            return {}
        used: dict[str, float | None] = {"wall": time.perf_counter() - self._wall}
        before = self._start.get("load")
        used["load"] = None if before is None else time.process_time() - before
        for name, pid in self.watched.items():
            start, end = self._start.get(name), process_cpu_seconds(pid)
            used[name] = None if start is None or end is None else end - start
        system = system_cpu_seconds()
        if self._system is not None and system is not None:
            used["system"] = system[0] - self._system[0]
            used["steal"] = system[1] - self._system[1]
        return used
