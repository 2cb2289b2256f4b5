"""What the fault tests (``test_faults.py``) drive the runner with, and how they count.

Closed-loop clients through the fake APISIX whose every body carries a unique id, a sampler of
the runner's memory (all its processes), and records read back from offset 0 and counted by
consuming them (Tansu's watermarks can read low).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.broker import BrokerError, EmbeddedBroker
from harness.consume import read_records
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer, PluginConf
from harness.runner_process import RunnerProcess, child_pids

JSON = (("Content-Type", "application/json"),)


def conf(bootstrap: str, topic: str, **fields: Any) -> PluginConf:
    """The route's plugin conf as APISIX sends it (a JSON string), one APISIX key per value."""
    config = {"bootstrap.servers": bootstrap, "linger.ms": 0, **fields.pop("config", {})}
    value = json.dumps({"config": config, "topic": topic, **fields})
    return PluginConf(
        conf=(("kafkaupstream", value),), conf_id=hashlib.sha1(value.encode()).hexdigest()[:12]
    )


def new_topic_name() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True, slots=True)
class Sent:
    """One request and what its client got."""

    id: str
    route: str
    started: float
    answered: float
    status: int
    #: The JSON ``error`` code; ``rpc`` when APISIX itself answered (runner unreachable).
    error: str | None
    retry_after: str | None

    @property
    def latency(self) -> float:
        return self.answered - self.started


def _outcome(answer: HTTPAnswer) -> tuple[str | None, str | None]:
    """(error code, Retry-After) of an answer."""
    if answer.action == "error":
        return "rpc", None
    error = json.loads(answer.body)["error"] if answer.status >= 400 else None
    return error, answer.header("Retry-After")


class Clients:
    """Closed-loop clients through one fake APISIX, stopped when the ``async with`` ends.

    :meth:`start` runs ``clients`` loops using the routes in turn (label -> plugin conf);
    :meth:`one` sends a single request. Every answer is kept in :attr:`sent`.
    """

    def __init__(
        self,
        socket_path: str,
        routes: dict[str, PluginConf],
        *,
        clients: int = 8,
        think_s: float = 0.01,
        body_pad: int = 0,
    ) -> None:
        self.apisix = FakeApisix(socket_path)
        self.routes = dict(routes)
        self.loop_routes = list(routes)
        self.clients = clients
        self.think_s = think_s
        self.pad = "x" * body_pad
        self.run_id = uuid.uuid4().hex[:10]
        self.sent: list[Sent] = []
        self._numbers = iter(range(1 << 40))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]

    async def stop(self) -> None:
        # Loops end on the flag rather than on cancellation, which a client that fails at once
        # (runner gone) can swallow in asyncio.wait_for.
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks)
        await self.apisix.close()

    async def one(self, label: str, *, body: bool = True) -> Sent:
        ident = f"{self.run_id}-{next(self._numbers)}"
        payload = json.dumps({"id": ident, "pad": self.pad}).encode() if body else None
        started = time.monotonic()
        answer = await self.apisix.request(
            self.routes[label], ClientRequest("POST", "/kafkaupstream", headers=JSON, body=payload)
        )
        error, retry_after = _outcome(answer)
        sent = Sent(ident, label, started, time.monotonic(), answer.status, error, retry_after)
        self.sent.append(sent)
        return sent

    async def _client(self) -> None:
        turn = 0
        while not self._stop.is_set():
            label = self.loop_routes[turn % len(self.loop_routes)]
            turn += 1
            sent = await self.one(label)
            # A runner that is gone fails at once: keep the loop from spinning.
            await asyncio.sleep(self.think_s if sent.error != "rpc" else 0.02)

    def ids(self, status: int, route: str | None = None) -> set[str]:
        return {s.id for s in self.sent if s.status == status and route in (None, s.route)}


def by_status(sent: Iterable[Sent]) -> dict[str, int]:
    """``{"200": n, "504 delivery_timeout": m, ...}``."""
    counts = collections.Counter(
        f"{s.status} {s.error}" if s.error else str(s.status) for s in sent
    )
    return dict(sorted(counts.items()))


def statuses_in(sent: Iterable[Sent]) -> set[tuple[int, str | None]]:
    return {(s.status, s.error) for s in sent}


async def warm_up(clients: Clients, label: str, rounds: int = 3) -> set[str]:
    """Concurrent requests until every producer has its producer id; the ids answered 2xx.

    A failed round is followed by a short pause, so that the rounds are not spent before a
    dead producer can be replaced (the pool does that at most once a second).
    """
    for round_ in range(rounds):
        answers = await asyncio.gather(*(clients.one(label) for _ in range(clients.clients)))
        if all(a.status in (200, 202) for a in answers):
            return {s.id for s in clients.sent}
        if round_ < rounds - 1:
            await asyncio.sleep(0.5)
    raise AssertionError(f"warm-up failed: {by_status(clients.sent)}")


def recovered(sent: Sequence[Sent], since: float) -> float:
    """When the first 200 came after which every request started after ``since`` got 200."""
    after = sorted((s for s in sent if s.started > since), key=lambda s: s.answered)
    last_bad = max((i for i, s in enumerate(after) if s.status != 200), default=-1)
    good = after[last_bad + 1 :]
    assert good, f"no 200 after the last failure; the last answers: {after[-12:]}"
    return good[0].answered


def steady_since(clients: Clients, since: float, quiet_s: float = 1.5) -> Callable[[], bool]:
    """For :func:`until`: requests after ``since`` got 200 for ``quiet_s``, nothing else since."""

    def check() -> bool:
        after = [s for s in clients.sent if s.started > since]
        last_bad = max((s.answered for s in after if s.status != 200), default=since)
        return any(s.status == 200 for s in after) and time.monotonic() - last_bad > quiet_s

    return check


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 50 ms; the seconds it took, or AssertionError naming ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def rss_mib(pid: int) -> float:
    """VmRSS of the runner and all its workers together, in MiB."""
    total_kib = 0
    for each in (pid, *child_pids(pid)):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total_kib += int(found.group(1)) if found else 0
    return total_kib / 1024


class RSSWatch:
    """Samples :func:`rss_mib` every 50 ms inside ``async with``; the baseline is at entry."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RSSWatch:
        self.baseline = self.max = rss_mib(self.pid)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.max = max(self.max, rss_mib(self.pid))

    @property
    def growth(self) -> float:
        return self.max - self.baseline

    async def _sample(self) -> None:
        while True:
            self.max = max(self.max, rss_mib(self.pid))
            await asyncio.sleep(0.05)


def landed(
    bootstrap: str, topic: str, expected: int | None = None, timeout: float = 2.0
) -> collections.Counter[str]:
    """How often each id is in ``topic``: every record from offset 0, read until ``expected``
    were read or for ``timeout`` seconds."""
    records = read_records(bootstrap, topic, expected=expected, timeout=timeout)
    return collections.Counter(json.loads(r.value or b"{}").get("id") for r in records)


def flush_left(logs: str) -> list[tuple[str, int]]:
    """(producer, records left) of every ``event=flush_incomplete`` line."""
    return [
        (m.group(1), int(m.group(2)))
        for m in re.finditer(r"event=flush_incomplete producer=(\S+) left=(\d+)", logs)
    ]


def pause(broker: EmbeddedBroker, timeout: float = 2.0) -> None:
    """SIGSTOP the broker and wait until every thread of it has stopped.

    A signal is delivered asynchronously: on a busy machine a broker thread can go on answering
    for a few milliseconds after ``kill()`` returned, long enough to acknowledge what a test
    sends right after pausing.
    """
    broker.pause()
    assert broker.pid is not None
    tasks = Path(f"/proc/{broker.pid}/task")
    deadline = time.monotonic() + timeout
    while not all(_stopped(task / "stat") for task in tasks.iterdir()):
        assert time.monotonic() < deadline, "the broker did not stop"
        time.sleep(0.001)


def _stopped(stat: Path) -> bool:
    try:
        text = stat.read_text()
    except OSError:  # the thread is gone
        return True
    return text[text.rindex(")") + 2] in "Tt"


def restart(broker: EmbeddedBroker) -> None:
    """The broker killed and started again on its port, its topics created again (empty).

    A producer that asks for a topic's metadata before the harness has recreated it makes
    Tansu auto-create the topic with its own partition count; the broker is then up, with the
    topic, which is all a reconnect test needs.
    """
    try:
        broker.restart()
    except BrokerError as exc:
        if "other partition counts" not in str(exc):
            raise


def has_exited(runner: RunnerProcess) -> bool:
    return runner.proc is not None and runner.proc.poll() is not None


class FiguresSummary:
    """A pytest plugin registered once per session: every scenario's figures after the results."""

    name = "kafkaupstream-fault-figures"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("fault scenarios")
            for line in self.lines:
                terminalreporter.write_line(line)
