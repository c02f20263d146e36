"""The native rewriting engine (trackmilter.rewrite._native), built when a C compiler and
Python's headers are there (Debian: gcc, python3-dev); everything else is in pyproject.toml.

The extension is optional: without a compiler the build says so and goes on, and
trackmilter runs its Python engine (trackmilter.rewrite.native explains which one runs).
TRACKMILTER_NATIVE_CFLAGS adds compiler flags (the sanitizer build uses it).
"""

from __future__ import annotations

import os
import shlex

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
_EXTRA = shlex.split(os.environ.get("TRACKMILTER_NATIVE_CFLAGS", ""))

setup(
    ext_modules=[
        Extension(
            "trackmilter.rewrite._native",
            sources=["milter/trackmilter/rewrite/_native.c"],
            extra_compile_args=_FLAGS + _EXTRA,
            extra_link_args=_EXTRA,
            optional=True,
        )
    ]
)
