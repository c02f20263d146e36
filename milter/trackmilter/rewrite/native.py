"""Which rewriting engine runs: the native one (the C extension `_native`) or Python's.

The Python engine is the reference; the native engine runs the same MIME walk with its hot
path (href scan, link checks, quoted-printable splice) in C and returns byte-identical
results. `TRACKMILTER_ENGINE` chooses: `python` forces the reference engine, `native`
requires the extension (an import error when it is missing), `auto` (default, also when
empty) takes the extension when it imports and the Python engine otherwise. The choice is
made once, when this module is imported; `ENGINE` names it and `NOTE` says why the Python
engine runs when it does (for the daemon's start-up log).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["ENGINE", "ENV", "NOTE", "extension"]

ENV = "TRACKMILTER_ENGINE"
_NAME = "trackmilter.rewrite._native"


def _load() -> tuple[ModuleType | None, str | None]:
    """(the extension or None, why it is not used)."""
    wanted = os.environ.get(ENV, "").strip().lower() or "auto"
    if wanted == "python":
        return None, f"{ENV}=python"
    if wanted not in ("auto", "native"):
        return None, f"{ENV}={wanted!r} is not python, native or auto: running the Python engine"
    try:
        module = importlib.import_module(_NAME)
    except ImportError as exc:
        if wanted == "native":
            raise ImportError(f"{ENV}=native but the native engine cannot be loaded: {exc}") from exc
        return None, f"native engine not available ({exc}); running the Python engine"
    return module, None


_module, NOTE = _load()
ENGINE = "native" if _module is not None else "python"


def extension() -> ModuleType | None:
    """The loaded extension module (None when the Python engine runs, or was forced)."""
    return _module


def try_extension() -> ModuleType | None:
    """The extension whatever the environment says (None when it cannot be imported): for
    the differential tests and the benchmark, which run both engines side by side."""
    try:
        return importlib.import_module(_NAME)
    except ImportError:
        return None
