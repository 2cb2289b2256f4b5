"""How many worker processes ``kafkaupstream run`` forks when ``--workers`` is not given.

``os.cpu_count()`` is the host's count: in a container limited with ``--cpus 2`` on a 64-core host
it would fork 64 workers, each with its own producers and broker connections, all throttled to two
CPUs. The default is therefore the CPUs this process may really use: its affinity mask
(``os.sched_getaffinity``, what ``--cpuset-cpus`` and ``taskset`` set), capped by the cgroup v2
``cpu.max`` quota of its cgroup and every parent (what ``--cpus`` and Kubernetes CPU limits set),
rounded to the nearest whole CPU and at least 1. ``KAFKAUPSTREAM_WORKERS`` overrides that default,
``--workers`` overrides both. cgroup v1 quotas are not read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "KAFKAUPSTREAM_WORKERS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where that is not available)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> float | None:
    """The tightest cgroup v2 ``cpu.max`` quota (in CPUs) on this process's cgroup path, if any.

    ``cpu.max`` holds ``QUOTA PERIOD`` or ``max PERIOD``; a parent's limit binds its children,
    so every directory from the process's cgroup up to the root is read. None: no quota set,
    or no cgroup v2 hierarchy (cgroup v1, not Linux).
    """
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    # cgroup v2 is the single line "0::/path" (inside a container's namespace usually "0::/").
    paths = [line[3:] for line in lines if line.startswith("0::")]
    if not paths:
        return None
    directory = cgroup_root / paths[0].strip().lstrip("/")
    quotas = []
    while True:
        quota = _read_cpu_max(directory / "cpu.max")
        if quota is not None:
            quotas.append(quota)
        if directory == cgroup_root or cgroup_root not in directory.parents:
            break
        directory = directory.parent
    return min(quotas) if quotas else None


def _read_cpu_max(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The affinity count capped by the cgroup quota, rounded to the nearest CPU, at least 1.

    Nearest rather than up or down: one worker past a fractional quota is throttled, one short of
    it leaves the fraction unused; either way the loss stays below half a CPU.
    """
    cpus = float(affinity_cpus())
    quota = cgroup_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, math.floor(cpus + 0.5))


def worker_count(
    flag: int | None,
    environ: Mapping[str, str],
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
) -> int:
    """``--workers``, else ``KAFKAUPSTREAM_WORKERS``, else :func:`usable_cpus`.

    Raises ValueError naming the setting when the one that applies is not a whole number >= 1.
    """
    if flag is not None:
        if flag < 1:
            raise ValueError(f"--workers must be at least 1, got {flag}")
        return flag
    text = environ.get(ENV_VAR, "").strip()
    if not text:
        return usable_cpus(cgroup_root, proc_self_cgroup)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a whole number, got {text!r}") from None
    if count < 1:
        raise ValueError(f"{ENV_VAR} must be at least 1, got {count}")
    return count
