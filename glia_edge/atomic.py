"""Atomic file writes (no torch): a failed or interrupted write leaves nothing at the target path.

Checkpoints, exports and the ``score`` command's ``--output`` all write through here, so a camera
box without torch can write results the same way training writes weights.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename into place, so a failure leaves nothing at ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would (mkstemp's are owner-only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
