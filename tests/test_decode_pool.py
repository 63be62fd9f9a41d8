"""Decoding on worker threads: input order, error reporting and bounded memory, as the serial path."""
from __future__ import annotations

import threading
import time
import tracemalloc
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from glia_edge.errors import ImageLoadError
from glia_edge.meta import ArtifactMeta, ScoreSpec
from glia_edge.preprocess import PreprocessConfig
from glia_edge.runtimes.base import Backend
from glia_edge.runtimes.decode_pool import decode_ahead, resolve_workers

SMALL = PreprocessConfig(short_side=32, crop_size=16)


class MeanBackend(Backend):
    """A complete backend whose model is the mean pixel of each crop (no runtime needed)."""

    format = "test"

    def __init__(self, path: Path, *, batch_size: int = 8) -> None:
        meta = ArtifactMeta(preset="mean", model_config={}, preprocess=SMALL.to_dict(), score=asdict(ScoreSpec()))
        super().__init__(path, meta, batch_size=batch_size)
        self.infer_threads: set[str] = set()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.infer_threads.add(threading.current_thread().name)
        return batch.mean(axis=(1, 2, 3))


def _write_inputs(folder: Path, count: int) -> list[str]:
    """``count`` small PNGs of distinct brightness, with unusable inputs among them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        if i % 7 == 3:
            path.write_text("not an image")
        elif i % 11 == 5:
            path = folder / f"{i:05d}-missing.png"
        else:
            Image.new("RGB", (40 + i % 5, 36), (i % 256, 50, 90)).save(path)
        paths.append(str(path))
    return paths


def _outcomes(backend: Backend, paths: list[str], workers: int) -> list[tuple[str, float | None, str | None]]:
    return [(r.source, r.score, r.error) for r in backend.iter_scores(paths, decode_workers=workers)]


@pytest.mark.parametrize("batch_size", [1, 8])
def test_pool_keeps_order_scores_and_errors_of_the_serial_path(tmp_path: Path, batch_size: int) -> None:
    paths = _write_inputs(tmp_path, 60)
    backend = MeanBackend(tmp_path / "m", batch_size=batch_size)
    serial = _outcomes(backend, paths, 0)
    assert [s for s, _, _ in serial] == paths
    assert {e for _, _, e in serial if e} == {"not an image (format not recognised)", "file not found"}
    for workers in (1, 3):
        assert _outcomes(backend, paths, workers) == serial
    assert backend.infer_threads == {threading.current_thread().name}  # inference stays on the caller


def test_slow_and_fast_decodes_come_back_in_input_order() -> None:
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.01, 40)

    def decode(i: int) -> np.ndarray:
        time.sleep(delays[i])
        if i % 9 == 4:
            raise ImageLoadError(i, "bad on purpose")
        return np.full((1, 1), i)

    out = list(decode_ahead(range(40), decode, workers=4, ahead=8))  # type: ignore[arg-type]
    assert [d.source for d in out] == [f"[{i}] <int>" for i in range(40)]  # in-memory inputs carry their position
    assert [None if d.crops is None else int(d.crops[0, 0]) for d in out] == [
        None if i % 9 == 4 else i for i in range(40)]
    assert [d.error for d in out if d.error] == ["bad on purpose"] * len(range(4, 40, 9))


def test_other_exceptions_reach_the_consumer_in_order() -> None:
    def decode(i: int) -> np.ndarray:
        if i == 5:
            raise RuntimeError("decoder bug")
        return np.zeros(1)

    got = []
    with pytest.raises(RuntimeError, match="decoder bug"):
        for item in decode_ahead(range(20), decode, workers=2, ahead=4):  # type: ignore[arg-type]
            got.append(item)
    assert len(got) == 5


def test_negative_workers_are_refused() -> None:
    with pytest.raises(ValueError, match="decode_workers"):
        resolve_workers(-1)
    assert resolve_workers(0) == 0 and resolve_workers(None) >= 1


def test_memory_stays_bounded_over_10000_small_files(tmp_path: Path) -> None:
    """10,000 files through the pool: the source is read at most a few batches ahead of the
    results, and peak traced memory stays far below what holding every decoded image would take."""
    folder = tmp_path / "many"
    folder.mkdir()
    Image.new("RGB", (40, 36), (10, 200, 30)).save(folder / "proto.png")
    data = (folder / "proto.png").read_bytes()
    paths = []
    for i in range(10_000):
        path = folder / f"{i:05d}.png"
        path.write_bytes(data)
        paths.append(str(path))
    backend = MeanBackend(tmp_path / "m", batch_size=8)
    read = 0
    lead = 0

    def source() -> Iterator[str]:
        nonlocal read
        for path in paths:
            read += 1
            yield path

    per_image = SMALL.crop_size ** 2 * 3 * 4
    tracemalloc.start()
    done = 0
    for result in backend.iter_scores(source(), decode_workers=2):
        assert result.ok
        done += 1
        lead = max(lead, read - done)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert done == 10_000
    ahead = max(2 * 2, 2 * backend.batch_size)
    assert lead <= ahead + backend.batch_size, lead
    assert peak < 200 * per_image * 4 + 8 * 2**20, peak  # unbounded would hold 10,000 images


def test_score_cli_decode_workers_switch_gives_the_same_results(tiny_checkpoint: Path, image_dir: Path,
                                                                 tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from glia_edge.cli import app

    (tmp_path / "bad.jpg").write_text("not an image")
    docs = []
    for workers in ("0", "3"):
        result = CliRunner().invoke(app, ["score", str(image_dir), str(tmp_path / "bad.jpg"), "--model",
                                          str(tiny_checkpoint), "--format", "json", "--decode-workers", workers])
        assert result.exit_code == 1, result.output  # the bad file is reported, the rest scored
        docs.append(json.loads(result.stdout[result.stdout.index("{"):]))
    assert docs[0]["results"] == docs[1]["results"] and docs[0]["failed"] == 1


def test_a_failing_input_iterable_lets_the_images_before_it_out_first() -> None:
    def frames() -> Iterator[int]:
        yield from range(6)
        raise RuntimeError("camera died")

    for workers in (0, 3):
        got = []
        with pytest.raises(RuntimeError, match="camera died"):
            for item in decode_ahead(frames(), lambda i: np.full((1, 1), i), workers=workers, ahead=4):
                got.append(int(item.crops[0, 0]))
        assert got == list(range(6)), workers  # before: with workers, the decoded frames were lost
