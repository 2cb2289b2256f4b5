"""Which topics exist, as one producer's brokers say: a cached set of names, refreshed off the loop.

A topic chosen by a client (the topic header) is produced to only when it exists already: many
brokers (Tansu, Kafka with ``auto.create.topics.enable``) create any topic a producer names, so
a client could otherwise create topics at will, and every name costs the broker and librdkafka
per-topic state. The names come from an all-topics metadata request, which creates nothing
(asking about one topic by name may create it).

What a lookup costs: nothing while the cache is fresh; a name the cache lacks triggers at most
one metadata request per :data:`MISS_REFRESH_S` (concurrent misses share it), run on a thread
with :data:`LOOKUP_TIMEOUT_S`; a stale cache is refreshed in the background every
:data:`REFRESH_S` while names from it keep being answered. The state is one set of the
cluster's topic names, a size no client can change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: A known topic is trusted this long before the names are fetched again (in the background).
REFRESH_S = 30.0
#: A name the cache lacks is looked up at most this often per producer; misses in between are
#: answered from the cache (a client spraying random names costs one request a second).
MISS_REFRESH_S = 1.0
#: How long one metadata request may take before the lookup fails (503, never a guess).
LOOKUP_TIMEOUT_S = 2.0

#: Blocking: the names of every topic the brokers know; raises :class:`TopicLookupFailed`.
ListTopics = Callable[[float], frozenset[str]]


class TopicLookupFailed(Exception):
    """The brokers did not say which topics exist (unreachable, or too slow)."""


class TopicCatalog:
    """One producer's view of the cluster's topic names; used on the event loop."""

    def __init__(
        self, list_topics: ListTopics, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._list_topics = list_topics
        self._clock = clock
        self._names: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        #: When the last request failed, and why: misses until the next one get the same answer.
        self._failed_at = float("-inf")
        self._failure = ""
        self._refresh: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._names)

    async def exists(self, topic: str) -> bool:
        """Whether ``topic`` exists; raises :class:`TopicLookupFailed` when nobody could say."""
        now = self._clock()
        if topic in self._names:
            if now - self._fetched_at >= REFRESH_S:
                self._start_refresh()  # answered from the cache meanwhile
            return True
        if now - max(self._fetched_at, self._failed_at) < MISS_REFRESH_S:
            if self._failed_at > self._fetched_at:
                raise TopicLookupFailed(self._failure)
            return False
        await asyncio.shield(self._start_refresh())
        if self._failed_at > self._fetched_at:
            raise TopicLookupFailed(self._failure)
        return topic in self._names

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._fetch())
        return self._refresh

    async def _fetch(self) -> None:
        try:
            names = await asyncio.to_thread(self._list_topics, LOOKUP_TIMEOUT_S)
        except TopicLookupFailed as exc:
            self._failed_at = self._clock()
            self._failure = str(exc)
            return
        self._names = names
        self._fetched_at = self._clock()
