"""Atomic writes: a failed write leaves nothing; a finished folder replaces an older one whole; a build
killed with SIGKILL leaves a staging folder that the next build of the same target removes."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from glia_edge.atomic import atomic_write, check_writable, remove_stale, replace_path, staging_dir


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "scores.csv"
    atomic_write(target, lambda tmp: tmp.write_text("old"))

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["scores.csv"]


def test_replace_path_swaps_whole_folders_and_files(tmp_path: Path) -> None:
    dst = tmp_path / "artifact"
    dst.mkdir()
    (dst / "stale.bin").write_text("old")
    new = tmp_path / ".artifact.tmp"
    new.mkdir()
    (new / "model.xml").write_text("new")
    replace_path(new, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["model.xml"]  # nothing of the old folder mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]  # no temp or aside folder left
    (tmp_path / "a.onnx").write_text("v1")
    (tmp_path / "b.onnx").write_text("v2")
    replace_path(tmp_path / "b.onnx", tmp_path / "a.onnx")
    assert (tmp_path / "a.onnx").read_text() == "v2" and not (tmp_path / "b.onnx").exists()


# -- stale staging folders after a kill -9 -------------------------------------------------------
HOLD_STAGING = """
import sys, time
from pathlib import Path
from glia_edge.atomic import staging_dir
with staging_dir(Path(sys.argv[1])) as work:
    (work / "part.bin").write_bytes(b"half-written")
    print(work, flush=True)
    time.sleep(120)
"""


def _holder(target: Path) -> tuple[subprocess.Popen, Path]:
    """A real process inside ``staging_dir(target)``; returns it and its staging folder."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_STAGING, str(target)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert line, "the holder process did not start"
    return proc, Path(line)


@pytest.mark.timeout(900)
def test_export_after_a_kill_removes_only_its_own_stale_folders(tmp_path: Path, tiny_checkpoint: Path) -> None:
    target = tmp_path / "model.onnx"
    # A real export, killed with SIGKILL while it works in its staging folder.
    command = [sys.executable, "-m", "glia_edge", "export", "-c", str(tiny_checkpoint), "--target", "onnx",
               "--output", str(target)]
    export = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # torch's import alone can take a minute on a busy machine
    while not list(tmp_path.glob(".model.onnx.*.tmp")) and time.monotonic() < deadline and export.poll() is None:
        time.sleep(0.05)
    assert export.poll() is None, "the export ended before it could be killed"
    os.kill(export.pid, signal.SIGKILL)
    export.wait(30)
    killed = list(tmp_path.glob(".model.onnx.*.tmp"))
    assert len(killed) == 1 and not target.exists()  # what kill -9 leaves behind
    live, live_dir = _holder(target)  # a build of the same target that is still running
    dead, dead_dir = _holder(target)
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(30)
    others = [tmp_path / ".other.onnx.abcd1234.tmp", tmp_path / ".model.onnx.short.tmp", tmp_path / "model.onnx.bak"]
    for folder in others:
        folder.mkdir()
    (tmp_path / ".model.onnx.abcd1234.tmp").write_text("a file, not a staging folder")
    try:
        from glia_edge.export import export as run_export

        run_export(tiny_checkpoint, target="onnx", output=target)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert target.is_file() and not killed[0].exists() and not dead_dir.exists()
        assert live_dir.is_dir() and (live_dir / "part.bin").is_file()  # held by a live process: kept
        assert all(p.exists() for p in others) and (tmp_path / ".model.onnx.abcd1234.tmp").is_file(), left
    finally:
        live.kill()
        live.wait(30)


def test_staging_folder_lock_does_not_end_up_in_the_result(tmp_path: Path) -> None:
    target = tmp_path / "set"
    with staging_dir(target) as work:
        (work / "labels.csv").write_text("path,score\n")
        replace_path(work, target)
    assert sorted(p.name for p in target.iterdir()) == ["labels.csv"]
    assert remove_stale(target) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_symlink_stays_a_link_to_its_replaced_target(tmp_path: Path) -> None:
    target = tmp_path / "real" / "scores.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "scores.csv"
    link.symlink_to(target)
    check_writable(link)
    atomic_write(link, lambda tmp: tmp.write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["scores.csv"]  # no temporary file left
    dangling = tmp_path / "later.csv"
    dangling.symlink_to(target.parent / "later.csv")
    atomic_write(dangling, lambda tmp: tmp.write_text("made"))
    assert dangling.is_symlink() and (target.parent / "later.csv").read_text() == "made"


def test_a_fifo_is_written_in_place_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    check_writable(fifo)
    atomic_write(fifo, lambda tmp: tmp.write_text("path,score\n"))
    reader.join(10)
    assert got == ["path,score\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
