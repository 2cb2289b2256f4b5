"""Send a recording's requests again and compare every answer with the recorded one.

Requests go out in the recording's order from ``concurrency`` workers, each sending one at a
time: as fast as answers come (the default), at the recorded pace (request i is due when it was
recorded, relative to the first), or at a fixed rate. One worker (the default) keeps the order
strict, which answers depending on earlier requests (a full producer queue) need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from harness.replay.broker_check import VERIFIED_STATUSES, check_records, is_batch, records_for
from harness.replay.compare import Mismatch, Rules, compare
from harness.replay.format import Exchange, RecordedAnswer
from harness.replay.progress import ProgressBar
from harness.replay.redact import restore
from harness.replay.senders import Sender, SendError

PACES = ("fast", "recorded")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    pace: str = "fast"
    rate: float | None = None
    concurrency: int = 1
    rules: Rules = field(default_factory=Rules)
    #: Values for redacted headers and query parameters, by name (case-insensitive).
    secrets: Mapping[str, str] = field(default_factory=dict)
    progress: TextIO | None = None


@dataclass(slots=True)
class Outcome:
    """One replayed exchange: what came back and how it differs."""

    #: The exchange's place in the recording, from 1 (filtered-out exchanges keep their numbers).
    number: int
    exchange: Exchange
    got: RecordedAnswer | None = None
    mismatches: list[Mismatch] = field(default_factory=list)
    #: Redacted values left out for want of a ``--secret``.
    missing_secrets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerSummary:
    bootstrap: str
    #: 200 (and batch 207) answers whose records were looked for.
    checked: int
    #: Of those, how many were missing or held something else.
    mismatched: int
    seconds: float


def due_offsets(exchanges: Sequence[Exchange], pace: str, rate: float | None) -> list[float]:
    """Seconds after the start at which each request is due (all 0: as fast as possible)."""
    if rate is not None:
        return [i / rate for i in range(len(exchanges))]
    if pace == "recorded" and exchanges:
        first = min(e.started for e in exchanges)
        return [max(0.0, e.started - first) for e in exchanges]
    return [0.0] * len(exchanges)


async def replay(
    items: Sequence[tuple[int, Exchange]], sender: Sender, options: ReplayOptions
) -> list[Outcome]:
    """Replay (number, exchange) pairs; the outcomes come back in the same order."""
    outcomes = [Outcome(n, e) for n, e in items]
    offsets = due_offsets([e for _, e in items], options.pace, options.rate)
    bar = ProgressBar(options.progress, len(outcomes))
    pending = iter(zip(outcomes, offsets, strict=True))
    counts = {"done": 0, "differ": 0}
    start = time.monotonic()

    async def worker() -> None:
        for outcome, due in pending:
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await _one(sender, outcome, options)
            counts["done"] += 1
            counts["differ"] += bool(outcome.mismatches)
            bar.update(counts["done"], counts["differ"])

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, options.concurrency))))
    finally:
        bar.close()
    return outcomes


async def _one(sender: Sender, outcome: Outcome, options: ReplayOptions) -> None:
    request = outcome.exchange.request
    ready = restore(request, options.secrets)
    outcome.missing_secrets = ready.missing
    try:
        outcome.got = await sender.send(request.method, ready.target, ready.headers, request.body)
    except SendError as exc:
        outcome.mismatches.append(
            Mismatch("answer", f"status {outcome.exchange.answer.status}", f"no answer: {exc}")
        )
        return
    outcome.mismatches.extend(compare(outcome.exchange.answer, outcome.got, options.rules))


def verify_broker(
    outcomes: Sequence[Outcome], bootstrap: str, *, timeout: float = 10.0
) -> BrokerSummary:
    """Check the records of every replayed 200 or 207 (adding mismatches to its outcome)."""
    started = time.monotonic()
    by_number = {o.number: o for o in outcomes}
    answers = {
        o.number: o.got for o in outcomes if o.got is not None and o.got.status in VERIFIED_STATUSES
    }
    found = records_for(bootstrap, answers, timeout=timeout)
    mismatched = 0
    for number in answers:
        outcome = by_number[number]
        if number not in found:
            problems = [
                Mismatch("broker record", "a topic, partition and offset", "none in the answer")
            ]
        else:
            problems = check_records(
                outcome.exchange.request,
                outcome.exchange.expected_records,
                found[number],
                batch=is_batch(answers[number]),
            )
        outcome.mismatches.extend(problems)
        mismatched += bool(problems)
    return BrokerSummary(bootstrap, len(answers), mismatched, time.monotonic() - started)
