"""The private directory one runner's processes share metrics and health reports through.

It holds prometheus_client's multiprocess files (one set per process, written through mmap by
the counters and the histogram) and one health report per worker (``health_<pid>.json``,
rewritten every second). The parent creates it before forking, so every worker inherits
``PROMETHEUS_MULTIPROC_DIR``; it removes it when the runner exits.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from kafkaupstream.logs import log_event

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: What the counters and the histogram of dead processes are merged into.
_ARCHIVE = "archive"
_COMPACTED_TYPES = ("counter", "histogram")


class MetricsDir:
    """One runner's metrics directory (mode 0700: health reports name brokers)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> MetricsDir:
        """A fresh private directory, selected for prometheus_client in this process and its forks.

        Must run before the workers are forked (they inherit the environment and the module).
        """
        path = tempfile.mkdtemp(prefix="kafkaupstream-metrics-")
        os.environ[ENV] = path
        _use_multiprocess_values()
        log_event(log, logging.INFO, "metrics_dir_created", path=path)
        return cls(path)

    # --- health reports (one writer per file: its worker) --------------------------------------

    def write_report(self, pid: int, report: dict[str, Any]) -> None:
        """Replace ``pid``'s report atomically: a reader sees the old one or the new one."""
        final = self._report_path(pid)
        partial = f"{final}.tmp"
        with open(partial, "w", encoding="utf-8") as out:
            json.dump(report, out, separators=(",", ":"))
        os.replace(partial, final)

    def read_reports(self) -> dict[int, dict[str, Any]]:
        """Every worker's last report, by pid; unreadable ones are skipped."""
        reports: dict[int, dict[str, Any]] = {}
        for path in glob.glob(os.path.join(self.path, "health_*.json")):
            try:
                pid = int(os.path.basename(path)[len("health_") : -len(".json")])
                with open(path, encoding="utf-8") as src:
                    report = json.load(src)
            except (OSError, ValueError):
                continue
            if isinstance(report, dict):
                reports[pid] = report
        return reports

    # --- process exits --------------------------------------------------------------------------

    def process_dead(self, pid: int) -> None:
        """A worker exited: drop its report and live files, keep its counts (compacted)."""
        from prometheus_client import multiprocess

        for path in (self._report_path(pid), f"{self._report_path(pid)}.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        multiprocess.mark_process_dead(pid, self.path)
        for typ in _COMPACTED_TYPES:
            try:
                self._compact(typ, pid)
            except OSError as exc:  # the counts stay in the dead worker's own file
                log_event(
                    log, logging.WARNING, "metrics_compaction_failed", pid=pid, cause=str(exc)
                )

    def _compact(self, typ: str, pid: int) -> None:
        """Add ``<typ>_<pid>.db`` into ``<typ>_archive.db``, so restarts do not pile up files."""
        from prometheus_client.mmap_dict import MmapedDict

        dead = os.path.join(self.path, f"{typ}_{pid}.db")
        if not os.path.exists(dead):
            return
        archive = os.path.join(self.path, f"{typ}_{_ARCHIVE}.db")
        totals: dict[str, float] = {}
        for source in (archive, dead):
            if os.path.exists(source):
                for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(source):
                    totals[key] = totals.get(key, 0.0) + value
        # Written aside and renamed, so the archive a scrape reads is never half-written.
        partial = f"{archive}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        merged = MmapedDict(partial)
        try:
            for key, value in totals.items():
                merged.write_value(key, value, 0.0)
        finally:
            merged.close()
        os.replace(partial, archive)
        os.remove(dead)

    def remove(self) -> None:
        """At exit: the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]

    def _report_path(self, pid: int) -> str:
        return os.path.join(self.path, f"health_{pid}.json")


def _use_multiprocess_values() -> None:
    """Make prometheus_client store values in the directory's mmap files.

    prometheus_client picks its value class when it is first imported, from the environment; if
    anything imported it before the variable was set, pick again (metrics made from now on use it).
    """
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
