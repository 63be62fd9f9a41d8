"""Atomic writes: a failed write leaves nothing; a finished folder replaces an older one whole."""
from __future__ import annotations

from pathlib import Path

import pytest

from glia_edge.atomic import atomic_write, replace_path


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
