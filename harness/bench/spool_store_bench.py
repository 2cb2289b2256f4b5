"""Spool storage engines compared: SQLite (WAL, synchronous=FULL) against an append-only log.

``python -m harness.bench.spool_store_bench [--dir DIR] [--seconds S]`` prints, for each engine
and group-commit size, records per second and fsyncs per second with 1 KiB records, then a crash
check for each: a writer process is SIGKILLed while committing, and every record it reported as
committed must be read back. The log is the best case for an append-only design (append + one
fdatasync per batch, CRC-framed, no index and no removal after delivery); SQLite's figure is the
runner's own store (``kafkaupstream.spool.store``). A benchmark: it prints, it asserts nothing
about time.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable

from kafkaupstream.producers import KafkaRecord, canonical_config
from kafkaupstream.spool.store import SpoolStore, record_size

_FRAME = struct.Struct("!II")  # payload length, CRC32
CONFIG = canonical_config({"bootstrap.servers": "127.0.0.1:9092"})
GROUPS = (1, 8, 64, 256)


class SegmentLog:
    """An append-only file of CRC-framed records; a torn tail is cut at the first bad frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, payloads: list[bytes]) -> None:
        frames = b"".join(_FRAME.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        os.write(self._fd, frames)
        os.fdatasync(self._fd)

    def read_all(self) -> list[bytes]:
        with open(self.path, "rb") as f:
            data = f.read()
        out, at = [], 0
        while at + _FRAME.size <= len(data):
            n, crc = _FRAME.unpack_from(data, at)
            payload = data[at + _FRAME.size : at + _FRAME.size + n]
            if len(payload) < n or zlib.crc32(payload) != crc:
                break
            out.append(payload)
            at += _FRAME.size + n
        return out

    def close(self) -> None:
        os.close(self._fd)


def _record(i: int) -> KafkaRecord:
    body = (b'{"n":%d,"pad":"' % i).ljust(1022, b"x") + b'"}'
    return KafkaRecord("bench", body, str(i).encode())


def _sqlite_writer(path: str) -> Callable[[list[KafkaRecord]], None]:
    store = SpoolStore(path)
    now = time.time

    def write(batch: list[KafkaRecord]) -> None:
        store.commit([(CONFIG, r, now(), record_size(r)) for r in batch])

    return write


def _log_writer(path: str) -> Callable[[list[KafkaRecord]], None]:
    log = SegmentLog(path)

    def write(batch: list[KafkaRecord]) -> None:
        log.append([(r.value or b"") for r in batch])

    return write


ENGINES: dict[str, Callable[[str], Callable[[list[KafkaRecord]], None]]] = {
    "sqlite-wal": _sqlite_writer,
    "segment-log": _log_writer,
}


def throughput(engine: str, directory: str, group: int, seconds: float) -> tuple[float, float]:
    """(records/s, commits/s) for ``seconds`` of back-to-back group commits."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        write = ENGINES[engine](os.path.join(tmp, "spool"))
        n = commits = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            write([_record(n + i) for i in range(group)])
            n += group
            commits += 1
        wall = time.perf_counter() - started
    return n / wall, commits / wall


def crash_check(engine: str, directory: str) -> str:
    """SIGKILL a writer mid-commit; every record it reported committed must be read back."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "spool")
        writer = subprocess.Popen(
            [sys.executable, "-m", "harness.bench.spool_store_bench", "--write", engine, path],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        time.sleep(0.5)
        writer.send_signal(signal.SIGKILL)
        acked = [int(line) for line in writer.stdout.read().split()]
        writer.wait()
        committed = acked[-1] if acked else 0
        if engine == "sqlite-wal":
            store = SpoolStore(path)
            found = store.totals().records
            store.close()
        else:
            found = len(SegmentLog(path).read_all())
        verdict = "ok" if found >= committed else "LOST RECORDS"
        return f"{verdict}: {committed:,} reported committed, {found:,} read back after SIGKILL"


def _write_forever(engine: str, path: str) -> None:
    write = ENGINES[engine](path)
    n = 0
    while True:
        write([_record(n + i) for i in range(64)])
        n += 64
        print(n, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where the files go (default: the temp dir)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument("--write", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        _write_forever(*args.write)
        return
    directory = args.dir or tempfile.gettempdir()
    print(f"spool engines, 1 KiB records, files in {directory}")
    print("| engine | records per commit | records/s | commits (fsyncs)/s |")
    print("|---|--:|--:|--:|")
    for group in GROUPS:
        for engine in ENGINES:
            rate, commits = throughput(engine, directory, group, args.seconds)
            print(f"| {engine} | {group} | {rate:,.0f} | {commits:,.0f} |", flush=True)
    for engine in ENGINES:
        print(f"crash check, {engine}: {crash_check(engine, directory)}")


if __name__ == "__main__":
    main()
