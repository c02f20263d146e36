"""Run the rewrite tests (both engines compared, the bounded fuzz run included) on the native
engine built with AddressSanitizer and UndefinedBehaviorSanitizer.

    .venv/bin/python tests/unit/rewrite/native_sanitized.py [--gcov] [pytest arguments]

With --gcov the extension is built with gcc --coverage instead (no sanitizers) and the line
coverage of _native.c by the run is printed at the end.

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


def _gcov(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="trackmilter-gcov-") as tmp:
        package = Path(tmp) / "trackmilter"
        shutil.copytree(SOURCE, package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        target = package / "rewrite" / f"_native{sysconfig.get_config_var('EXT_SUFFIX')}"
        obj = Path(tmp) / "_native.o"
        include = sysconfig.get_paths()["include"]
        subprocess.run(["gcc", "-c", "-fPIC", "-O0", "-g", "--coverage", "-std=c11", "-I", include,
                        str(SOURCE / "rewrite" / "_native.c"), "-o", str(obj)], check=True)
        subprocess.run(["gcc", "-shared", "--coverage", str(obj), "-o", str(target)], check=True)
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "TRACKMILTER_ENGINE": "native", "TRACKMILTER_REQUIRE_NATIVE": "1",
               "TRACKMILTER_EXPECT_NATIVE_AT": str(target)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "unit" / "rewrite"), *argv]
        rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        report = subprocess.run(["gcov", "-n", "-o", tmp, str(SOURCE / "rewrite" / "_native.c")],
                                cwd=tmp, capture_output=True, text=True, check=False)
        print(report.stdout.strip() or report.stderr.strip())
        return rc


def main(argv: list[str]) -> int:
    if argv[:1] == ["--gcov"]:
        return _gcov(argv[1:])
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
