"""A longer differential fuzz campaign than the suite's bounded run: the hypothesis tests
of test_native_fuzz.py and test_native_signing.py with random seeds and many examples.

    .venv/bin/python tests/unit/rewrite/fuzz_campaign.py [--examples N] [--rounds R]

Each round is a fresh random run of every fuzz test (N examples each); prints the examples
run and the time, and exits non-zero at the first difference (hypothesis shows the
smallest failing input). Runs at the lowest CPU priority: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TESTS = ["tests/unit/rewrite/test_native_fuzz.py", "tests/unit/rewrite/test_native_signing.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, "TRACKMILTER_FUZZ_EXAMPLES": str(args.examples),
           "TRACKMILTER_FUZZ_RANDOM": "1", "TRACKMILTER_REQUIRE_NATIVE": "1"}
    os.nice(19)
    for r in range(1, args.rounds + 1):
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *TESTS], cwd=ROOT, env=env, check=False)
        took = time.monotonic() - t0
        print(f"round {r}: {args.examples} examples a fuzz test, {took:.0f} s, "
              f"{'ok' if proc.returncode == 0 else 'DIFFERENCE FOUND'}", flush=True)
        if proc.returncode != 0:
            return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
