"""One spool file: an SQLite database in WAL mode, written and read by one thread only.

Why SQLite (measured against an append-only segment log in ``harness/bench/spool_store_bench.py``,
see docs/decisions.md): one commit of a batch is one WAL append and one fsync, torn or partial
frames are discarded by the WAL's own checksums at the next open, deletion after delivery and the
dead-letter table are plain SQL, and the format is readable with the ``sqlite3`` tool.

Every method blocks (SQLite, fsync): :class:`~kafkaupstream.spool.spool.Spool` calls them from
its one database thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafkaupstream.producers import ConfigKey, KafkaRecord

#: Files are created with this mode: a record holds request bodies, and its producer config may
#: hold credentials.
FILE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS configs (
    id INTEGER PRIMARY KEY,
    config TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    config INTEGER NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    failed_at REAL NOT NULL,
    config INTEGER NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    size INTEGER NOT NULL,
    error TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_COLUMNS = "created, config, topic, partition, key, value, headers, size"
#: The highest record id ever handed to a producer; records at or below it that are still here
#: at the next open may have been delivered already (the possible duplicates).
_SENT_UPTO = "sent_upto"
_HEADER = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record read back for forwarding."""

    id: int
    created: float
    config: ConfigKey
    record: KafkaRecord
    size: int


@dataclass(frozen=True, slots=True)
class Totals:
    """What a spool file holds now."""

    records: int
    bytes: int
    dead_letters: int
    dead_letter_bytes: int
    oldest_created: float | None


def record_size(record: KafkaRecord) -> int:
    """The bytes a record counts against ``--spool-max-bytes``: value, key, headers, topic."""
    size = len(record.value or b"") + len(record.key or b"") + len(record.topic)
    for name, value in record.headers:
        size += len(name) + len(value)
    return size


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    if not headers:
        return None
    parts: list[bytes] = []
    for name, value in headers:
        raw = name.encode("utf-8")
        parts += (_HEADER.pack(len(raw)), raw, _HEADER.pack(len(value)), value)
    return b"".join(parts)


def decode_headers(blob: bytes | None) -> tuple[tuple[str, bytes], ...]:
    if not blob:
        return ()
    out: list[tuple[str, bytes]] = []
    at = 0
    while at < len(blob):
        (n,) = _HEADER.unpack_from(blob, at)
        name = blob[at + 4 : at + 4 + n].decode("utf-8")
        at += 4 + n
        (m,) = _HEADER.unpack_from(blob, at)
        out.append((name, blob[at + 4 : at + 4 + m]))
        at += 4 + m
    return tuple(out)


class SpoolStore:
    """An open spool file. Not thread-safe: one thread owns it from open to close."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Created 0600 before SQLite sees it; SQLite gives the -wal and -shm files the mode of
        # the database file.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit is fsync'ed (NORMAL would only sync at checkpoints, so a power
            # loss could take back records already answered 202).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise
        self._configs: dict[ConfigKey, int] = {}
        self._config_keys: dict[int, ConfigKey] = {}
        #: Configs inserted by the open transaction: forgotten again if it rolls back.
        self._new_configs: list[tuple[ConfigKey, int]] = []
        for ident, text in self._db.execute("SELECT id, config FROM configs"):
            key = tuple((str(n), str(v)) for n, v in json.loads(text))
            self._configs[key] = ident
            self._config_keys[ident] = key

    # -- writing ---------------------------------------------------------------------------------

    def commit(
        self,
        appends: Iterable[tuple[ConfigKey, KafkaRecord, float, int]],
        removals: Sequence[int] = (),
        dead: Sequence[tuple[StoredRecord, str, str]] = (),
        sent_upto: int | None = None,
    ) -> None:
        """One transaction, one fsync: new records, delivered ones removed, dead letters moved.

        ``appends`` are (config, record, created, size). Raises ``sqlite3.Error`` (disk full,
        I/O error) after rolling back: then nothing of this call is stored.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = [
                (
                    created,
                    self._config_id(config),
                    record.topic,
                    record.partition,
                    record.key,
                    record.value or b"",
                    encode_headers(record.headers),
                    size,
                )
                for config, record, created, size in appends
            ]
            if rows:
                db.executemany(
                    f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            if removals:
                db.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in removals))
            if dead:
                self._move_dead(dead)
            if sent_upto is not None:
                db.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) "
                    "DO UPDATE SET value = max(value, excluded.value)",
                    (_SENT_UPTO, sent_upto),
                )
            db.execute("COMMIT")
            self._new_configs.clear()
        except BaseException:
            self._rollback()
            raise

    def _move_dead(self, dead: Sequence[tuple[StoredRecord, str, str]]) -> None:
        now = time.time()
        self._db.executemany(
            f"INSERT INTO dead_letters ({_COLUMNS}, failed_at, error, reason) "
            "SELECT " + _COLUMNS + ", ?, ?, ? FROM records WHERE id = ?",
            ((now, error, reason, stored.id) for stored, error, reason in dead),
        )
        self._db.executemany("DELETE FROM records WHERE id = ?", ((s.id,) for s, _, _ in dead))

    def _config_id(self, config: ConfigKey) -> int:
        ident = self._configs.get(config)
        if ident is None:
            cursor = self._db.execute(
                "INSERT INTO configs (config) VALUES (?)", (json.dumps(list(config)),)
            )
            ident = int(cursor.lastrowid or 0)
            self._new_configs.append((config, ident))
            self._configs[config] = ident
            self._config_keys[ident] = config
        return ident

    def _rollback(self) -> None:
        for config, ident in self._new_configs:
            self._configs.pop(config, None)
            self._config_keys.pop(ident, None)
        self._new_configs.clear()
        # SQLite may have rolled back already (it does on SQLITE_FULL and I/O errors).
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    # -- reading ---------------------------------------------------------------------------------

    def read(self, after: int, limit: int, max_bytes: int) -> list[StoredRecord]:
        """Records with ids above ``after``, in spool order: up to ``limit`` of them, and no more
        than ``max_bytes`` together (but at least one), so large bodies bound the batch too."""
        sizes = self._db.execute(
            "SELECT id, size FROM records WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        if not sizes:
            return []
        last, total = sizes[0][0], 0
        for ident, size in sizes:
            total += size
            if total > max_bytes and ident != sizes[0][0]:
                break
            last = ident
        rows = self._db.execute(
            "SELECT id, created, config, topic, partition, key, value, headers, size FROM records "
            "WHERE id > ? AND id <= ? ORDER BY id",
            (after, last),
        ).fetchall()
        return [
            StoredRecord(
                id=ident,
                created=created,
                config=self._config_keys[config],
                record=KafkaRecord(
                    topic=topic,
                    value=value,
                    key=key,
                    partition=partition,
                    headers=decode_headers(headers),
                ),
                size=size,
            )
            for ident, created, config, topic, partition, key, value, headers, size in rows
        ]

    def totals(self) -> Totals:
        records, size = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM records"
        ).fetchone()
        dead, dead_size = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM dead_letters"
        ).fetchone()
        return Totals(records, size, dead, dead_size, self.oldest_created())

    def oldest_created(self) -> float | None:
        """When the oldest record still here was spooled (the head of the spool; by the key)."""
        row = self._db.execute("SELECT created FROM records ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def possible_duplicates(self) -> int:
        """Records still here that a producer was handed before (at the open: an earlier life)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (_SENT_UPTO,)).fetchone()
        if row is None:
            return 0
        return int(
            self._db.execute("SELECT count(*) FROM records WHERE id <= ?", row).fetchone()[0]
        )

    def dead_letter_causes(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT error, count(*) FROM dead_letters GROUP BY error"))

    def close(self) -> None:
        self._db.close()
