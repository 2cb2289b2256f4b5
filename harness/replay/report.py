"""The end of a replay: a summary for people (text) or scripts (``--json``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.replay.compare import Rules
from harness.replay.replayer import BrokerSummary, Outcome


@dataclass(frozen=True, slots=True)
class Difference:
    number: int
    method: str
    target: str
    note: str
    field: str
    expected: str
    got: str


@dataclass(frozen=True, slots=True)
class Summary:
    recording: str
    kind: str
    target: str
    requests: int
    matched: int
    differing: int
    differences: int
    #: Differences by field (``status``, ``body.topic``, ``header Retry-After``, ``broker value``).
    by_field: dict[str, int]
    ignored: list[str]
    compared_headers: list[str]
    seconds: float
    req_per_s: float
    #: Exchanges not replayed: HAR entries without a response, and those --path left out.
    skipped: int
    #: Requests sent without some redacted value, and which names.
    sent_without_secrets: int
    missing_secret_names: list[str]
    broker: BrokerSummary | None
    #: The first differing requests' differences, in full.
    shown: list[Difference]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def summarize(
    outcomes: Sequence[Outcome],
    *,
    recording: str,
    kind: str,
    target: str,
    rules: Rules,
    seconds: float,
    skipped: int,
    broker: BrokerSummary | None,
    show: int,
) -> Summary:
    differing = [o for o in outcomes if o.mismatches]
    fields = Counter(m.field.split(" at ")[0] for o in differing for m in o.mismatches)
    shown = [
        Difference(
            o.number,
            o.exchange.request.method,
            o.exchange.request.target,
            o.exchange.note,
            m.field,
            m.expected,
            m.got,
        )
        for o in differing[:show]
        for m in o.mismatches
    ]
    without = [o for o in outcomes if o.missing_secrets]
    return Summary(
        recording=recording,
        kind=kind,
        target=target,
        requests=len(outcomes),
        matched=len(outcomes) - len(differing),
        differing=len(differing),
        differences=sum(fields.values()),
        by_field=dict(fields.most_common()),
        ignored=list(rules.ignored),
        compared_headers=list(rules.headers),
        seconds=round(seconds, 3),
        req_per_s=round(len(outcomes) / seconds, 1) if seconds > 0 else 0.0,
        skipped=skipped,
        sent_without_secrets=len(without),
        missing_secret_names=sorted({n for o in without for n in o.missing_secrets}),
        broker=broker,
        shown=shown,
    )


def format_text(s: Summary) -> str:
    ignored = f"; ignored: {', '.join(s.ignored)}" if s.ignored else ""
    lines = [
        f"Replayed {s.requests} request(s) from {s.recording} ({s.kind}) to {s.target} "
        f"in {s.seconds:.2f} s ({s.req_per_s:,.0f} req/s)",
        f"  compared   status, body (JSON as JSON{ignored}), headers "
        f"{', '.join(s.compared_headers) or '(none)'}",
        f"  matched    {s.matched}",
    ]
    if s.differing:
        counts = ", ".join(f"{field} {n}" for field, n in s.by_field.items())
        lines.append(f"  differing  {s.differing} ({s.differences} difference(s): {counts})")
    else:
        lines.append("  differing  0")
    if s.skipped:
        lines.append(f"  skipped    {s.skipped} (HAR entries without a response, or --path)")
    if s.sent_without_secrets:
        lines.append(
            f"  secrets    {s.sent_without_secrets} request(s) sent without redacted "
            f"{', '.join(s.missing_secret_names)}; give values with --secret NAME=VALUE"
        )
    if s.broker is not None:
        b = s.broker
        lines.append(
            f"  broker     the records of {b.checked} answer(s) (200, 207) read back from "
            f"{b.bootstrap}: {b.mismatched} missing or different ({b.seconds:.2f} s)"
        )
    if s.shown:
        shown_requests = len({d.number for d in s.shown})
        more = s.differing - shown_requests
        lines.append("")
        lines.append(
            "Differences"
            + (f" (first {shown_requests} requests; {more} more)" if more else "")
            + ":"
        )
        current = None
        for d in s.shown:
            if d.number != current:
                current = d.number
                note = f"  ({d.note})" if d.note else ""
                lines.append(f"  #{d.number} {d.method} {d.target}{note}")
            lines.append(f"      {d.field}: expected {d.expected}, got {d.got}")
    return "\n".join(lines)
