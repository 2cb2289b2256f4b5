"""The durable spool: ``delivery: "spool"`` records on local disk, forwarded to Kafka.

``store.py`` is one SQLite file; ``file.py`` the group commit of one open file; ``spool.py`` a
worker's files and limits; ``forwarder.py`` produces what a file holds, in spool order, and
removes a record only after its delivery report; ``slots.py`` finds, locks and takes over the
files of a directory.
"""

from kafkaupstream.spool.outcomes import (
    SpoolClosedError,
    Spooled,
    SpoolFileStats,
    SpoolFull,
    SpoolOutcome,
    SpoolUnavailable,
)
from kafkaupstream.spool.spool import (
    DEFAULT_MAX_AGE_S,
    DEFAULT_MAX_BYTES,
    Spool,
    SpoolSettings,
)

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_BYTES",
    "Spool",
    "SpoolClosedError",
    "SpoolFileStats",
    "SpoolFull",
    "SpoolOutcome",
    "SpoolSettings",
    "SpoolUnavailable",
    "Spooled",
]
