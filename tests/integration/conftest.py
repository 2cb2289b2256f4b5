"""Fixtures for tests against a real Kafka-protocol broker (Tansu, started per session)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from harness import consume
from harness.broker import EmbeddedBroker
from harness.consume import ConsumedRecord

from .faultkit import FiguresSummary

#: The session broker's topics; tests that need their own should use ``new_topic`` instead of
#: growing this (records of one test then never show up in another's assertions).
DEFAULT_TOPICS: Mapping[str, int] = {"kafkaupstream": 3, "other": 1}

BrokerFactory = Callable[..., EmbeddedBroker]
ReadRecords = Callable[..., list[ConsumedRecord]]
#: ``figures(sent=..., answered_2xx=...)``: see the ``figures`` fixture.
Report = Callable[..., None]


@pytest.fixture(scope="session")
def broker_factory() -> Iterator[BrokerFactory]:
    """Starts extra brokers (``broker_factory({"t": 2})``); all are stopped at session end.

    For tests that pause, restart or kill a broker: never do that to the shared ``broker``.
    """
    started: list[EmbeddedBroker] = []

    def start(topics: Mapping[str, int] | None = None, **options: Any) -> EmbeddedBroker:
        broker = EmbeddedBroker(topics, **options)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture(scope="session")
def broker(broker_factory: BrokerFactory) -> EmbeddedBroker:
    """One broker for the session, with :data:`DEFAULT_TOPICS`."""
    return broker_factory(DEFAULT_TOPICS)


@pytest.fixture
def new_topic(broker: EmbeddedBroker) -> Callable[[int], str]:
    """Creates a uniquely named topic on the session broker: ``new_topic(3)`` -> its name."""

    def create(partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        broker.create_topics({name: partitions})
        return name

    return create


@pytest.fixture
def read_records(broker: EmbeddedBroker) -> ReadRecords:
    """:func:`harness.consume.read_records` bound to the session broker."""
    return functools.partial(consume.read_records, broker.bootstrap)


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Report:
    """``figures(sent=..., answered_2xx=...)``: one line, printed, kept and summarised."""
    manager = request.config.pluginmanager
    summary = manager.get_plugin(FiguresSummary.name)
    if summary is None:
        summary = FiguresSummary()
        manager.register(summary, FiguresSummary.name)

    def report(**numbers: object) -> None:
        line = f"{request.node.name}: " + " ".join(f"{k}={v}" for k, v in numbers.items())
        print(line)
        summary.lines.append(line)
        for key, value in numbers.items():
            record_property(key, value)

    return report
