"""Micro-benchmark of the metrics recorder's fold: prints figures, asserts nothing about time.

    .venv/bin/python -m harness.bench.recorder_bench

The recorder folds queued delivery reports into prometheus_client's multiprocess files on the
event loop, one ``Histogram.observe`` per delivered record. This times a fold per record, to be
set against the server CPU time of a request (``make bench``).
"""

from __future__ import annotations

import os
import random
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        # Before prometheus_client reads it: the recorder writes the runner's multiprocess files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        from kafkaupstream.observability.recorder import Recorder

        recorder = Recorder()
        rng = random.Random(1)
        records = 100_000
        for _ in range(records):
            recorder.delivery("orders", None, rng.random() * 0.02)
        started = time.perf_counter()
        recorder.fold()
        elapsed = time.perf_counter() - started
    print(f"fold: {elapsed / records * 1e6:.2f} us per delivered record ({records} records)")


if __name__ == "__main__":
    main()
