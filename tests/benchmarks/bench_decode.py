"""Benchmark and report: our bounce decoder against sisimai on the same corpus, same run.

Run: python tests/benchmarks/bench_decode.py [--rounds N]
Prints the conformance figures against the issue's targets, then messages per second for
trackmilter.reports.decode and for sisimai (Debian package libsisimai-perl, driven by a
small Perl script over the same files), side by side. The two sides take turns, pass for
pass, and each keeps its fastest: on a shared machine that is the least noisy figure.
Exits 1 when ours is below 2x sisimai's speed; without sisimai it says how to install it
and compares nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # for tests.* when run as a script

from tests.support import BOUNCE_CORPUS  # noqa: E402
from tests.unit.reports.test_conformance import TARGETS, measure  # noqa: E402

from trackmilter.reports import decode  # noqa: E402

TARGET_RATIO = 2.0
# Sisimai->make parses and classifies one file, as decode() does for one message. The
# script runs one timed pass per line it reads, so perl start-up and module loading are
# not counted and its passes interleave with ours: on a shared machine both sides then
# see the same load, and each keeps its fastest pass (the least noisy figure).
SISIMAI_SCRIPT = r"""
use strict; use warnings; use Sisimai; use Time::HiRes qw(time);
$| = 1;
my @files = @ARGV;
while (my $line = <STDIN>) {
    my $t0 = time;
    for my $f (@files) { my $v = Sisimai->make($f); }
    printf "%.6f\n", time - $t0;
}
"""


def sisimai_available() -> bool:
    """Is perl there, with the Sisimai module loadable?"""
    if shutil.which("perl") is None:
        return False
    probe = subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True, check=False)
    return probe.returncode == 0


def one_pass(blobs: list[bytes]) -> float:
    """Seconds for our decoder to decode every message once."""
    start = time.perf_counter()
    for raw in blobs:
        decode(raw)
    return time.perf_counter() - start


def race(files: list[Path], rounds: int, with_sisimai: bool) -> tuple[float, float]:
    """Fastest pass of ours and of sisimai (0.0 when not run), passes interleaved."""
    blobs = [f.read_bytes() for f in files]  # read beforehand, as a milter has them
    ours: list[float] = []
    theirs: list[float] = []
    perl = None
    if with_sisimai:
        perl = subprocess.Popen(
            ["perl", "-e", SISIMAI_SCRIPT, *map(str, files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    try:
        for _ in range(rounds):
            ours.append(one_pass(blobs))
            if perl is not None and perl.stdin is not None and perl.stdout is not None:
                perl.stdin.write("go\n")
                perl.stdin.flush()
                theirs.append(float(perl.stdout.readline()))
    finally:
        if perl is not None:
            perl.communicate()
    return min(ours), min(theirs, default=0.0)


def report_conformance() -> None:
    """Print the conformance figures and whether each issue target is met."""
    figures = measure()
    print(f"conformance: {figures.summary()}")
    for key, target in TARGETS.items():
        value = figures.ratio(key)
        print(
            f"  target {key} >= {target:.2f}: {value:.3f} {'met' if value >= target else 'NOT met'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    files = sorted(BOUNCE_CORPUS.glob("*.eml"))
    report_conformance()
    available = sisimai_available()
    ours, theirs = race(files, args.rounds, available)
    count = len(files)
    print(f"trackmilter.reports.decode: {count / ours:9.1f} msg/s (best of {args.rounds} passes)")
    if not available:
        print("sisimai not installed: apt-get install -y libsisimai-perl  (nothing compared)")
        return 0
    ratio = theirs / ours
    print(f"sisimai (Sisimai->make):    {count / theirs:9.1f} msg/s (best of {args.rounds} passes)")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"speed-up: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x) {verdict}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
