"""Atomic file writes (no torch): a failed or interrupted write leaves nothing at the target path.

Checkpoints, exports and the ``score`` command's ``--output`` all write through here, so a camera
box without torch can write results the same way training writes weights. Folders (an export,
a synthetic set) are built in a temporary folder beside the target and put in place with
:func:`replace_path`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


def replace_path(src: Path, dst: Path) -> None:
    """Move a finished file or folder ``src`` onto ``dst``, replacing what is there.

    A file is replaced in one rename. A folder cannot be, so an older folder at ``dst`` is renamed
    aside first and deleted after: ``dst`` is never a mix of old and new files.
    """
    old = None
    if dst.is_dir():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary folder ``.NAME.XXXXXXXX.tmp`` beside ``target``, removed on exit whatever happens.

    Build a multi-file result in it and :func:`replace_path` the finished part onto ``target``
    before the block ends; being beside the target keeps that a same-filesystem rename.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
