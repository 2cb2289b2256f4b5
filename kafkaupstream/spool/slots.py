"""The spool directory: one file per worker slot, an exclusive lock while a process uses it.

Slot ``i`` of a runner with ``n`` workers owns ``spool-i.db`` (and SQLite's ``-wal`` and
``-shm`` beside it) and takes over the files of slots ``j >= n`` with ``j % n == i``: what a
runner with more workers left behind. A file is locked with ``flock`` on ``spool-i.lock``, which
the kernel releases when the process dies, however it dies, so a restarted worker (or the next
runner) can open it at once, and two processes never write one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re

from kafkaupstream.spool.store import FILE_MODE

_NAME = re.compile(r"^spool-(\d{1,6})\.db\Z")


def db_path(directory: str, slot: int) -> str:
    return os.path.join(directory, f"spool-{slot}.db")


def orphan_slots(directory: str, slot: int, slots: int) -> list[int]:
    """Slots past the worker count whose files this slot takes over (none while the
    directory cannot be listed: the own file's open says why)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            match = _NAME.match(entry)
            if match is not None:
                index = int(match.group(1))
                if index >= slots and index % slots == slot:
                    found.append(index)
    return sorted(found)


class SlotLock:
    """An exclusive, non-blocking ``flock`` on a slot's lock file."""

    def __init__(self, directory: str, slot: int) -> None:
        self.path = os.path.join(directory, f"spool-{slot}.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the slot; False while another process does."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self, *, remove: bool = False) -> None:
        """Unlock; with ``remove`` the lock file goes too (a drained orphan's)."""
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def remove_files(path: str) -> None:
    """A drained file and SQLite's companions."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)
