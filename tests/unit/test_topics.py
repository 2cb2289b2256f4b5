"""The topic catalog: which lookups reach the brokers, and what a failed one answers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kafkaupstream.producers.topics import (
    MISS_REFRESH_S,
    REFRESH_S,
    TopicCatalog,
    TopicLookupFailed,
)


class Brokers:
    """A cluster's topic list behind a counter; ``gate`` holds a request until it is set."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.requests = 0
        self.failure: str | None = None
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, timeout: float) -> frozenset[str]:
        self.requests += 1
        self.gate.wait(timeout)
        if self.failure is not None:
            raise TopicLookupFailed(self.failure)
        return frozenset(self.names)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_known_topics_are_answered_from_the_cache() -> None:
    brokers, clock = Brokers("a"), Clock()
    catalog = TopicCatalog(brokers, clock=clock)

    async def scenario() -> None:
        assert await catalog.exists("a")
        clock.now += REFRESH_S / 2
        assert await catalog.exists("a")

    asyncio.run(scenario())
    assert brokers.requests == 1


def test_misses_cost_at_most_one_request_per_interval_and_see_new_topics_after_it() -> None:
    brokers, clock = Brokers("a"), Clock()
    catalog = TopicCatalog(brokers, clock=clock)

    async def scenario() -> None:
        assert await catalog.exists("a")
        assert [await catalog.exists(f"spray-{i}") for i in range(100)] == [False] * 100
        assert brokers.requests == 1  # within MISS_REFRESH_S of the last request
        brokers.names.add("spray-1")
        clock.now += MISS_REFRESH_S
        assert await catalog.exists("spray-1")
        assert brokers.requests == 2

    asyncio.run(scenario())
    assert len(catalog) == 2


def test_concurrent_misses_share_one_request() -> None:
    brokers, clock = Brokers("a", "b"), Clock()
    catalog = TopicCatalog(brokers, clock=clock)
    brokers.gate.clear()

    async def scenario() -> list[bool]:
        waiting = [asyncio.ensure_future(catalog.exists(n)) for n in ("a", "b", "c") * 10]
        await asyncio.sleep(0.05)
        brokers.gate.set()
        return list(await asyncio.gather(*waiting))

    assert asyncio.run(scenario()) == [True, True, False] * 10
    assert brokers.requests == 1


def test_a_stale_cache_still_answers_and_is_refreshed_in_the_background() -> None:
    brokers, clock = Brokers("a"), Clock()
    catalog = TopicCatalog(brokers, clock=clock)

    async def scenario() -> None:
        assert await catalog.exists("a")
        brokers.names = {"b"}
        clock.now += REFRESH_S
        assert await catalog.exists("a")  # the cache answers; the refresh runs meanwhile
        await asyncio.sleep(0.05)
        assert brokers.requests == 2
        assert await catalog.exists("b")
        assert not await catalog.exists("a")

    asyncio.run(scenario())


def test_a_failed_lookup_is_an_error_never_a_guess_and_is_retried_after_the_interval() -> None:
    brokers, clock = Brokers("a"), Clock()
    brokers.failure = "_TIMED_OUT"
    catalog = TopicCatalog(brokers, clock=clock)

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(TopicLookupFailed, match="_TIMED_OUT"):
                await catalog.exists("a")
        assert brokers.requests == 1
        brokers.failure = None
        clock.now += MISS_REFRESH_S
        assert await catalog.exists("a")

    asyncio.run(scenario())
    assert brokers.requests == 2
