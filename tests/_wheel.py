"""A wheel of this checkout, built once per test session in a temporary folder (not a conftest:
``test_packaging.py`` and ``test_minimal_install.py`` import :func:`built_wheel`)."""
from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def built_wheel() -> Path:
    """``pip wheel`` of the repository (no dependencies) into a fresh temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="glia-edge-wheel-"))
    atexit.register(shutil.rmtree, out, True)  # removed when the test session ends
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("glia_edge-*.whl")
    return wheel
