"""``glia-edge score``: every kind of unreadable input is reported with its path and reason, in the
output and as one stderr line, while the rest are scored and the exit code says some failed.

Grayscale, RGBA and 16-bit images are converted and must score exactly like their RGB twins.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from glia_edge.cli import app

GOOD = "astronaut_b0.jpg"


def score(*args: object):
    return CliRunner().invoke(app, ["score", *map(str, args)])


def csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 50_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (2.5 gigapixels): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Path:
    """Good, convertible and broken inputs side by side."""
    root = tmp_path_factory.mktemp("score_inputs")
    good = image_dir / GOOD
    shutil.copy(good, root / GOOD)
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is a text file, not a JPEG\n")
    bomb_png(root / "bomb.png")
    Image.fromarray(np.linspace(0, 1, 120 * 90, dtype=np.float32).reshape(90, 120)).save(root / "float.tif")
    rgb = Image.open(good).convert("RGB")
    gray = rgb.convert("L")
    rgb.save(root / "rgb.png")
    gray.save(root / "gray.png")
    gray.convert("RGB").save(root / "gray_as_rgb.png")
    Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257).save(root / "gray16.png")
    rgba = rgb.copy()
    rgba.putalpha(Image.new("L", rgb.size, 100))
    rgba.save(root / "rgba.png")
    return root


BAD = [("truncated.jpg", "truncated"), ("empty.jpg", "empty file"), ("text.jpg", "not an image"),
       ("bomb.png", "decompression bomb"), ("float.tif", "unsupported image mode 'F'"),
       ("missing.jpg", "file not found")]


@pytest.mark.parametrize("name,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_reported_and_the_rest_scored(inputs: Path, tiny_checkpoint: Path, name: str, reason: str) -> None:
    bad = inputs / name
    result = score(bad, inputs / GOOD, "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 1, result.output
    rows = csv_rows(result.stdout)
    assert rows[name]["status"] == "error" and reason in rows[name]["error"] and rows[name]["score"] == ""
    assert rows[GOOD]["status"] == "ok" and np.isfinite(float(rows[GOOD]["score"]))
    (line,) = error_lines(result.stderr)
    assert str(bad) in line and reason in line


def test_max_pixels_option_refuses_large_images(inputs: Path, tiny_checkpoint: Path) -> None:
    result = score(inputs / GOOD, "-m", tiny_checkpoint, "-f", "csv", "--max-pixels", 1000)
    assert result.exit_code == 1
    row = csv_rows(result.stdout)[GOOD]
    assert row["status"] == "error" and "over the limit of 1000" in row["error"]


def test_grayscale_rgba_and_16bit_are_converted_and_scored(inputs: Path, tiny_checkpoint: Path) -> None:
    names = ["rgb.png", "rgba.png", "gray.png", "gray_as_rgb.png", "gray16.png"]
    result = score(*(inputs / n for n in names), "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert all(rows[n]["status"] == "ok" for n in names)
    s = {n: float(rows[n]["score"]) for n in names}
    # Same pixels after conversion; only the position in the batch differs (float summation order).
    assert s["rgba.png"] == pytest.approx(s["rgb.png"], abs=1e-4)  # alpha is dropped, not composited
    assert s["gray.png"] == pytest.approx(s["gray_as_rgb.png"], abs=1e-4)
    assert s["gray16.png"] == pytest.approx(s["gray_as_rgb.png"], abs=1e-4)
    assert abs(s["gray.png"] - s["rgb.png"]) > 1e-3  # the conversions are not all collapsing to one input
    assert not error_lines(result.stderr)


def test_folder_is_searched_recursively(tmp_path: Path, image_dir: Path, tiny_checkpoint: Path) -> None:
    names = sorted(p.name for p in image_dir.glob("*.jpg"))[:4]
    for i, name in enumerate(names):
        sub = tmp_path / "a" / ("b" * i)
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(image_dir / name, sub / name)
    (tmp_path / "a" / "notes.txt").write_text("not an image, and not picked up")
    result = score(tmp_path / "a", "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert sorted(rows) == names and all(r["status"] == "ok" for r in rows.values())
    assert "skipped 1 file(s) in folders with an unsupported suffix" in result.stderr  # not silently
    doc = json.loads(score(tmp_path / "a", "-m", tiny_checkpoint, "-f", "json").stdout)
    assert doc["skipped"] == [str(tmp_path / "a" / "notes.txt")] and len(doc["results"]) == len(names)


#: Pillow formats it writes but that are not photos at heart (1-bit, tiny icons): written from L/1 modes.
_SAVE_MODES = {"XBM": "1", "MSP": "1"}
_SAVE_OPTIONS = {"ICNS": {"sizes": [(256, 256)]}, "ICO": {"sizes": [(256, 256)]}, "SGI": {}, "TGA": {}}


def test_every_raster_format_pillow_writes_is_scored_from_a_folder(tmp_path: Path, image_dir: Path,
                                                                   tiny_checkpoint: Path) -> None:
    from PIL import Image as PILImage

    from glia_edge.preprocess import IMAGE_SUFFIXES

    PILImage.init()
    source = PILImage.open(image_dir / GOOD).convert("RGB").resize((256, 256))
    written = []
    for suffix in IMAGE_SUFFIXES:
        fmt = PILImage.registered_extensions().get(suffix)
        if fmt is None or fmt not in PILImage.SAVE or fmt in ("PALM", "PDF"):
            continue  # Pillow reads but cannot write it (or this Pillow lacks the plugin)
        path = tmp_path / "all" / f"img_{suffix.lstrip('.')}{suffix}"
        path.parent.mkdir(exist_ok=True)
        try:
            source.convert(_SAVE_MODES.get(fmt, "RGB")).save(path, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # an encoder this Pillow build lacks
            continue
        written.append(path)
    frames = [source.rotate(a) for a in (0, 90, 180)]
    frames[0].save(tmp_path / "all" / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    written.append(tmp_path / "all" / "animated.gif")
    assert {".gif", ".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm", ".tga"} <= {p.suffix for p in written}
    result = score(tmp_path / "all", "-m", tiny_checkpoint, "-f", "json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, [r for r in doc["results"] if r["status"] != "ok"]
    assert sorted(r["path"] for r in doc["results"]) == sorted(map(str, written)) and doc["skipped"] == []
    frames[0].save(tmp_path / "first.png")
    first = json.loads(score(tmp_path / "first.png", "-m", tiny_checkpoint, "-f", "json").stdout)
    gif_alone = first["results"][0]["score"]
    by_name = {Path(r["path"]).name: r["score"] for r in doc["results"]}
    assert by_name["animated.gif"] == pytest.approx(gif_alone, abs=0.5)  # the first frame (GIF palette aside)


def test_image_suffixes_cover_what_pillow_decodes_itself() -> None:
    from PIL import Image as PILImage

    from glia_edge.preprocess import IMAGE_SUFFIXES

    PILImage.init()
    outside = {"EPS", "WMF", "MPEG", "BUFR", "GRIB", "HDF5", "IPTC"}  # outside programs, or identify only
    decoded = {ext for ext, fmt in PILImage.registered_extensions().items()
               if (fmt in PILImage.OPEN or fmt == "MPO") and fmt not in outside}
    assert decoded <= set(IMAGE_SUFFIXES), sorted(decoded - set(IMAGE_SUFFIXES))
    assert len(set(IMAGE_SUFFIXES)) == len(IMAGE_SUFFIXES) and all(s == s.lower() for s in IMAGE_SUFFIXES)


def test_glob_and_unmatched_glob(image_dir: Path, tiny_checkpoint: Path) -> None:
    result = score(image_dir / "chelsea_b*.jpg", "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert sorted(csv_rows(result.stdout)) == [f"chelsea_b{i}.jpg" for i in range(5)]
    pattern = image_dir / "nothing_*.jpg"
    result = score(image_dir / GOOD, pattern, image_dir / "chelsea_b0.jpg", "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Path(r["path"]).name for r in rows] == [GOOD, "nothing_*.jpg", "chelsea_b0.jpg"]  # input order
    assert rows[1]["error"] == "no file or folder matches this pattern"
    (line,) = error_lines(result.stderr)
    assert str(pattern) in line


def test_recursive_glob_through_a_link_back_up_scores_each_file_once(tmp_path: Path, image_dir: Path,
                                                                      tiny_checkpoint: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(image_dir / GOOD, tmp_path / "sub" / GOOD)
    (tmp_path / "sub" / "loop").symlink_to("..")  # a glob with ** follows it until paths get too long
    result = score(f"{tmp_path}/**/*.jpg", "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in csv.DictReader(io.StringIO(result.stdout))] == [str(tmp_path / "sub" / GOOD)]


def test_one_file_spelled_two_ways_is_scored_once(image_dir: Path, tiny_checkpoint: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(image_dir)
    result = score(f"./{GOOD}", GOOD, image_dir / GOOD, "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in csv.DictReader(io.StringIO(result.stdout))] == [f"./{GOOD}"]  # first spelling kept


def test_a_folder_that_cannot_be_read_is_an_error_row(tmp_path: Path, image_dir: Path, tiny_checkpoint: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    (tmp_path / "locked").mkdir()
    shutil.copy(image_dir / GOOD, tmp_path / GOOD)
    shutil.copy(image_dir / GOOD, tmp_path / "locked" / "b.jpg")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # root reads any folder: refuse like chmod 000 would
        if Path(os.fsdecode(path)).name == "locked":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = score(tmp_path, "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 1, result.output
    rows = csv_rows(result.stdout)
    assert rows[GOOD]["status"] == "ok"
    assert rows["locked"]["error"] == "cannot read folder (Permission denied)"
    (line,) = error_lines(result.stderr)
    assert str(tmp_path / "locked") in line


def test_an_output_that_cannot_be_written_fails_before_scoring(tmp_path: Path, inputs: Path,
                                                               tiny_checkpoint: Path) -> None:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("")
    for out, reason in [(tmp_path / "a_folder", "is a directory"), (tmp_path / "a_file" / "x.csv", "it is a file")]:
        result = score(inputs / GOOD, "-m", tiny_checkpoint, "-o", out)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result.stderr)
        assert str(out) in line and reason in line and "scored" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]


def test_csv_scores_match_the_python_api(image_dir: Path, tiny_checkpoint: Path) -> None:
    import glia_edge

    paths = sorted(image_dir.glob("rocket_*.jpg"))
    result = score(*paths, "-m", tiny_checkpoint, "--format", "csv", "--crops", "5", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "path,score,crops,status,error,model,runtime,precision"
    assert {(r["model"], r["runtime"], r["precision"]) for r in csv.DictReader(io.StringIO(result.stdout))} == {
        (tiny_checkpoint.name, "PyTorch", "fp32")}
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == [str(p) for p in paths] and {r["crops"] for r in rows} == {"5"}
    with glia_edge.load(tiny_checkpoint) as model:
        expected = model.predict(paths, crops=5)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, atol=2e-6)


def test_json_output_written_atomically(tmp_path: Path, inputs: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "res" / "scores.json"
    result = score(inputs / GOOD, inputs / "empty.jpg", "-m", tiny_checkpoint, "-o", out)
    assert result.exit_code == 1
    assert result.stdout == ""  # format from the suffix; results went to the file
    doc = json.loads(out.read_text())
    assert doc["preset"] == "glia_vit_tiny" and doc["score"]["name"] == "MOS" and doc["failed"] == 1
    by_name = {Path(r["path"]).name: r for r in doc["results"]}
    assert by_name[GOOD]["status"] == "ok" and isinstance(by_name[GOOD]["score"], float)
    assert by_name["empty.jpg"] == {"path": str(inputs / "empty.jpg"), "score": None, "crops": 0,
                                    "status": "error", "error": "empty file"}
    assert [p.name for p in out.parent.iterdir()] == ["scores.json"]  # no temp file left behind


def test_table_format(inputs: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = score(inputs / GOOD, inputs / "text.jpg", "-m", tiny_checkpoint, "-f", "table")
    assert result.exit_code == 1
    assert "score (MOS)" in result.stdout and GOOD in result.stdout and "not an image" in result.stdout
    assert f"scored by {tiny_checkpoint.name} on PyTorch, fp32" in result.stdout
    deep = tmp_path.joinpath("site-0042-north-gate", "2025-11-30", "cam03-entrance-ptz", "frames", "hour-14-" * 12)
    deep.mkdir(parents=True)
    for name in ("frame_0001.jpg", "frame_0002.jpg"):
        shutil.copy(inputs / GOOD, deep / name)
    table = score(deep, "-m", tiny_checkpoint, "-f", "table").stdout
    flat = "".join(line.strip(" │┃") for line in table.splitlines())  # long paths are folded, never cut
    assert "…" not in table and "frame_0001.jpg" in flat and "frame_0002.jpg" in flat


def test_usage_and_model_errors_exit_2(inputs: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = score(inputs / GOOD, "-m", tmp_path / "nope.onnx")
    assert result.exit_code == 2 and "artifact not found" in result.stderr
    result = score(inputs / GOOD, "-m", tiny_checkpoint, "--crops", "3")
    assert result.exit_code == 2
    result = score(inputs / GOOD, "-m", tiny_checkpoint, "--precision", "int8")
    assert result.exit_code == 2 and "precision" in result.stderr


def test_score_without_model_uses_the_packaged_default(inputs: Path) -> None:
    from glia_edge.weights import DEFAULT_MODEL

    result = score(inputs / GOOD, "-f", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["results"][0]["status"] == "ok" and doc["precision"] == "fp32"
    # openvino is installed here, so the first pick (OpenVINO running the FP32 ONNX, pinned to f32) runs
    assert Path(doc["model"]).name == f"{DEFAULT_MODEL}.fp32.onnx" and doc["runtime"] == "OpenVINO"
    assert doc["inference_precision"] == "f32" and "on OpenVINO, fp32" in result.stderr
    int8 = json.loads(score(inputs / GOOD, "-f", "json", "--precision", "int8").stdout)
    assert Path(int8["model"]).parent.name == f"{DEFAULT_MODEL}.int8.openvino"
    assert (int8["runtime"], int8["precision"]) == ("OpenVINO", "int8")
    assert abs(int8["results"][0]["score"] - doc["results"][0]["score"]) < 0.2 * (doc["score"]["max"] - doc["score"]["min"])
    result = score(inputs / GOOD, "--precision", "fp16")
    assert result.exit_code == 2 and "not packaged for fp16" in result.stderr
