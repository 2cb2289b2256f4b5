"""Case-insensitive lookups in header lists kept as (name, value) pairs, in order, duplicates kept.

The harness keeps headers as sent (HTTP requests and answers, Stop answers, recordings) rather
than in a dict, so that order, case and repeats survive; these two lookups serve all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

V = TypeVar("V")


def first_header(headers: Iterable[tuple[str, V]], name: str) -> V | None:
    """The first value of ``name`` (any case), or None when it is absent."""
    wanted = name.lower()
    return next((v for n, v in headers if n.lower() == wanted), None)


def all_headers(headers: Iterable[tuple[str, V]], name: str) -> list[V]:
    """Every value of ``name`` (any case), in order."""
    wanted = name.lower()
    return [v for n, v in headers if n.lower() == wanted]
