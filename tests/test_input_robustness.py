"""Hostile and odd inputs: each is one error naming the input and the reason, on one line, and a
batch goes on with the rest (paths the OS refuses, decoders that raise anything, inputs that are
not collections, names holding control characters, signals during ``score``)."""
from __future__ import annotations

import csv
import io
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile, features
from typer.testing import CliRunner

from glia_edge.cli import app
from glia_edge.errors import ImageLoadError
from glia_edge.meta import ArtifactMeta, ScoreSpec
from glia_edge.preprocess import PreprocessConfig, expand_local, preprocess, scan_folder
from glia_edge.runtimes.base import Backend

SMALL = PreprocessConfig(short_side=32, crop_size=16)
LONG_NAME = "x" * 300 + ".png"  # over NAME_MAX (255): the OS says "File name too long"


class MeanBackend(Backend):
    """A complete backend whose model is the mean pixel of each crop (no runtime needed)."""

    format = "test"

    def __init__(self) -> None:
        meta = ArtifactMeta(preset="mean", model_config={}, preprocess=SMALL.to_dict(), score=asdict(ScoreSpec()))
        super().__init__("mean", meta)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=(1, 2, 3))


def _png(path: Path, size: tuple[int, int] = (40, 36)) -> Path:
    Image.new("RGB", size, (120, 50, 90)).save(path)
    return path


def _refuse_stat_under(monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    """os.stat of anything inside ``folder`` fails as in a folder without search permission (root
    could reach it, so the refusal is simulated; Path.exists/is_file call os.stat too)."""
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if f"{os.sep}{folder}{os.sep}" in os.fsdecode(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)


def score_cli(*args: object) -> Any:
    return CliRunner().invoke(app, ["score", *map(str, args)])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- 1: paths the OS refuses to look at ------------------------------------------------------------
@pytest.mark.parametrize("how", ["permission", "name too long"])
def test_a_path_the_os_refuses_is_one_error_and_the_batch_goes_on(tmp_path: Path, how: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    good = str(_png(tmp_path / "good.png"))
    if how == "permission":
        (tmp_path / "locked").mkdir()
        bad, reason = str(_png(tmp_path / "locked" / "b.png")), "cannot access (Permission denied)"
        _refuse_stat_under(monkeypatch, "locked")
    else:
        bad, reason = str(tmp_path / LONG_NAME), "cannot access (File name too long)"
    backend = MeanBackend()
    for workers in (0, 2):
        results = list(backend.iter_scores([good, bad, good], decode_workers=workers))
        assert [(r.source, r.error) for r in results] == [(good, None), (bad, reason), (good, None)]
    scores = backend.score_paths([good, bad, good])
    assert np.isfinite(scores[[0, 2]]).all() and np.isnan(scores[1])
    with pytest.raises(ImageLoadError, match=r"cannot access \(") as info:
        backend.predict(bad)
    assert str(info.value) == f"{bad}: {reason}"
    assert expand_local(bad) == ([bad], [])  # kept, so reading it says why


def test_a_folder_scan_records_an_entry_it_cannot_reach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    good = _png(tmp_path / "a.png")
    bad = _png(tmp_path / "locked" / "b.png")
    (tmp_path / "locked" / "notes.txt").write_text("not an image")
    _refuse_stat_under(monkeypatch, "locked")
    images, others, unreadable = scan_folder(tmp_path)
    assert images == [good] and others == []  # notes.txt: not reachable, and skipped for its suffix anyway
    assert unreadable == [(str(bad), "cannot access (Permission denied)")]


def test_score_reports_paths_the_os_refuses_and_scores_the_rest(tmp_path: Path, tiny_checkpoint: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    good = _png(tmp_path / "good.png", (300, 260))
    locked = _png(tmp_path / "locked" / "b.png")
    too_long = tmp_path / LONG_NAME
    _refuse_stat_under(monkeypatch, "locked")
    result = score_cli(good, locked, too_long, "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 1, result.output
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows[str(good)]["status"] == "ok"
    assert rows[str(locked)]["error"] == "cannot access (Permission denied)"
    assert rows[str(too_long)]["error"] == "cannot access (File name too long)"
    assert sorted(error_lines(result.stderr)) == sorted(f"error: {p}: {rows[str(p)]['error']}"
                                                        for p in (locked, too_long))
    assert "Traceback" not in result.output


def test_misleading_reasons_are_named_right(tmp_path: Path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    for source, reason in [(loop, "symbolic link loop"), ("", "empty path"),
                           (tmp_path / "missing.png", "file not found")]:
        with pytest.raises(ImageLoadError) as info:
            preprocess(source, SMALL)
        assert info.value.reason == reason
    assert expand_local("") == ([""], [])  # "" is not the current folder


# -- 2: whatever a decoder raises is one bad input ------------------------------------------------
def _corrupt_avif() -> bytes:
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 200)).save(buf, "AVIF")
    data = bytearray(buf.getvalue())
    data[96:112] = b"\xff" * 16  # Pillow's AVIF plugin raises RuntimeError inside Image.open
    return bytes(data)


def test_a_corrupt_avif_is_one_error_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avif"
    bad.write_bytes(_corrupt_avif())
    good = str(_png(tmp_path / "good.png"))
    results = list(MeanBackend().iter_scores([good, str(bad), good]))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.startswith("corrupt image (RuntimeError: ")  # type: ignore[union-attr]


@pytest.mark.parametrize("lazy", [False, True])
def test_any_decoder_exception_is_an_image_load_error_but_memory_error_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool) -> None:
    path = _png(tmp_path / "a.png")

    def source() -> Any:
        return Image.open(path) if lazy else path

    def explode(self: Image.Image) -> None:
        raise RuntimeError("Failed to decode image: decoder exploded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    with pytest.raises(ImageLoadError, match=r"corrupt image \(RuntimeError: Failed to decode image"):
        preprocess(source(), SMALL)

    def out_of_memory(self: Image.Image) -> None:
        raise MemoryError()

    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    with pytest.raises(MemoryError):
        preprocess(source(), SMALL)


def test_a_corrupt_avif_frame_does_not_stop_the_monitor() -> None:
    from _stream_fixtures import SharpnessBackend, frames

    from glia_edge.stream.monitor import QualityMonitor

    good = frames(1, 0, 0, size=(64, 48))[0]
    monitor = QualityMonitor(SharpnessBackend(), block=True)
    results = list(monitor.run([good, _corrupt_avif(), good]))
    assert [r.error is None for r in results] == [True, False, True]
    assert "corrupt image" in (results[1].error or "") and monitor.stats.scored == 2


# -- 4: a lazily opened JPEG scores as its path --------------------------------------------------
def test_a_lazily_opened_jpeg_scores_as_its_path(tmp_path: Path, image_dir: Path, tiny_checkpoint: Path) -> None:
    import glia_edge

    path = tmp_path / "large.jpg"  # short side >= 2 x the model's 256: decoded at 1/2 scale from a path
    Image.open(image_dir / "astronaut_b0.jpg").resize((900, 600), Image.Resampling.BICUBIC).save(path, quality=92)
    with glia_edge.load(tiny_checkpoint) as model:
        by_path = model.predict(path)[0]
        assert abs(model.predict(path.read_bytes())[0] - by_path) < 1e-6
        assert abs(model.predict(Image.open(path))[0] - by_path) < 1e-4
        assert abs(model.predict(Image.open(path), crops=5)[0] - model.predict(path, crops=5)[0]) < 1e-4


# -- 7: inputs that are not collections of images ------------------------------------------------
def test_file_objects_and_memoryviews_are_one_image(tmp_path: Path) -> None:
    data = _png(tmp_path / "a.png").read_bytes()
    backend = MeanBackend()
    want = backend.predict(data)
    assert backend.predict(io.BytesIO(data)).tolist() == want.tolist()
    assert backend.predict(memoryview(data)).tolist() == want.tolist()
    with open(tmp_path / "a.png", "rb") as fh:
        assert backend.predict(fh).tolist() == want.tolist()
    with open(tmp_path / "a.png", encoding="latin-1") as text, pytest.raises(ImageLoadError, match="binary mode"):
        backend.predict(text)


def test_a_flat_pixel_buffer_is_one_image_with_its_shape_error() -> None:
    backend = MeanBackend()
    with pytest.raises(ImageLoadError, match=r"expected an HxW, HxWx3 or HxWx4 array, got shape \(720000,\)"):
        backend.predict(np.zeros(720_000, np.uint8))
    with pytest.raises(TypeError, match="got one image"):
        list(backend.iter_scores(np.zeros(720_000, np.uint8)))


def test_a_dict_is_refused_naming_its_type(tmp_path: Path) -> None:
    path = str(_png(tmp_path / "a.png"))
    backend = MeanBackend()
    for call in (backend.predict, backend.score_paths, lambda x: list(backend.iter_scores(x))):
        with pytest.raises(TypeError, match=r"mapping \(dict\)"):
            call({path: 1})
    assert len(backend.predict(np.array([path, path]))) == 2  # a 1-D array of paths is still a collection


# -- 8: a name with control characters cannot forge a second line --------------------------------
def test_a_file_name_with_a_newline_gives_one_error_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    evil = tmp_path / "evil\nerror: fake.jpg"
    evil.write_bytes(b"")
    good = _png(tmp_path / "good.png", (300, 260))
    result = score_cli(good, evil, "-m", tiny_checkpoint, "-f", "csv")
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [f"error: {tmp_path}/evil\\nerror: fake.jpg: empty file"]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[1]["path"] == str(evil)  # the output keeps the real name
    with pytest.raises(ImageLoadError) as info:
        MeanBackend().predict(str(evil))
    assert "\n" not in str(info.value)


# -- 9: small leaks and noise --------------------------------------------------------------------
def test_premultiplied_la_converts() -> None:
    img = Image.new("LA", (40, 36), (100, 255)).convert("La")
    assert preprocess(img, SMALL).shape == (1, 3, 16, 16)


def test_an_animated_gif_leaves_no_file_open(tmp_path: Path) -> None:
    import gc
    import warnings

    frames = [Image.new("RGB", (40, 36), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preprocess(tmp_path / "a.gif", SMALL)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_pillow_bomb_warning_is_not_repeated_below_our_limit(tmp_path: Path) -> None:
    import struct
    import warnings
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 9500  # 90.25 MP: over Pillow's warning threshold (89.5 MP), under the 100 MP limit
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError, match="big.png"):
            preprocess(path, SMALL)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# -- 10: signals during score --------------------------------------------------------------------
@pytest.mark.parametrize("how,code", [("interrupted", 130), ("terminated", 143)])
def test_score_interrupted_says_so_in_one_line_and_writes_nothing(tmp_path: Path, tiny_checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  how: str, code: int) -> None:
    from glia_edge.cli import score_cmd

    def stop(*args: object) -> None:
        if how == "interrupted":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread before then

    def no_handler(signum: int, frame: object) -> None:  # SIGTERM without score's handler must not kill pytest
        raise RuntimeError("SIGTERM was not handled by score")

    monkeypatch.setattr(score_cmd, "_run", stop)
    previous = signal.signal(signal.SIGTERM, no_handler)
    try:
        out = tmp_path / "scores.csv"
        result = score_cli(_png(tmp_path / "a.png"), "-m", tiny_checkpoint, "-o", out)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == code, result.output
    assert result.stderr.strip().splitlines()[-1] == f"{how}: no results were written ({out} is unchanged)"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_score_output_dash_is_stdout(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = score_cli(_png(tmp_path / "a.png", (300, 260)), "-m", tiny_checkpoint, "-f", "csv", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("path,score,") and not (Path.cwd() / "-").exists()
