"""The summary of a run: as text for people, as JSON for scripts, as an optional PNG chart."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass

from harness.load.driver import RunResult
from harness.load.stats import ACCEPTED, Percentiles
from harness.load.verify import BrokerCheck


@dataclass(frozen=True, slots=True)
class Summary:
    target: str
    mode: str
    schedule: str
    loop: str
    run_id: str
    connections: int
    body_size: int
    body_shape: str
    #: Records a request carries (a batch's lines; 1 otherwise).
    records_per_request: int
    target_rate: float | None
    warmup_s: float
    window_s: float
    #: Measured requests sent and answered (every request gets an answer or a counted failure).
    sent: int
    answered: int
    req_per_s: float
    #: Records of 200/202 answers per second (= req_per_s for single records, all accepted).
    records_per_s: float
    latency_ms: Percentiles
    #: Fixed rate only: answer time from the actual send, and how late sends were.
    service_ms: Percentiles | None
    send_lag_ms: Percentiles | None
    #: Measured answers by HTTP status (0 = the runner let the request through to the upstream).
    statuses: dict[str, int]
    #: Causes of the RPC/HTTP failures counted as 503 in ``statuses``.
    failures: dict[str, int]
    warmup_requests: int
    prepares: int
    #: CPU seconds over the measured window per process ("load" is this one), and ``wall``.
    cpu_s: dict[str, float | None]
    broker: BrokerCheck | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=True)


def summarize(result: RunResult, *, loop: str, broker: BrokerCheck | None = None) -> Summary:
    opts, rec = result.options, result.recorder
    fixed = opts.rate is not None
    window = result.window
    accepted = sum(n for status, n in rec.statuses.items() if status in ACCEPTED)
    return Summary(
        target=opts.socket or opts.url or "",
        mode="rpc" if opts.socket else "http",
        schedule="fixed-rate" if fixed else "closed-loop",
        loop=loop,
        run_id=opts.bodies.run_id,
        connections=opts.connections,
        body_size=opts.bodies.size,
        body_shape=opts.bodies.shape,
        records_per_request=opts.bodies.records,
        target_rate=opts.rate,
        warmup_s=opts.warmup,
        window_s=window,
        sent=rec.measured,
        answered=sum(rec.statuses.values()),
        req_per_s=rec.measured / window if window > 0 else math.nan,
        records_per_s=accepted * opts.bodies.records / window if window > 0 else math.nan,
        latency_ms=Percentiles.of(rec.latency),
        service_ms=Percentiles.of(rec.service) if fixed else None,
        send_lag_ms=Percentiles.of(rec.send_lag) if fixed else None,
        statuses={str(k): v for k, v in sorted(rec.statuses.items())},
        failures=dict(sorted(rec.failures.items())),
        warmup_requests=rec.sent_total - rec.measured,
        prepares=result.prepares,
        cpu_s=result.cpu,
        broker=broker,
    )


def _line(p: Percentiles) -> str:
    return (
        f"p50 {p.p50:.3f}  p90 {p.p90:.3f}  p99 {p.p99:.3f}  p99.9 {p.p999:.3f}  "
        f"max {p.max:.3f}  (mean {p.mean:.3f})"
    )


def format_text(s: Summary) -> str:
    rate = f" at {s.target_rate:,.0f} req/s target" if s.target_rate else ""
    lines = [
        f"{s.mode.upper()} {s.target}: {s.schedule}{rate}, {s.connections} connections, "
        f"{s.body_size} B {s.body_shape} bodies, {s.loop} loop, run {s.run_id}",
        f"  requests   {s.sent:,} measured in {s.window_s:.2f} s "
        f"(+{s.warmup_requests:,} warm-up): {s.req_per_s:,.0f} req/s",
        *(
            [f"  records    {s.records_per_request} a request: {s.records_per_s:,.0f} records/s"]
            if s.records_per_request > 1
            else []
        ),
        f"  latency ms {_line(s.latency_ms)}",
    ]
    if s.service_ms is not None and s.send_lag_ms is not None:
        lines.append(f"  service ms {_line(s.service_ms)}")
        lines.append(
            f"  send lag   p50 {s.send_lag_ms.p50:.3f}  p99 {s.send_lag_ms.p99:.3f}  max "
            f"{s.send_lag_ms.max:.3f} ms after the due time (late sends count in latency)"
        )
    answers = ", ".join(f"{k}: {v:,}" for k, v in s.statuses.items()) or "none"
    lines.append(f"  answers    {answers}")
    if s.failures:
        lines.append("  failures   " + ", ".join(f"{k}: {v:,}" for k, v in s.failures.items()))
    if s.prepares:
        lines.append(f"  prepares   {s.prepares}")
    wall = s.cpu_s.get("wall") or 0.0
    if wall:
        machine = {"wall", "system", "steal"}
        usage = ", ".join(
            f"{name} {sec / wall:.2f}"
            for name, sec in s.cpu_s.items()
            if name not in machine and sec is not None
        )
        system, steal = s.cpu_s.get("system"), s.cpu_s.get("steal")
        if system is not None and steal is not None:
            usage += f"; whole machine busy {system / wall:.2f}, stolen {steal / wall:.2f}"
        lines.append(f"  cpu cores  {usage}")
    if s.broker is not None:
        b = s.broker
        lines.append(
            f"  broker     {b.confirmed:,} ids found in {b.topic!r} for {b.expected:,} accepted "
            f"answers: {b.missing:,} missing, {b.duplicates:,} duplicates, "
            f"{b.unanswered_found:,} found without a 2xx answer ({b.seconds:.1f} s)"
        )
    return "\n".join(lines)


def plot(result: RunResult, path: str) -> bool:
    """Latency over time as a PNG; False (with a message on stderr) when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"--plot {path}: skipped, matplotlib is not installed "
            "(pip install matplotlib to get the chart)",
            file=sys.stderr,
        )
        return False
    rec = result.recorder
    times = [t - result.measure_start for t in rec.done_at]
    millis = [v * 1000 for v in rec.latency]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.scatter(times, millis, s=1, alpha=0.3, label="request")
    # About 30 buckets whatever the run's length, none shorter than 0.1 s.
    width = max(0.1, result.window / 30)
    buckets: dict[int, list[float]] = {}
    for t, v in zip(times, rec.latency, strict=True):
        buckets.setdefault(int(t / width), []).append(v)
    xs = sorted(buckets)
    for name in ("p50", "p99"):
        ys = [getattr(Percentiles.of(buckets[x]), name) for x in xs]
        ax.plot([(x + 0.5) * width for x in xs], ys, label=f"{name} per {width:.2g} s")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since warm-up ended")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{result.options.socket or result.options.url}: {rec.measured:,} requests")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
