"""Regenerate ``tests/data/replay/``: ``python -m harness.replay.sample [--out-dir DIR]``.

It runs the record path for real: a Tansu broker, the runner, the gateway with its recording
hook, and the sample's requests sent over HTTP one after the other. Then each exchange gets its
note and, for a 200 (or a batch's 207), the key and headers of every record read back from the
broker, so that ``replay --verify-broker`` checks the key precedence too. Every answer's status
is checked against the one the case expects: a regeneration that would record a regression
fails instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from harness.broker import EmbeddedBroker, free_port
from harness.gateway import GatewayThread
from harness.replay.broker_check import as_expected, check_records, is_batch, records_for
from harness.replay.format import Exchange
from harness.replay.loader import load_recording
from harness.replay.recorder import RecordingWriter, recording_hook
from harness.replay.sample.cases import CASES, Case
from harness.replay.sample.routes import PLACEHOLDERS, TOPICS, routes_yaml
from harness.replay.senders import HTTPSender
from harness.replay.template import render_file
from harness.runner_process import RunnerProcess

__all__ = ["CASES", "DATA_DIR", "PLACEHOLDERS", "TOPICS", "SampleError", "generate"]

DATA_DIR = Path(__file__).resolve().parents[3] / "tests" / "data" / "replay"
ROUTES_FILE, SAMPLE_FILE = "routes.yaml", "sample.jsonl"


class SampleError(RuntimeError):
    """The runner did not answer a case as expected; nothing was written."""


def dead_address() -> str:
    """A local address nobody listens on (right now)."""
    return f"127.0.0.1:{free_port()}"


async def _send_all(port: int, cases: list[Case]) -> None:
    sender = HTTPSender("127.0.0.1", port)
    for case in cases:
        await sender.send(case.method, case.target, case.request_headers(), case.body)


def record(routes: Path, workdir: Path, broker: EmbeddedBroker) -> list[Exchange]:
    """The cases as the gateway recorded them (redacted), against ``broker``."""
    values = {"BOOTSTRAP": broker.bootstrap, "DEAD_BOOTSTRAP": dead_address()}
    rendered = render_file(routes, values, workdir)
    raw = workdir / "raw.jsonl"
    with (
        RunnerProcess(args=["--workers", "1"]) as runner,
        RecordingWriter(raw, source="gateway") as writer,
        GatewayThread(rendered, runner.socket_path, on_exchange=recording_hook(writer)) as gateway,
    ):
        asyncio.run(_send_all(gateway.port, CASES))
    return list(load_recording(raw).exchanges)


def annotate(exchanges: list[Exchange], bootstrap: str) -> list[Exchange]:
    """Each exchange with its case's note and, for a 200, the record it produced."""
    if len(exchanges) != len(CASES):
        raise SampleError(f"recorded {len(exchanges)} exchanges for {len(CASES)} cases")
    wrong = [
        f"{c.note}: expected {c.status}, got {e.answer.status} {e.answer.body!r}"
        for c, e in zip(CASES, exchanges, strict=True)
        if c.status != e.answer.status
    ]
    if wrong:
        raise SampleError("the runner did not answer as the cases say:\n  " + "\n  ".join(wrong))
    found = records_for(bootstrap, {i: e.answer for i, e in enumerate(exchanges)})
    out = []
    for i, (case, exchange) in enumerate(zip(CASES, exchanges, strict=True)):
        annotated = dataclasses.replace(exchange, note=case.note)
        if i in found:
            batch = is_batch(exchange.answer)
            problems = check_records(exchange.request, None, found[i], batch=batch)
            if problems:
                raise SampleError(f"{case.note}: {problems}")
            records = tuple(None if r is None else as_expected(r) for _, r in found[i])
            if batch:
                annotated = dataclasses.replace(annotated, records=records)
            else:
                annotated = dataclasses.replace(annotated, record=records[0])
        out.append(annotated)
    return out


def generate(out_dir: Path = DATA_DIR) -> Path:
    """Write ``routes.yaml`` and ``sample.jsonl`` into ``out_dir``; the recording's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    routes = out_dir / ROUTES_FILE
    routes.write_text(routes_yaml(), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="ku-sample-") as tmp, EmbeddedBroker(TOPICS) as broker:
        exchanges = annotate(record(routes, Path(tmp), broker), broker.bootstrap)
    sample = out_dir / SAMPLE_FILE
    with RecordingWriter(sample, source="gateway") as writer:
        for exchange in exchanges:
            writer.write(exchange)
    return sample
