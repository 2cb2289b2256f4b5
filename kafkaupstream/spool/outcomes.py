"""What appending a record to the spool gives back, and what the monitor reads of a spool file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Spooled:
    """The record is committed (written and fsync'ed) to this worker's spool file."""

    topic: str


@dataclass(frozen=True, slots=True)
class SpoolFull:
    """The spool holds ``--spool-max-bytes`` already; nothing was written."""

    retry_after_s: float


@dataclass(frozen=True, slots=True)
class SpoolUnavailable:
    """The spool file cannot be written (disk full, I/O error, not openable); nothing was kept."""

    cause: str


SpoolOutcome: TypeAlias = Spooled | SpoolFull | SpoolUnavailable


class SpoolClosedError(RuntimeError):
    """``append()`` after the spool began closing (shutdown)."""


@dataclass(frozen=True, slots=True)
class SpoolFileStats:
    """A snapshot of one open spool file for metrics and health: gauges now, counters since open."""

    file: str
    #: This worker's own file (appended to), or one taken over from a slot no worker has now.
    own: bool
    available: bool
    records: int
    bytes: int
    oldest_created: float | None
    dead_letters: int
    forwarded: int
    dead_lettered: int
    #: Records found at open that a producer had been handed before (possible duplicates).
    possible_duplicates: int
    write_errors: int
    refused_full: int
