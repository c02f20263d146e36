"""Benchmark: how fast the interactive commands start, as the user runs them.

Run: python tests/benchmarks/bench_startup.py [--runs N]
Times `trackmilter decode ONE.eml`, `trackmilter status IDENT` (on an SQLite store with one
message) and `trackmilter --version`, each a fresh process, beside the interpreter alone
(`python -c pass`) as the baseline from the same run; prints the median and the fastest of
N runs, then the largest imports of each command by `python -X importtime` (self and
cumulative microseconds). Target: decode and status start in under 150 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import BOUNCE_CORPUS  # noqa: E402

TARGET_MS = 150.0


def _time(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _imports(argv: list[str], env: dict[str, str], top: int = 8) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env,
                          capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:  # the command's own imports and what they import directly
            rows.append((int(cum_us), int(self_us), name.strip()))
    rows.sort(reverse=True)
    return [f"    {cum / 1000:7.1f} ms cumulative {s / 1000:6.1f} ms self  {n}"
            for cum, s, n in rows[:top]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("trackmilter"))
    eml = str(sorted(BOUNCE_CORPUS.glob("*.eml"))[0])
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "t.toml"
        conf.write_text(f'[database]\nurl = "sqlite:///{tmp}/t.db"\n')
        env = {**os.environ, "TRACKMILTER_CONFIG": str(conf)}
        subprocess.run([exe, "db", "upgrade"], env=env, check=True, capture_output=True)
        cases = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"], None),
            ("trackmilter --version", [exe, "--version"], ["-m", "trackmilter", "--version"]),
            ("trackmilter decode ONE.eml", [exe, "decode", eml], ["-m", "trackmilter", "decode", eml]),
            ("trackmilter status IDENT", [exe, "status", "nobody@example.org"],
             ["-m", "trackmilter", "status", "nobody@example.org"]),
        ]
        print(f"{'command':32} {'median ms':>10} {'fastest ms':>11}  (runs: {args.runs})")
        results = {}
        for label, argv, _ in cases:
            times = _time(argv, env, args.runs)
            results[label] = statistics.median(times)
            print(f"{label:32} {statistics.median(times):10.1f} {min(times):11.1f}")
        for label, _, modargv in cases:
            if modargv:
                print(f"\n  largest imports of {label} (python -X importtime):")
                print("\n".join(_imports(modargv, env)))
    slow = [k for k in ("trackmilter decode ONE.eml", "trackmilter status IDENT")
            if results[k] > TARGET_MS]
    print(f"\ntarget: decode and status under {TARGET_MS:.0f} ms: "
          + ("met" if not slow else "NOT met for " + ", ".join(slow)))
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
