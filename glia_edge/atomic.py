"""Atomic file writes (no torch): a failed or interrupted write leaves nothing at the target path.

Checkpoints, exports and the ``score`` command's ``--output`` all write through here, so a camera
box without torch can write results the same way training writes weights. Folders (an export,
a synthetic set) are built in a temporary folder beside the target and put in place with
:func:`replace_path`.

A process killed outright (``kill -9``, power loss) cannot remove its temporary folder, so each
one holds a lock file (:data:`LOCK_NAME`, ``flock``-ed for the folder's whole life, with the
owner's pid) and the next build of the same target removes the folders of its own naming pattern
whose lock nobody holds any more (:func:`remove_stale`). Nothing else beside the target is touched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: fall back to checking the owner's pid
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: The lock file inside every staging folder: "pid host", locked while its owner lives.
LOCK_NAME = ".glia-edge.lock"
#: An owner-less folder of the pattern (its owner died before writing the lock) is removed only
#: when it is older than this, so a build that has just created its folder is never raced.
ORPHAN_GRACE_S = 60.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_target(path: Path) -> tuple[Path, bool]:
    """Where a write to ``path`` goes, and whether it can be atomic: an existing FIFO or device
    (``/dev/stdout``, a pipe) is written in place (renaming over it would replace it, and a
    stream has no half-written state to avoid); a symbolic link's target is replaced, so the link
    stays a link; anything else is ``path`` itself."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, or a dangling link (its target is created)
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return path, False
    if path.is_symlink():
        return Path(os.path.realpath(path)), True
    return path, True


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename into place, so a failure leaves nothing at ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would (mkstemp's are owner-only).
    A symbolic link keeps pointing at its target, which is replaced; a FIFO or device is written
    directly (:func:`write_target`).
    """
    path, atomic = write_target(Path(path))
    if not atomic:
        write(path)
        return
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


def check_writable(path: Path) -> None:
    """Raise :class:`OutputError` naming ``path`` and the reason unless :func:`atomic_write` could
    put a file there; nothing is created. Commands call it before long work, so a bad ``--output``
    fails in a second instead of losing the results at the end."""
    from glia_edge.errors import OutputError

    path = Path(path)
    target, atomic = write_target(path)
    if not atomic:  # a FIFO or device: written in place, nothing created beside it
        if not os.access(target, os.W_OK):
            raise OutputError(f"{path}: cannot write (permission denied)")
        return
    if target.is_dir():
        raise OutputError(f"{path}: is a directory, not a file path")
    folder = target.parent  # a link's target is replaced: its folder must take the new file
    while not folder.exists():  # atomic_write creates the missing folders under the first that exists
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot create folders under {folder}: it is a file")
    try:  # a real probe: os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from None


def link_target(path: Path) -> Path:
    """``path``, or where it points when it is a symbolic link (followed to the end, possibly not
    existing yet): what a write to ``path`` replaces, so the link itself stays."""
    return Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)


def replace_path(src: Path, dst: Path) -> None:
    """Move a finished file or folder ``src`` onto ``dst``, replacing what is there.

    A file is replaced in one rename. A folder cannot be, so an older folder at ``dst`` is renamed
    aside first and deleted after: ``dst`` is never a mix of old and new files. A symbolic link at
    ``dst`` keeps pointing where it did and its target is replaced (as :func:`atomic_write` does);
    build ``src`` in :func:`staging_dir` of ``dst`` so that this stays a same-filesystem rename.
    """
    dst = link_target(Path(dst))
    if src.is_dir():  # a whole staging folder: its lock file is not part of the result
        (src / LOCK_NAME).unlink(missing_ok=True)
    old = None
    if dst.is_dir():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (killed, not yet reaped) holds nothing any more
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _held(folder: Path) -> bool:
    """Whether a live process still owns staging folder ``folder`` (unsure counts as held)."""
    lock = folder / LOCK_NAME
    try:
        with open(lock, "r+") as fh:
            if fcntl is not None:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False  # nobody holds the lock: its owner is gone
            pid, host = (fh.read().split() + ["", ""])[:2]
            return host != socket.gethostname() or not pid.isdigit() or _pid_alive(int(pid))
    except FileNotFoundError:  # no lock (yet): held only while young
        try:
            return time.time() - folder.stat().st_mtime < ORPHAN_GRACE_S
        except FileNotFoundError:
            return True  # already gone
    except OSError:
        return True


def remove_stale(target: Path) -> list[Path]:
    """Remove the staging folders ``.NAME.XXXXXXXX.tmp`` of ``target`` that no live process holds,
    and aside folders ``.NAME.old-PID`` whose process is gone; returns what was removed."""
    pattern = re.compile(re.escape(f".{target.name}.") + r"(?:[a-z0-9_]{8}\.tmp|old-(\d+))")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        stale = not _pid_alive(int(match.group(1))) if match.group(1) else not _held(entry)
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by an interrupted build of %s", entry, target.name)
            removed.append(entry)
    return removed


def _lock(folder: Path) -> IO[str]:
    fh = open(folder / LOCK_NAME, "w")
    if fcntl is not None:
        fcntl.flock(fh, fcntl.LOCK_EX)
    fh.write(f"{os.getpid()} {socket.gethostname()}\n")
    fh.flush()
    return fh


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary folder ``.NAME.XXXXXXXX.tmp`` beside ``target``, removed on exit whatever happens.

    Build a multi-file result in it and :func:`replace_path` the finished part onto ``target``
    before the block ends; being beside the target keeps that a same-filesystem rename. Stale
    folders of the same pattern (their owner was killed) are removed first (:func:`remove_stale`);
    the lock file inside is not part of the result (move a subfolder, or the files you wrote).
    """
    target = link_target(Path(target))  # beside what is replaced: a link's target may be on another filesystem
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    lock = _lock(work)
    try:
        yield work
    finally:
        lock.close()
        shutil.rmtree(work, ignore_errors=True)
