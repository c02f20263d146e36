"""The wheel holds the product and nothing else: no test lab, no tests, the migrations in."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_product_only(tmp_path: Path) -> None:
    # No build isolation: no network; the virtualenv has setuptools (scripts/setup).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, timeout=600)
    wheels = list(tmp_path.glob("trackmilter-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"trackmilter"}, tops
    assert not any("lab" in n.split("/") or n.startswith("tests/") for n in names)
    assert "trackmilter/store/migrations/env.py" in names
    assert any(n.startswith("trackmilter/store/migrations/versions/0001_") for n in names)
    assert "trackmilter/py.typed" in names
