"""Run the rewrite tests (both engines compared, the bounded fuzz run included) on the native
engine built with AddressSanitizer and UndefinedBehaviorSanitizer.

    .venv/bin/python tests/unit/rewrite/native_sanitized.py [pytest arguments]

Needs clang and libclang-rt-dev (scripts/setup installs them). The extension is built with
clang into a private copy of the package (the checkout's own build is left alone); the
tests run against that copy with the ASan runtime preloaded (the interpreter itself is not
instrumented), and any sanitizer report fails the run. Leak checking is off: CPython keeps
objects alive until exit by design, and the extension allocates only through Python's
allocators. Exits with pytest's status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "milter" / "trackmilter"
FLAGS = [
    "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
    "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
    "-Werror",
]


def main(argv: list[str]) -> int:
    clang = shutil.which("clang")
    if clang is None:
        print("native_sanitized: clang not found (apt-get install clang libclang-rt-dev)",
              file=sys.stderr)
        return 2
    runtime = subprocess.run([clang, "-print-file-name=libclang_rt.asan-x86_64.so"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not Path(runtime).is_file():
        print(f"native_sanitized: no ASan runtime ({runtime}): apt-get install libclang-rt-dev",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="trackmilter-asan-") as tmp:
        package = Path(tmp) / "trackmilter"
        shutil.copytree(SOURCE, package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        target = package / "rewrite" / f"_native{suffix}"
        subprocess.run(
            [clang, *FLAGS, "-I", sysconfig.get_paths()["include"],
             str(SOURCE / "rewrite" / "_native.c"), "-o", str(target)],
            check=True,
        )
        env = {
            **os.environ,
            "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "LD_PRELOAD": runtime,
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:halt_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "TRACKMILTER_ENGINE": "native",
            "TRACKMILTER_REQUIRE_NATIVE": "1",
            "TRACKMILTER_EXPECT_NATIVE_AT": str(target),
            "PYTHONMALLOC": "malloc",  # every allocation through ASan's malloc
        }
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "unit" / "rewrite"), *argv]
        return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
