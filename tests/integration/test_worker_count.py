"""``kafkaupstream run`` as APISIX spawns it: KAFKAUPSTREAM_WORKERS and --workers pick the count."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from harness.runner_process import RunnerProcess


def test_the_environment_variable_sets_the_number_of_workers() -> None:
    with RunnerProcess(env={"KAFKAUPSTREAM_WORKERS": "2"}) as runner:
        assert "workers=2" in runner.logs()
        assert len(runner.worker_pids()) == 2


def test_the_flag_beats_the_environment_variable() -> None:
    with RunnerProcess(env={"KAFKAUPSTREAM_WORKERS": "2"}, workers=1) as runner:
        assert runner.worker_pids() == []


def test_a_bad_variable_stops_the_runner_with_a_line_naming_it() -> None:
    with tempfile.TemporaryDirectory(prefix="ku-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "kafkaupstream", "run"],
            env={
                **os.environ,
                "APISIX_LISTEN_ADDRESS": f"unix:{tmp}/runner.sock",
                "KAFKAUPSTREAM_WORKERS": "lots",
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert "event=bad_environment" in result.stderr
    assert "KAFKAUPSTREAM_WORKERS must be a whole number, got 'lots'" in result.stderr
