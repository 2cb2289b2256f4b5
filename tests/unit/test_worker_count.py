"""The default worker count: the CPUs the runner may use, not the host's; env and flag override."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kafkaupstream.worker_count import cgroup_quota, usable_cpus, worker_count


def cgroup_tree(tmp_path: Path, own: str, cpu_max: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup (``cpu_max``: directory below the root -> cpu.max text) and a fake
    /proc/self/cgroup naming ``own`` as this process's cgroup; (root, proc file)."""
    root = tmp_path / "cgroup"
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for directory, text in cpu_max.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_a_container_quota_caps_the_count(tmp_path: Path) -> None:
    # docker run --cpus 1 writes "100000 100000" into the container's own cgroup ("0::/").
    root, proc = cgroup_tree(tmp_path, "/", {"": "100000 100000"})
    assert cgroup_quota(root, proc) == 1.0
    assert usable_cpus(root, proc) == 1


def test_no_quota_leaves_the_affinity_count(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {"": "max 100000"})
    assert cgroup_quota(root, proc) is None
    assert usable_cpus(root, proc) == affinity()


def test_a_parent_cgroups_quota_binds_the_child(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "/kubepods/pod1/ctr",
        {"kubepods/pod1": "50000 100000", "kubepods/pod1/ctr": "max 100000"},
    )
    assert cgroup_quota(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1  # at least one worker


def test_the_tightest_quota_on_the_path_wins(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "/a/b", {"a": "300000 100000", "a/b": "150000 100000"})
    assert cgroup_quota(root, proc) == 1.5


@pytest.mark.parametrize(
    ("quota", "expected"),
    [("120000 100000", 1), ("150000 100000", 2), ("249000 100000", 2), ("250000 100000", 3)],
)
def test_a_fractional_quota_rounds_to_the_nearest_cpu(
    tmp_path: Path, quota: str, expected: int
) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {"": quota})
    assert usable_cpus(root, proc) == min(expected, affinity())


def test_cgroup_v1_or_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cgroup_quota(tmp_path, proc) is None
    assert cgroup_quota(tmp_path, tmp_path / "missing") is None


@pytest.mark.parametrize("text", ["", "garbage", "max", "0 100000", "abc 100000"])
def test_an_unreadable_cpu_max_is_ignored(tmp_path: Path, text: str) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {"": text})
    assert cgroup_quota(root, proc) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to narrow the mask")
def test_the_affinity_mask_is_counted_not_the_hosts_cpus(tmp_path: Path) -> None:
    # A child pinned to one CPU (taskset, --cpuset-cpus) sees os.cpu_count() CPUs but may use one.
    root, proc = cgroup_tree(tmp_path, "/", {})
    one_cpu = min(os.sched_getaffinity(0))
    code = (
        "import os, sys; from pathlib import Path; "
        "from kafkaupstream.worker_count import usable_cpus; "
        "print(os.cpu_count(), usable_cpus(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), str(proc)],
        preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert int(out[0]) >= 2
    assert out[1] == "1"


def test_the_environment_overrides_the_cpu_count(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {"": "100000 100000"})
    assert worker_count(None, {"KAFKAUPSTREAM_WORKERS": "6"}, root, proc) == 6
    assert worker_count(None, {"KAFKAUPSTREAM_WORKERS": " "}, root, proc) == 1


def test_the_flag_overrides_the_environment(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {})
    assert worker_count(3, {"KAFKAUPSTREAM_WORKERS": "6"}, root, proc) == 3
    # The flag wins even over a bad variable: the variable is not read at all.
    assert worker_count(2, {"KAFKAUPSTREAM_WORKERS": "many"}, root, proc) == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [("many", "must be a whole number, got 'many'"), ("0", "must be at least 1, got 0")],
)
def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, value: str, message: str
) -> None:
    root, proc = cgroup_tree(tmp_path, "/", {})
    with pytest.raises(ValueError, match=f"KAFKAUPSTREAM_WORKERS {message}"):
        worker_count(None, {"KAFKAUPSTREAM_WORKERS": value}, root, proc)


def test_run_help_names_the_variable_and_the_default_here() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kafkaupstream", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    assert "KAFKAUPSTREAM_WORKERS" in flat
    assert f"{usable_cpus()} here" in flat
