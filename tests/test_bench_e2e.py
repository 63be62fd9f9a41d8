"""The end-to-end bench rows run (on tiny inputs here; the figures come from the real benchmark)."""
from __future__ import annotations

from pathlib import Path

import pytest

from glia_edge.benchmarks.endtoend import _versioned, make_jpegs, parse_size, run_end_to_end, to_markdown


def test_parse_size() -> None:
    assert parse_size("4000x3000") == (4000, 3000)
    for bad in ("4000", "x3000", "0x10", "axb"):
        with pytest.raises(ValueError, match="4000x3000"):
            parse_size(bad)


def test_generated_jpegs_are_reused(tmp_path: Path) -> None:
    first = make_jpegs(tmp_path, (320, 240), 2)
    stamp = [p.stat().st_mtime_ns for p in first]
    assert make_jpegs(tmp_path, (320, 240), 2) == first and [p.stat().st_mtime_ns for p in first] == stamp


def test_rows_for_files_and_frames(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    rows = run_end_to_end(tiny_checkpoint, sizes=[(640, 480)], count=3, files=None, frames=["720p"], workers=2,
                          repeats=1, work=tmp_path)
    files = [r for r in rows if r.kind == "files"]
    frames = [r for r in rows if r.kind == "frame"]
    assert [r.path.split(":")[0] for r in files] == [
        "old", "new", "decode only (v2, 2 decode threads, nothing inferred)", "model only (batch 3)"]  # the crops it ran
    assert all(r.images_per_s and r.images_per_s > 0 for r in rows)
    assert files[1].vs_old and files[1].vs_model_only and files[2].vs_old and files[2].vs_model_only
    assert [r.path for r in frames] == ["old: exact (v1)", "v2, whole-frame resize", "new: fast (v2)"]
    assert frames[0].vs_old is None and frames[1].vs_old and frames[2].vs_old
    assert all(0 < (r.preprocess_share or 0) < 1 and r.preprocess_ms and r.infer_ms for r in frames)
    text = to_markdown(rows, "machine", "cmd")
    assert text.count("\n| ") == len(rows) + 1


def test_every_file_path_refuses_to_time_an_image_it_could_not_read(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from glia_edge.runtimes.base import load_batched

    good = [str(p) for p in make_jpegs(tmp_path, (320, 240), 2)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with load_batched(tiny_checkpoint) as model:
        # old (v1, serial), new (v2, threads), and the new path's decoding alone
        for run in (_versioned(model, 1, 0), _versioned(model, 2, 2), _versioned(model, 2, 2, infer=False)):
            with pytest.raises(RuntimeError, match="broken.jpg"):
                run(good + [str(broken)])
            run(good)


def test_bench_cli_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    import json

    from typer.testing import CliRunner

    from glia_edge.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--end-to-end", str(tiny_checkpoint), "--e2e-sizes", "500x400",
                                      "--e2e-count", "2", "--frames", "", "--e2e-repeats", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "e2e.json").read_text())
    assert len(doc["rows"]) == 4 and "--end-to-end" in doc["command"] and doc["machine"]


def test_jpeg_decoder_comparison_runs_with_pillow_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from glia_edge.benchmarks import jpeg_decoders

    real_import = builtins.__import__

    def without_others(name: str, *args: object, **kwargs: object) -> object:
        if name in ("simplejpeg", "pyvips"):
            raise ImportError(f"no {name} here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_others)
    assert jpeg_decoders.main(["--size", "900x700", "--count", "2", "--rounds", "1", "--work", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| pillow ")]
    assert len(rows) == 1 and "| 1.000 | 0 | 2 |" in rows[0] and "libjpeg-turbo" in rows[0]
    assert "machine: " in table and "--size 900x700" in table
    with pytest.raises(SystemExit):
        jpeg_decoders.main([str(tmp_path / "nothing-here")])
