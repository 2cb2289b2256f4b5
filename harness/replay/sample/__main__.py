"""``python -m harness.replay.sample [--out-dir DIR]``: record the replay sample again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.replay.sample import DATA_DIR, SampleError, generate
from harness.replay.sample.cases import CASES


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.replay.sample", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR, help="default %(default)s")
    args = parser.parse_args()
    try:
        sample = generate(args.out_dir)
    except SampleError as exc:
        print(f"python -m harness.replay.sample: {exc}", file=sys.stderr)
        return 1
    print(
        f"Recorded {len(CASES)} exchanges to {sample} (routes: {sample.with_name('routes.yaml')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
